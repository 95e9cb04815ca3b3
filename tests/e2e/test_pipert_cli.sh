#!/usr/bin/env bash
# pipert as a user runs it: start-up checks end in one clear message and a
# non-zero exit, in bounded time, never a hang.
#   test_pipert_cli.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-cli "$@"
mpi_timeout 60
# exactly NAME TEXT: the last run exited 1 and printed TEXT, one line, nothing else
exactly() {
    if [ "$rc" -eq 1 ] && [ "$(cat "$TMP/out")" = "$2" ]; then
        ok "$1"
    else
        not_ok "$1 (exit $rc, want 1 and only: $2)" "$(head -n 5 "$TMP/out")"
    fi
}
# a start-up refusal every rank knows: one "pipert: " line, exit 1 through
# MPI_Finalize (mpirun's own note on the non-zero exit may follow), no
# MPI_Abort banner, no C source path ("[rank N] file.c:123:")
collective() { # NAME REGEX
    if grep -q 'MPI_ABORT\|\.c:[0-9]' "$TMP/out" || [ "$(grep -c '^pipert: ' "$TMP/out")" != 1 ] \
        || grep -q '^step ' "$TMP/out"; then
        rc=99 # an abort, a source path, more or less than one message, or a step trained
    fi
    check_rc "$1" 1 "$2"
}
"$PIPEC" "$SRC/examples/mlp.pipe" -o "$TMP/mlp.bin" || exit 2
"$PIPEC" "$SRC/examples/mlp.pipe" -D stages=1 -o "$TMP/mlp1.bin" || exit 2
"$PIPEC" "$SRC/examples/mlp.pipe" -D data_parallel=2 -o "$TMP/dp2.bin" || exit 2

"$PIPERT" --help >"$TMP/out" 2>&1; rc=$?
check_rc "--help" 0 'mpirun -np N pipert PLAN.bin'
# every option, under headings in this order: plan, training, data, logging,
# checkpoints, tracing, device, other
order=$(grep -Eo '^(  PLAN\.bin|[a-z][^:]*:$|  --[a-z-]+)' "$TMP/out" | sed 's/ (.*//; s/ /_/g' | tr '\n' ' ')
want="__PLAN.bin training __--steps __--seed data: __--data __--eval-data logging_and_metrics: __--log-every \
__--progress __--metrics __--tensorboard checkpoints: __--save __--save-every __--resume weights_in_and_out: __--init \
__--init-rename __--init-extra __--export tracing_and_hangs: __--trace __--profile __--watchdog \
device: __--device other: __--verbose __--help __--version "
[ "$order" = "$want" ] && rc=0 || rc=1
check_rc "--help lists every option, grouped and in order" 0 'usage:'
[ "$rc" -ne 0 ] && echo "#   got:  $order" && echo "#   want: $want"
# the top comment of pipert.c lists the same options
missing=""
for o in $(grep -Eo '^  --[a-z-]+' "$TMP/out"); do
    sed -n '1,/\*\//p' "$SRC/runtime/pipert.c" | grep -q -- "$o" || missing="$missing $o"
done
[ -z "$missing" ] && rc=0 || rc=1
check_rc "pipert.c's top comment names every option of --help${missing:+ (missing:$missing)}" 0 'usage:'
"$PIPERT" --version >"$TMP/out" 2>&1; rc=$?
check_rc "--version" 0 '^pipert [0-9]'

# the command line: one line for every mistake, exit 1, before MPI starts
"$PIPERT" --frobnicate "$TMP/mlp.bin" >"$TMP/out" 2>&1; rc=$?
exactly "an unknown option" "pipert: unknown option '--frobnicate' (pipert --help lists them)"
"$PIPERT" "$TMP/mlp.bin" --steps >"$TMP/out" 2>&1; rc=$?
exactly "a missing value" "pipert: --steps needs a value"
"$PIPERT" "$TMP/mlp.bin" --save --steps 5 >"$TMP/out" 2>&1; rc=$?
exactly "an option where a value belongs" "pipert: --save needs a value, not the option '--steps'"
"$PIPERT" "$TMP/mlp.bin" --ste 5 >"$TMP/out" 2>&1; rc=$?
exactly "an abbreviated option is not taken for another" "pipert: unknown option '--ste' (did you mean --steps?)"
"$PIPERT" "$TMP/mlp.bin" --verbose=1 >"$TMP/out" 2>&1; rc=$?
exactly "a value for a flag" "pipert: --verbose takes no value"
"$PIPERT" "$TMP/mlp.bin" "$TMP/dp2.bin" >"$TMP/out" 2>&1; rc=$?
exactly "two plans" "pipert: more than one plan ('$TMP/mlp.bin' and '$TMP/dp2.bin')"
"$PIPERT" --steps 3 >"$TMP/out" 2>&1; rc=$?
exactly "no plan" "pipert: no plan given (usage: mpirun -np N pipert PLAN.bin [options]; pipert --help)"
for bad in "steps ten 0" "steps 5x 0" "steps -1 0" "seed abc 0" "log-every 0 1" "save-every -2 0" "seed 1.5 0" \
    "steps +3 0"; do
    set -- $bad
    "$PIPERT" "$TMP/mlp.bin" "--$1" "$2" >"$TMP/out" 2>&1; rc=$?
    exactly "--$1 '$2'" "pipert: --$1: '$2' is not a whole number >= $3"
