#!/usr/bin/env bash
# Weights in and out (docs/weights.md): pipert --init and --export.
#   - a run's --export holds the bytes of its checkpoint's weights, a tied
#     linear's weight also under its own name, metadata {"format": "pt"};
#   - --init FILE then --steps 0 --save starts from exactly those bytes on
#     1 and 4 stages; from a folder of shards; with --init-rename;
#   - --resume DIR --steps <its step> --export writes the same file again;
#   - a run started with --init exports after its steps; replicas and
#     virtual stages (interleaved out, zb-v in) change nothing;
#   - refusals: a tensor missing, of another shape, of a dtype not read, one
#     the model lacks (and --init-extra ignore), a tied weight that differs
#     from its owner, a name twice in a folder, no such path, --init with
#     --resume, bad option values: one message, exit 1, no MPI_Abort.
#   test_weights.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-weights "$@"
ST="python3 $SRC/tests/e2e/st_tool.py"
M="$SRC/tests/e2e/tied_mlp.pipe"
for s in 1 2 4; do "$PIPEC" "$M" -D stages=$s -o "$TMP/s$s.bin" || exit 2; done

: >"$TMP/out"
"${MPI[@]}" 2 "$PIPERT" "$TMP/s2.bin" --steps 5 --save "$TMP/a" --export "$TMP/w.safetensors" >>"$TMP/out" 2>&1
if grep -q "exported 10 tensors to $TMP/w.safetensors" "$TMP/out"; then
    ok "--export after 5 steps on 2 stages: 10 tensors (9 parameters, the tied weight twice)"
else
    not_ok "--export after 5 steps on 2 stages"
fi
$ST digest "$TMP/w.safetensors" >"$TMP/dw"
$ST digest "$TMP/a" >"$TMP/da"
grep -v '^layers\.7\.weight ' "$TMP/dw" >"$TMP/dw9"
w7=$(grep '^layers\.7\.weight ' "$TMP/dw" | cut -d' ' -f2-)
w3=$(grep '^layers\.0\.weight ' "$TMP/dw" | cut -d' ' -f2-)
if cmp -s "$TMP/dw9" "$TMP/da" && [ -n "$w7" ] && [ "$w7" = "$w3" ] \
    && [ "$($ST meta "$TMP/w.safetensors")" = '{"format": "pt"}' ]; then
    ok "the export holds the checkpoint's bytes, layers.7.weight = layers.0.weight (its owner), metadata format pt"
else
    not_ok "the export holds the checkpoint's bytes" "$(diff "$TMP/dw9" "$TMP/da" | head -4; $ST meta "$TMP/w.safetensors")"
fi

# the round trip, any stage count
for s in 1 4; do
    "${MPI[@]}" $s "$PIPERT" "$TMP/s$s.bin" --init "$TMP/w.safetensors" --steps 0 --save "$TMP/i$s" >"$TMP/out" 2>&1
    $ST digest "$TMP/i$s" >"$TMP/di$s" 2>>"$TMP/out"
    if grep -q "initialised 9 tensors from $TMP/w.safetensors (1 file); optimizer state starts fresh" "$TMP/out" \
        && cmp -s "$TMP/di$s" "$TMP/da"; then
        ok "--init on $s stage(s), --steps 0 --save: bitwise the exported weights"
    else
        not_ok "--init on $s stage(s), --steps 0 --save: bitwise the exported weights"
    fi
done

# a folder of shards, and another naming
mkdir -p "$TMP/shards"
python3 - "$TMP/w.safetensors" "$TMP/shards" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
head = json.loads(data[8:8 + n]); body = data[8 + n:]
head.pop("__metadata__")
names = sorted(head)
for k, part in enumerate((names[:5], names[5:])):
    h, off, blobs = {}, 0, []
    for name in part:
        a, b = head[name]["data_offsets"]
        h[name] = dict(head[name], data_offsets=[off, off + b - a]); off += b - a; blobs.append(body[a:b])
    t = json.dumps(h).encode(); t += b" " * (-len(t) % 8)
    open("%s/model-%05d-of-00002.safetensors" % (sys.argv[2], k + 1), "wb").write(struct.pack("<Q", len(t)) + t + b"".join(blobs))
