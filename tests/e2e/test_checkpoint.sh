#!/usr/bin/env bash
# Checkpoints and --resume (docs/reliability.md):
#   - 10 steps straight and 5 + resume + 5 give the same losses and the
#     same bytes in every checkpoint file (AdamW, and SGD with momentum);
#   - a checkpoint saved on 4 stages resumes on 2 stages under another
#     schedule, bit for bit; --save-every keeps only the newest;
#   - a job killed while it writes a checkpoint leaves the previous one
#     whole, and resuming from it ends where a straight run ends;
#   - missing, truncated, corrupted, other-model checkpoints are refused
#     with a message naming the file or the tensor.
#   test_checkpoint.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-ckpt "$@"
losses() { grep -o '"loss": [^,]*' "$1"; }
# same_run A B: the same losses, and every file of the newest checkpoints equal
same_run() {
    losses "$1.jsonl" >"$TMP/la" && losses "$2.jsonl" >"$TMP/lb" && cmp -s "$TMP/la" "$TMP/lb" || return 1
    [ "$(wc -l <"$TMP/la")" -gt 0 ] || return 1
    for f in "$1"/latest/*.safetensors; do
        cmp -s "$f" "$2/latest/$(basename "$f")" || { echo "differs: $(basename "$f")" >>"$TMP/out"; return 1; }
    done
    [ "$(ls "$1"/latest | wc -l)" = "$(ls "$2"/latest | wc -l)" ]
}
run() { # RANKS PLAN NAME ARGS...: trains, saving in $TMP/NAME, logging every step to $TMP/NAME.jsonl
    local np=$1 plan=$2 name=$3
    shift 3
    "${MPI[@]}" "$np" "$PIPERT" "$TMP/$plan.bin" --log-every 1 --save "$TMP/$name" --metrics "$TMP/$name.jsonl" "$@" \
        >>"$TMP/out" 2>&1
}
M="$SRC/tests/e2e/tied_mlp.pipe"
"$PIPEC" "$M" -D stages=2 -o "$TMP/s2.bin" || exit 2
"$PIPEC" "$M" -D stages=4 -o "$TMP/s4.bin" || exit 2
"$PIPEC" "$M" -D stages=2 -D schedule=gpipe -o "$TMP/g2.bin" || exit 2
"$PIPEC" "$M" -D stages=2 -D "optimizer=sgd(lr = 0.05, momentum = 0.9)" -o "$TMP/sgd.bin" || exit 2

: >"$TMP/out"
run 2 s2 a --steps 10 && run 2 s2 b --steps 5 && run 2 s2 b --steps 10 --resume "$TMP/b"
if same_run "$TMP/a" "$TMP/b" && grep -q "resumed from $TMP/b at step 5 of 10" "$TMP/out"; then
    ok "AdamW: 10 steps = 5 + resume + 5 (losses and every checkpoint byte)"
else
    not_ok "AdamW: 10 steps = 5 + resume + 5"
fi

: >"$TMP/out"
run 2 sgd c --steps 10 && run 2 sgd d --steps 5 && run 2 sgd d --steps 10 --resume "$TMP/d"
if same_run "$TMP/c" "$TMP/d"; then
    ok "SGD with momentum: 10 steps = 5 + resume + 5"
else
    not_ok "SGD with momentum: 10 steps = 5 + resume + 5"
fi

: >"$TMP/out"
run 2 g2 e --steps 10 && run 4 s4 f --steps 5 && run 2 g2 f --steps 10 --resume "$TMP/f"
if same_run "$TMP/e" "$TMP/f"; then
    ok "saved on 4 stages (1f1b), resumed on 2 stages (gpipe): the same as 2 stages straight"
else
    not_ok "saved on 4 stages (1f1b), resumed on 2 stages (gpipe)"
fi

: >"$TMP/out"
run 2 s2 g --steps 10 --save-every 3
if same_run "$TMP/a" "$TMP/g" && [ "$(ls -d "$TMP"/g/step-* | wc -l)" = 1 ] && [ -d "$TMP/g/step-00000010" ] \
    && grep -q '"step": 10,' "$TMP/g/manifest.json"; then
    ok "--save-every 3: the same run, one step folder left (the newest)"
else
    not_ok "--save-every 3"
fi

# Killed while writing the checkpoint of step 10: the writers pause between
# their weights and optimizer files (PIPE_FAULT_SAVE_PAUSE), and the test
# kills every rank there.
: >"$TMP/out"
"$PIPEC" "$M" -D stages=2 -D steps=20 -o "$TMP/k.bin" || exit 2
run 2 k straight --steps 20
PIPE_FAULT_SAVE_PAUSE=10:30000 "${MPI[@]}" 2 "$PIPERT" "$TMP/k.bin" --save "$TMP/h" --save-every 5 \
    --log-every 1 --metrics "$TMP/h.jsonl" >>"$TMP/out" 2>&1 &
job=$!
for _ in $(seq 1 300); do
    [ -e "$TMP/h/step-00000010/stage-1.safetensors" ] && [ -e "$TMP/h/step-00000010/stage-0.safetensors" ] && break
    sleep 0.1
done
pkill -9 -f "pipert $TMP/k.bin"
wait "$job" 2>/dev/null
rc=$?
# the steps the dead run logged after step 5 are not part of the resumed run
grep '"step": ' "$TMP/h.jsonl" | head -n 5 >"$TMP/h.tmp"
mv "$TMP/h.tmp" "$TMP/h.jsonl"
if [ "$rc" -ne 0 ] && grep -q '"step": 5,' "$TMP/h/manifest.json" && [ -e "$TMP/h/step-00000010/stage-0.safetensors" ] \
    && [ ! -e "$TMP/h/step-00000010/optim-0.safetensors" ]; then
    ok "killed inside the checkpoint of step 10: the manifest still names step 5 (exit $rc)"
else
    not_ok "killed inside the checkpoint of step 10 (exit $rc)"
fi
run 2 k h --steps 20 --resume "$TMP/h"
if same_run "$TMP/straight" "$TMP/h" && [ ! -e "$TMP/h/step-00000010" ]; then
    ok "resumed from step 5 after the kill: the same as 20 steps straight; the half-written folder is gone"
else
    not_ok "resumed from step 5 after the kill"
fi

# ---- refusals: one message naming the file or tensor, exit 1 ----
refuse() { # NAME REGEX PLAN CKPT [ARGS...]
    local name=$1 re=$2 plan=$3 ck=$4
    shift 4
    "${MPI[@]}" 2 "$PIPERT" "$TMP/$plan.bin" --resume "$ck" "$@" >"$TMP/out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -Eq -- "$re" "$TMP/out"; then
        ok "refused: $name"
    else
        not_ok "refused: $name (exit $rc, want 1 and /$re/)"
    fi
}
fresh() { rm -rf "$TMP/x"; cp -r "$TMP/b" "$TMP/x"; }
refuse "no checkpoint" "--resume $TMP/none: $TMP/none/manifest.json: missing" s2 "$TMP/none"
fresh; truncate -s 1000 "$TMP"/x/latest/stage-1.safetensors
refuse "a truncated file" "x/step-00000010/stage-1.safetensors: 1000 bytes, the manifest says [0-9]+ \(truncated" s2 "$TMP/x"
fresh; printf 'Z' | dd of="$TMP/x/latest/optim-0.safetensors" bs=1 seek=900 conv=notrunc 2>/dev/null
refuse "a corrupted file" "x/step-00000010/optim-0.safetensors: CRC-32 0x[0-9a-f]+, the manifest says 0x[0-9a-f]+ \(corrupted\)" s2 "$TMP/x"
fresh; rm "$TMP/x/latest/optim-1.safetensors"
refuse "a missing file" "x/step-00000010/optim-1.safetensors: No such file" s2 "$TMP/x"
fresh; head -c 100 "$TMP/b/manifest.json" >"$TMP/x/manifest.json"
refuse "a cut manifest" "x/manifest.json: not valid JSON: offset" s2 "$TMP/x"
"$PIPEC" "$SRC/examples/mlp.pipe" -o "$TMP/mlp.bin" || exit 2
refuse "another model" "the checkpoint is of model 'tied'; this plan's model is 'mlp'" mlp "$TMP/b"
sed 's/linear(32)/linear(24)/' "$M" >"$TMP/wide.pipe"
"$PIPEC" "$TMP/wide.pipe" -D stages=2 -o "$TMP/wide.bin" || exit 2
refuse "the same model name, another shape" "tensor layers.2.weight is \[32, 16\] in the checkpoint; this model's is \[24, 16\]" wide "$TMP/b"
refuse "another optimizer" "the checkpoint's optimizer is adamw; this plan's is sgd" sgd "$TMP/b"
refuse "--steps behind the checkpoint" "the checkpoint is at step 10, past this run's --steps 4" s2 "$TMP/b" --steps 4
refuse "another seed" "the checkpoint was trained with --seed 3, not 4" s2 "$TMP/b" --seed 4
"$PIPEC" "$M" -D stages=2 -D micro_batches=4 -o "$TMP/mb4.bin" || exit 2
refuse "another global batch" "global batch of 32 samples; this run.s is 16" mb4 "$TMP/b"

e2e_end