done
"$PIPERT" "$TMP/mlp.bin" --steps= >"$TMP/out" 2>&1; rc=$?
exactly "an empty value" "pipert: --steps needs a value"
"$PIPERT" "$TMP/mlp.bin" --steps=99999999999999999999 >"$TMP/out" 2>&1; rc=$?
exactly "--steps beyond the DSL's limit" "pipert: --steps: '99999999999999999999' is more than 1099511627776"
for bad in x -1 inf 1s; do
    "$PIPERT" "$TMP/mlp.bin" --watchdog "$bad" >"$TMP/out" 2>&1; rc=$?
    exactly "--watchdog '$bad'" "pipert: --watchdog: '$bad' is not a number of seconds >= 0"
done
"$PIPERT" "$TMP/mlp.bin" --progress=maybe >"$TMP/out" 2>&1; rc=$?
exactly "--progress maybe" "pipert: --progress: 'maybe' is not auto, on or off"
"$PIPERT" "$TMP/mlp1.bin" --steps=2 --log-every=1 --watchdog=1.5 --seed 3 --progress off >"$TMP/out" 2>&1; rc=$?
check_rc "--opt=VALUE and --opt VALUE, options after the plan or before" 0 '^step 2/2 loss'
"${MPI[@]}" 3 "$PIPERT" "$TMP/mlp.bin" >"$TMP/out" 2>&1; rc=$?
check_rc "3 ranks for 2 stages: refused with the reason" 1 'the world has 3 ranks, not a multiple of the plan.s 2 stages'
"${MPI[@]}" 2 "$PIPERT" "$TMP/dp2.bin" >"$TMP/out" 2>&1; rc=$?
check_rc "a fixed data_parallel the world does not match" 1 'data_parallel = 2: the world must be 4 ranks'
"$PIPEC" "$SRC/examples/mlp.pipe" -D precision=bf16 -o "$TMP/bf16.bin" || exit 2
PIPE_NO_BF16=1 "${MPI[@]}" 2 -x PIPE_NO_BF16 "$PIPERT" "$TMP/bf16.bin" >"$TMP/out" 2>&1; rc=$?
collective "precision = bf16 on a CPU without AVX512-BF16: refused at start, not computed in fp32 unasked" \
    '^pipert: .*bf16.bin: precision = bf16 on the CPU needs AVX512-BF16 \(avx512_bf16 in /proc/cpuinfo\) on every rank'
# where the CPU has it: activations and gradients go between stages as bf16, half the bytes
if grep -qw avx512_bf16 /proc/cpuinfo; then
    "${MPI[@]}" 2 "$PIPERT" "$TMP/bf16.bin" --steps 1 --trace "$TMP/bf16.trace" >"$TMP/out" 2>&1 &&
        "${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 1 --trace "$TMP/fp32.trace" >>"$TMP/out" 2>&1 &&
        python3 - "$TMP/bf16.trace" "$TMP/fp32.trace" >>"$TMP/out" 2>&1 <<'PY'
import json, sys
def sends(path):
    ev = json.load(open(path))["traceEvents"]
    return [(e["cat"], e["args"]["bytes"]) for e in ev if e.get("cat") in ("SendActivation", "SendGrad")]
b, f = sends(sys.argv[1]), sends(sys.argv[2])
assert b and [c for c, _ in b] == [c for c, _ in f], (b, f)
assert all(x * 2 == y and y > 0 for (_, x), (_, y) in zip(b, f)), (b[:2], f[:2])
print("bytes: bf16 %d, fp32 %d" % (b[0][1], f[0][1]))
PY
    rc=$?
    check_rc "precision = bf16: every SendActivation and SendGrad carries half fp32's bytes (--trace)" 0 '^bytes: bf16'