PY
"${MPI[@]}" 2 "$PIPERT" "$TMP/s2.bin" --init "$TMP/shards" --steps 0 --save "$TMP/f" >"$TMP/out" 2>&1
$ST digest "$TMP/f" >"$TMP/df" 2>>"$TMP/out"
if grep -q "initialised 9 tensors from $TMP/shards (2 files)" "$TMP/out" && cmp -s "$TMP/df" "$TMP/da"; then
    ok "--init FOLDER: two shards give the same weights"
else
    not_ok "--init FOLDER: two shards"
fi
$ST rename "$TMP/w.safetensors" "$TMP/hf.safetensors" "layers.=model.layers."
"${MPI[@]}" 2 "$PIPERT" "$TMP/s2.bin" --init "$TMP/hf.safetensors" --init-rename model.layers.=layers. --steps 0 \
    --save "$TMP/r" >"$TMP/out" 2>&1
$ST digest "$TMP/r" >"$TMP/dr" 2>>"$TMP/out"
if cmp -s "$TMP/dr" "$TMP/da"; then
    ok "--init-rename model.layers.=layers.: the same weights from another naming"
else
    not_ok "--init-rename model.layers.=layers."
fi

# from a checkpoint without training: the same file again
"${MPI[@]}" 2 "$PIPERT" "$TMP/s2.bin" --resume "$TMP/a" --steps 5 --export "$TMP/w2.safetensors" >"$TMP/out" 2>&1
if cmp -s "$TMP/w.safetensors" "$TMP/w2.safetensors" && grep -q "trained 0 steps" "$TMP/out"; then
    ok "--resume DIR --steps 5 --export: byte for byte the file the run exported"
else
    not_ok "--resume DIR --steps 5 --export"
fi
# a run started with --init: trains, then exports
"${MPI[@]}" 4 "$PIPERT" "$TMP/s4.bin" --init "$TMP/w.safetensors" --steps 3 --export "$TMP/w3.safetensors" \
    --save "$TMP/b" >"$TMP/out" 2>&1
$ST digest "$TMP/w3.safetensors" | grep -v '^layers\.7\.weight ' >"$TMP/d3"
$ST digest "$TMP/b" >"$TMP/db"
if cmp -s "$TMP/d3" "$TMP/db" && ! cmp -s "$TMP/d3" "$TMP/da" && grep -q "step 3/3" "$TMP/out"; then
    ok "--init then 3 steps on 4 stages, --export: the trained weights"
else
    not_ok "--init then 3 steps on 4 stages, --export"
fi

# replicas and virtual stages: 2 stages x 2 replicas, interleaved (2 chunks a
# stage) out, zb-v (a V) in
"$PIPEC" "$M" -D stages=2 -D "schedule=interleaved(chunks = 2)" -o "$TMP/il.bin" || exit 2
"$PIPEC" "$M" -D stages=2 -D schedule=zb-v -o "$TMP/v.bin" || exit 2
"${MPI[@]}" 4 "$PIPERT" "$TMP/s2.bin" --steps 3 --export "$TMP/wr.safetensors" --save "$TMP/cr" >"$TMP/out" 2>&1
$ST digest "$TMP/wr.safetensors" | grep -v '^layers\.7\.weight ' >"$TMP/dwr"
$ST digest "$TMP/cr" >"$TMP/dcr"
"${MPI[@]}" 2 "$PIPERT" "$TMP/il.bin" --steps 3 --export "$TMP/wi.safetensors" --save "$TMP/ci" >>"$TMP/out" 2>&1
$ST digest "$TMP/wi.safetensors" | grep -v '^layers\.7\.weight ' >"$TMP/dwi"
$ST digest "$TMP/ci" >"$TMP/dci"
"${MPI[@]}" 2 "$PIPERT" "$TMP/v.bin" --init "$TMP/wi.safetensors" --steps 0 --save "$TMP/cv" >>"$TMP/out" 2>&1
$ST digest "$TMP/cv" >"$TMP/dcv"
if [ -s "$TMP/dwr" ] && cmp -s "$TMP/dwr" "$TMP/dcr" && [ -s "$TMP/dwi" ] && cmp -s "$TMP/dwi" "$TMP/dci" \
    && cmp -s "$TMP/dcv" "$TMP/dci"; then
    ok "2 stages x 2 replicas and interleaved (2 chunks) export their checkpoints' bytes; zb-v starts from the latter"
