#!/usr/bin/env bash
# pipert --tensorboard DIR (docs/weights.md, "Metrics in TensorBoard"):
#   - the event file, read by tests/e2e/tb_events.py (written from the
#     format's description: TFRecord framing, every CRC-32C checked, the
#     Event and Summary protobufs): the file_version record first, then
#     train/loss, train/lr, train/grad_norm, train/samples_per_s at every
#     step, eval/loss and eval/accuracy; the losses are the --metrics ones
#     (as float32);
#   - the same file read by TensorBoard's own reader (event_accumulator),
#     when the tensorboard package can be had: $PIPE_TENSORBOARD_PATH, or
#     pip install --target into the build folder (once); skipped, saying
#     so, when it cannot;
#   - written by one rank only (2 stages x 2 replicas: one file);
#   - a DIR that cannot be created is refused before the first step.
#   test_tensorboard.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-tb "$@"
"$PIPEC" "$SRC/examples/mlp.pipe" -D "eval_data=synthetic(samples = 128)" -D eval_every=5 -o "$TMP/mlp.bin" || exit 2

"${MPI[@]}" 4 "$PIPERT" "$TMP/mlp.bin" --steps 10 --log-every 1 --metrics "$TMP/m.jsonl" --tensorboard "$TMP/tb/run1" \
    >"$TMP/out" 2>&1
python3 "$SRC/tests/e2e/tb_events.py" "$TMP/tb/run1" >"$TMP/ev" 2>>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && grep -q "^records 13 files 1 version brain.Event:2$" "$TMP/ev"; then
    ok "one event file (4 ranks), every CRC right: file_version first, 10 steps and 2 evaluations (13 records)"
else
    not_ok "one event file, every CRC right" "$(tail -n 3 "$TMP/ev" "$TMP/out")"
fi
if python3 - "$TMP/ev" "$TMP/m.jsonl" <<'PY'
import json, struct, sys
ev = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3:
        ev.setdefault(p[0], {})[int(p[1])] = float(p[2])
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
recs = [json.loads(l) for l in open(sys.argv[2])]
steps = [r for r in recs if "loss" in r]
evals = [r for r in recs if "eval_step" in r]
ok = all(ev["train/loss"][r["step"]] == f32(r["loss"]) and ev["train/lr"][r["step"]] == f32(r["lr"])
         and ev["train/grad_norm"][r["step"]] == f32(r["grad_norm"]) and ev["train/samples_per_s"][r["step"]] > 0
         for r in steps)
ok = ok and sorted(ev["train/loss"]) == list(range(1, 11))
ok = ok and all(ev["eval/loss"][r["eval_step"]] == f32(r["eval_loss"]) and
                ev["eval/accuracy"][r["eval_step"]] == f32(r["accuracy"]) for r in evals) and len(evals) == 2
print("#   tags:", " ".join(sorted(ev)))
sys.exit(0 if ok else 1)
PY
then
    ok "loss, lr, grad_norm, samples/s every step and eval loss and accuracy: the --metrics values as float32"
else
    not_ok "the scalars are the --metrics values"
fi

# TensorBoard's own reader
BUILD=$(dirname "$(realpath "$PIPEC")")
TBPY=${PIPE_TENSORBOARD_PATH:-$BUILD/tb-py}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ ! -d "$TBPY/tensorboard" ] && [ -z "${PIPE_TENSORBOARD_PATH:-}" ]; then
    timeout 180 "$PY" -m pip install -q --no-deps --target "$TBPY" tensorboard==2.21.0 protobuf==7.36.2 absl-py==2.5.1 \
        >"$TMP/pip" 2>&1 || rm -rf "$TBPY"
fi
if PYTHONPATH="$TBPY" "$PY" -c "from tensorboard.backend.event_processing import event_accumulator" 2>/dev/null; then
    if PYTHONPATH="$TBPY" "$PY" - "$TMP/tb/run1" "$TMP/ev" >"$TMP/out" 2>&1 <<'PY'
import sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1])
acc.Reload()
mine = {}
for line in open(sys.argv[2]):
    p = line.split()
    if len(p) == 3:
        mine.setdefault(p[0], []).append((int(p[1]), float(p[2])))
theirs = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print("#   TensorBoard's reader: %s" % ", ".join("%s (%d)" % (t, len(v)) for t, v in sorted(theirs.items())))
sys.exit(0 if theirs == mine else 1)
PY
    then
        ok "TensorBoard's event_accumulator reads the same scalars"
        cat "$TMP/out"
    else
        not_ok "TensorBoard's event_accumulator reads the same scalars"
    fi
else
    echo "ok - TensorBoard's event_accumulator # SKIP: the tensorboard package is not here and pip could not install it ($(tail -n 1 "$TMP/pip" 2>/dev/null))"
fi

# refused before the first step
: >"$TMP/file"
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 10 --tensorboard "$TMP/file/tb" >"$TMP/out" 2>&1
rc=$?
check_rc "a --tensorboard folder that cannot be made is refused" 1 "^pipert: --tensorboard $TMP/file/tb: $TMP/file is not a directory$"
e2e_end