else
    echo "# skipped: no AVX512-BF16 on this CPU: bf16 on the wire"
fi
head -c 200 "$TMP/mlp.bin" >"$TMP/cut.bin"
"${MPI[@]}" 2 "$PIPERT" "$TMP/cut.bin" >"$TMP/out" 2>&1; rc=$?
check_rc "a cut plan" 1 'corrupted plan'
"$PIPEC" "$SRC/examples/mlp.pipe" -D 'data=idx("/nonexistent/images.gz", "/nonexistent/labels.gz")' -o "$TMP/nodata.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/nodata.bin" >"$TMP/out" 2>&1; rc=$?
collective "missing data: the file is named, every rank exits 1" \
    '^pipert: training data: /nonexistent/images.gz: cannot open: No such file or directory$'
# bad data at run time: one message naming the file, before the first step
"$PIPEC" "$SRC/examples/gpt_tiny.pipe" -D stages=2 -o "$TMP/gpt.bin" || exit 2
python3 -c "import struct,sys; open(sys.argv[1],'wb').write(struct.pack('<4000H', *([5] * 3999 + [60000])))" "$TMP/big.u16"
"${MPI[@]}" 2 "$PIPERT" "$TMP/gpt.bin" --data "$TMP/big.u16" >"$TMP/out" 2>&1; rc=$?
collective "a token id beyond the vocabulary, before the first step" \
    '^pipert: training data: .*big.u16: token id 60000 at token 3999 \(byte offset 7998\) is not below the vocabulary of 256$'
: >"$TMP/empty.u16"
"${MPI[@]}" 2 "$PIPERT" "$TMP/gpt.bin" --data "$TMP/empty.u16" >"$TMP/out" 2>&1; rc=$?
collective "an empty token file" 'empty.u16: holds 0 tokens, but one sample of 128 tokens and its targets need 129'
# IDX: a problem with the labels names the labels file
python3 - "$TMP" <<'PY'
import struct, sys
def idx(name, dims, data):
    with open(sys.argv[1] + "/" + name, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data))
idx("img.idx", [64, 28, 28], [7] * (64 * 784))
idx("lab.idx", [64], [i % 10 for i in range(64)])
idx("lab63.idx", [63], [i % 10 for i in range(63)])
PY
"$PIPEC" "$SRC/examples/mlp.pipe" -D "data=idx(\"$TMP/img.idx\", \"$TMP/lab.idx\")" -o "$TMP/idx.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/idx.bin" --data "$TMP/img.idx,$TMP/none.idx" >"$TMP/out" 2>&1; rc=$?
collective "idx: a missing labels file is named" "^pipert: training data: $TMP/none.idx: cannot open: No such file or directory\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/idx.bin" --data "$TMP/img.idx,$TMP/lab63.idx" >"$TMP/out" 2>&1; rc=$?
collective "idx: too few labels: the labels file is named first" \
    "^pipert: training data: $TMP/lab63.idx: 63 labels, but the images file $TMP/img.idx holds 64 images\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/idx.bin" --data "$TMP/img.idx" >"$TMP/out" 2>&1; rc=$?
collective "idx: --data needs both files" "^pipert: --data: idx data takes IMAGES,LABELS \\(two files, one comma\\), not '$TMP/img.idx'\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/idx.bin" --steps 1 --data "$TMP/img.idx,$TMP/lab.idx" >"$TMP/out" 2>&1; rc=$?
check_rc "idx: --data IMAGES,LABELS trains" 0 '^step 1/1 loss'
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --eval-data "$TMP/img.idx,$TMP/lab.idx" >"$TMP/out" 2>&1; rc=$?
collective "--eval-data on a plan without eval_data" \
    "^pipert: --eval-data: the plan has no eval_data to replace; add eval_data = \\.\\.\\. to its train block\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --data "$TMP/img.idx" >"$TMP/out" 2>&1; rc=$?