else
    not_ok "replicas, interleaved and zb-v"
fi

# ---- refusals ----
refuse() { # NAME REGEX RANKS ARGS...
    local name=$1 re=$2 np=$3
    shift 3
    "${MPI[@]}" "$np" "$PIPERT" "$@" >"$TMP/out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -Eq -- "$re" "$TMP/out" && [ "$(grep -c '^pipert:' "$TMP/out")" = 1 ] \
        && ! grep -q "MPI_ABORT\|step 1/" "$TMP/out"; then
        ok "refused: $name"
    else
        not_ok "refused: $name (exit $rc, want 1, one line /$re/)" "$(head -n 4 "$TMP/out")"
    fi
}
W="$TMP/w.safetensors"
$ST drop "$W" "$TMP/x.safetensors" layers.2.bias
refuse "a tensor missing" "^pipert: --init $TMP/x.safetensors: no tensor layers.2.bias \[32\], which this model needs \(the file names tensors such as 'layers.0.weight'; --init-rename FROM=TO rewrites a prefix\)$" \
    2 "$TMP/s2.bin" --init "$TMP/x.safetensors"
sed 's/linear(32)/linear(24)/' "$M" >"$TMP/wide.pipe"
"$PIPEC" "$TMP/wide.pipe" -D stages=2 -o "$TMP/wide.bin" || exit 2
refuse "a tensor of another shape" "^pipert: --init $W: tensor layers.2.weight is \[32, 16\] in $W; this model's is \[24, 16\]$" \
    2 "$TMP/wide.bin" --init "$W"
$ST add "$W" "$TMP/x.safetensors" head.extra
refuse "a tensor the model lacks" "^pipert: --init $TMP/x.safetensors: tensor head.extra in $TMP/x.safetensors is not one of this model's \(--init-extra ignore skips such tensors\)$" \
    2 "$TMP/s2.bin" --init "$TMP/x.safetensors"
"${MPI[@]}" 2 "$PIPERT" "$TMP/s2.bin" --init "$TMP/x.safetensors" --init-extra ignore --steps 0 --save "$TMP/e" >"$TMP/out" 2>&1
$ST digest "$TMP/e" >"$TMP/de" 2>>"$TMP/out"
if cmp -s "$TMP/de" "$TMP/da"; then ok "--init-extra ignore skips the extra tensor"; else not_ok "--init-extra ignore"; fi
$ST dtype "$W" "$TMP/x.safetensors" layers.9.bias F64
refuse "a dtype not read (F64)" "^pipert: --init $TMP/x.safetensors: tensor layers.9.bias is F64 in $TMP/x.safetensors: --init reads F32, and F16 and BF16 converted exactly to float32$" \
    2 "$TMP/s2.bin" --init "$TMP/x.safetensors"
$ST dtype "$W" "$TMP/x.safetensors" layers.7.weight BF16
refuse "a tied weight that differs from its owner" "^pipert: --init $TMP/x.safetensors: tensor layers.7.weight differs from layers.0.weight, whose weight this model's layer 7 shares \(tie = ...\)$" \
    2 "$TMP/s2.bin" --init "$TMP/x.safetensors"
cp "$TMP/shards/model-00001-of-00002.safetensors" "$TMP/shards/model-00003-of-00002.safetensors"
refuse "a tensor in two files of a folder" "^pipert: --init $TMP/shards: tensor layers.0.bias comes twice: from 'layers.0.bias' in $TMP/shards/model-00001-of-00002.safetensors and from 'layers.0.bias' in $TMP/shards/model-00003-of-00002.safetensors$" \
    2 "$TMP/s2.bin" --init "$TMP/shards"