collective "--data on synthetic data" "^pipert: --data: the plan's data is synthetic \\(generated, no files to replace\\)"
# --save DIR: checked on every rank before the first step
: >"$TMP/afile"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --save "$TMP/afile" >"$TMP/out" 2>&1; rc=$?
collective "--save: a file in DIR's place, refused at start" "^pipert: --save $TMP/afile: $TMP/afile is not a directory\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --save "$TMP/afile/ckpt" >"$TMP/out" 2>&1; rc=$?
collective "--save: a file among DIR's parents" "^pipert: --save $TMP/afile/ckpt: $TMP/afile is not a directory\$"
# /proc/self: a directory nobody can create files in, root included
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --save /proc/self >"$TMP/out" 2>&1; rc=$?
collective "--save: a directory that cannot be written" '^pipert: --save /proc/self: cannot write in it: '
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 0 --save "$TMP/new/dir/ckpt" >"$TMP/out" 2>&1; rc=$?
[ -s "$TMP/new/dir/ckpt/manifest.json" ] || rc=3
check_rc "--save: a missing DIR is created with its parents" 0 '^trained 0 steps'
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --metrics "$TMP/nodir/m.jsonl" >"$TMP/out" 2>&1; rc=$?
collective "--metrics: a file that cannot be written" "^pipert: --metrics $TMP/nodir/m.jsonl: cannot write: No such file or directory\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --trace "$TMP/nodir/t.json" >"$TMP/out" 2>&1; rc=$?
collective "--trace: a file that cannot be written, refused at start" \
    "^pipert: --trace $TMP/nodir/t.json: cannot write: No such file or directory\$"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 3 --log-every 1 --metrics "$TMP/m.jsonl" >"$TMP/out" 2>&1; rc=$?
check_rc "trains and logs each step" 0 \
    '^step 3/3 loss [0-9.]+ lr [0-9.e+-]+ grad_norm [0-9]\.[0-9]{3}e[+-][0-9]+ [0-9]+ samples/s [0-9.]+ ms/step$'
n=$(grep -c '"step": ' "$TMP/m.jsonl" 2>/dev/null); [ "$n" = 3 ] && rc=0 || rc=1
echo "x" >"$TMP/out"
check_rc "--metrics writes one JSON line per logged step" 0 'x'
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 0 --save "$TMP/w" >"$TMP/out" 2>&1; rc=$?
ls "$TMP/w"/latest/stage-0.safetensors "$TMP/w"/latest/stage-1.safetensors >>"$TMP/out" 2>&1 || rc=1
check_rc "--steps 0 --save writes the initial weights, one file per stage" 0 'stage-1.safetensors'
"$PIPEC" "$SRC/examples/mlp.pipe" -D "optimizer=sgd(lr = 1e30)" -o "$TMP/nan.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/nan.bin" --steps 10 --save "$TMP/nanw" >"$TMP/out" 2>&1; rc=$?
[ "$rc" -ne 0 ] && rc=1
[ -e "$TMP/nanw/manifest.json" ] && echo "a checkpoint was written" >>"$TMP/out" && rc=2
check_rc "a NaN/Inf loss or gradient stops the run, naming the step and stage, without a checkpoint" 1 \
    'step [0-9]+: the loss or a gradient is not finite \(NaN or Inf\), first on stage [0-9]+; stopping before the update, no checkpoint written'
# grad_norm: the global norm before clipping, the same on 1 and 2 stages
"$PIPERT" "$TMP/mlp1.bin" --steps 3 --log-every 1 --metrics "$TMP/m1.jsonl" >"$TMP/out" 2>&1; rc=$?
"$PIPEC" "$SRC/examples/mlp.pipe" -D grad_clip=0.001 -o "$TMP/clip.bin" || exit 2
"${MPI[@]}" 2 "$PIPERT" "$TMP/clip.bin" --steps 3 --log-every 1 --metrics "$TMP/mclip.jsonl" >>"$TMP/out" 2>&1 || rc=1
python3 - "$TMP/m.jsonl" "$TMP/m1.jsonl" "$TMP/mclip.jsonl" >>"$TMP/out" 2>&1 <<'PY' || rc=1
import json, math, sys
two, one, clip = ([r for r in map(json.loads, open(p)) if "step" in r] for p in sys.argv[1:])
close = lambda a, b: abs(a - b) <= 1e-6 * abs(b)
for r in two + one + clip:
    assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0, r
assert len(two) == len(one) == 3 and all(close(a["grad_norm"], b["grad_norm"]) for a, b in zip(two, one)), (two, one)
# clipping to 0.001 changes the training (step 2's loss), yet step 1 reports the norm before clipping
assert close(clip[0]["grad_norm"], two[0]["grad_norm"]) and clip[0]["grad_norm"] > 100 * 0.001, (clip[0], two[0])
assert not close(clip[1]["loss"], two[1]["loss"]), (clip[1], two[1])
PY
check_rc "grad_norm: > 0, finite, equal on 1 and 2 stages; with grad_clip, the norm before clipping" 0 '^step 3/3'
e2e_end