refuse "no such file" "^pipert: $TMP/none.safetensors: No such file or directory$" 2 "$TMP/s2.bin" --init "$TMP/none.safetensors"
mkdir -p "$TMP/empty"
refuse "a folder without safetensors" "^pipert: $TMP/empty: a folder without a .safetensors file$" 2 "$TMP/s2.bin" --init "$TMP/empty"
printf 'not safetensors' >"$TMP/x.safetensors"
refuse "not a safetensors file" "^pipert: $TMP/x.safetensors: header length [0-9]+ is over 100 MB" 2 "$TMP/s2.bin" --init "$TMP/x.safetensors"
# the command line is read before MPI starts, by every rank alike: one rank here
refuse "--init with --resume" "^pipert: --init and --resume exclude each other" 1 "$TMP/s2.bin" --init "$W" --resume "$TMP/a"
refuse "--init-rename without =" "^pipert: --init-rename: 'model.layers.' is not FROM=TO" 1 "$TMP/s2.bin" --init "$W" --init-rename model.layers.
refuse "--init-extra maybe" "^pipert: --init-extra: 'maybe' is not refuse or ignore$" 1 "$TMP/s2.bin" --init "$W" --init-extra maybe
refuse "--init-rename without --init" "^pipert: --init-rename needs --init PATH$" 1 "$TMP/s2.bin" --init-rename a=b
refuse "--export into a missing folder" "^pipert: --export $TMP/no/w.safetensors: cannot write: No such file or directory$" \
    2 "$TMP/s2.bin" --export "$TMP/no/w.safetensors"

# residual blocks: layers.i.body.j / shortcut.j out of a zb-h1 run on 2
# stages and into 3 stages and 1, bit for bit (23 parameters and the 3
# buffers of the batchnorm2d in layer 3's shortcut)
R="$SRC/tests/e2e/residual_cnn.pipe"
"$PIPEC" "$R" -D stages=2 -D schedule=zb-h1 -o "$TMP/r2.bin" && "$PIPEC" "$R" -D stages=3 -o "$TMP/r3.bin" &&
    "$PIPEC" "$R" -o "$TMP/r1.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/r2.bin" --steps 3 --save "$TMP/ra" --export "$TMP/r.safetensors" >"$TMP/out" 2>&1
$ST digest "$TMP/r.safetensors" >"$TMP/drw"
$ST digest "$TMP/ra" >"$TMP/dra"
if grep -q "exported 26 tensors to $TMP/r.safetensors" "$TMP/out" && cmp -s "$TMP/drw" "$TMP/dra" &&
    grep -q '^layers\.3\.shortcut\.0\.weight F32 6x4x1x1 ' "$TMP/drw" && grep -q '^layers\.1\.body\.3\.weight F32 4x4x3x3 ' "$TMP/drw" &&
    grep -q '^layers\.3\.shortcut\.1\.running_var F32 6 ' "$TMP/drw" &&
    grep -q '^layers\.3\.shortcut\.1\.num_batches_tracked I64  ' "$TMP/drw"; then
    ok "residual blocks: --export holds the checkpoint's bytes under layers.i.body.j / shortcut.j"
else
    not_ok "residual blocks: --export holds the checkpoint's bytes under layers.i.body.j / shortcut.j" "$(tail -3 "$TMP/out")"
fi
for s in 3 1; do
    "${MPI[@]}" $s "$PIPERT" "$TMP/r$s.bin" --init "$TMP/r.safetensors" --steps 0 --save "$TMP/ri$s" >"$TMP/out" 2>&1
    $ST digest "$TMP/ri$s" >"$TMP/dri$s" 2>>"$TMP/out"
    if grep -q "initialised 26 tensors from $TMP/r.safetensors (1 file)" "$TMP/out" && cmp -s "$TMP/dri$s" "$TMP/dra"; then
        ok "residual blocks: --init on $s stage(s), --steps 0 --save: bitwise the exported weights"
    else
        not_ok "residual blocks: --init on $s stage(s), --steps 0 --save: bitwise the exported weights" "$(tail -3 "$TMP/out")"
    fi
done
e2e_end
