#!/usr/bin/env bash
# --trace FILE and the live progress line.
#   - the trace is JSON in Chrome's Trace Event Format: one row per rank,
#     one box per executed training instruction (steps x program length,
#     each with step, mb, bytes, the listing's text), boxes on a row never
#     overlap, transfers carry their byte counts; the summary prints every
#     rank's measured idle fraction beside the plan's prediction;
#   - on a terminal (a pseudo-terminal from script(1)) a live line is
#     redrawn with \r; into a pipe only plain lines come out.
#   test_trace.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-trace "$@"
"$PIPEC" "$SRC/tests/e2e/tied_mlp.pipe" -D stages=2 -D data_parallel=2 -o "$TMP/p.bin" || exit 2
"$PIPEC" "$SRC/tests/e2e/tied_mlp.pipe" -D stages=2 -D data_parallel=2 --list >"$TMP/listing" || exit 2

"${MPI[@]}" 4 "$PIPERT" "$TMP/p.bin" --steps 6 --trace "$TMP/t.json" >"$TMP/out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -Eq '^trace: .*t.json, [0-9]+ events, steps 1 to 6 in the idle figures' "$TMP/out" \
    && [ "$(grep -Ec '^  rank [0-3], stage [01]: +[0-9.]+% \([0-9.]+%\)$' "$TMP/out")" = 4 ]; then
    ok "--trace: the summary has each rank's measured idle fraction and the prediction"
else
    not_ok "--trace: the summary (exit $rc)"
fi
python3 - "$TMP/t.json" "$TMP/p.bin" >"$TMP/out" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
names = {e["tid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e["name"] == "thread_name"}
assert sorted(names) == [0, 1, 2, 3], names
assert names[2] == "rank 2: stage 1, replica 0", names
boxes = [e for e in ev if e.get("ph") == "X"]
per = {}
for b in boxes:
    per.setdefault(b["tid"], []).append(b)
    a = b["args"]
    for k in ("step", "pc", "mb", "bytes", "instruction"):
        assert k in a, (k, b)
    assert b["dur"] >= 0, b
    if b["cat"] in ("SendActivation", "RecvActivation", "SendGrad", "RecvGrad"):
        assert a["bytes"] > 0, b
    assert b["cat"] in a["instruction"], b
for tid, bs in per.items():
    steps = sorted({b["args"]["step"] for b in bs})
    assert steps == [1, 2, 3, 4, 5, 6], (tid, steps)
    n = len(bs) // 6
    assert len(bs) == 6 * n and n > 0, (tid, len(bs))
    bs.sort(key=lambda b: b["ts"])
    for x, y in zip(bs, bs[1:]):
        assert x["ts"] + x["dur"] <= y["ts"] + 1e-3, ("overlap", tid, x, y)
print("events per rank:", {t: len(b) for t, b in sorted(per.items())})
PY
if [ $? -eq 0 ]; then
    ok "--trace: valid Chrome trace, a row per rank, every instruction of 6 steps once, no overlaps"
else
    not_ok "--trace: the trace file"
fi
# the number of boxes of a rank = 6 x its stage's instructions in the listing
n0=$(python3 -c "import json,sys; print(sum(1 for e in json.load(open('$TMP/t.json'))['traceEvents'] if e.get('ph')=='X' and e['tid']==0))")
l0=$(awk '/^train stage 0:/{on=1} on && / instructions$/{print $(NF-1); exit}' "$TMP/listing")
if [ "${l0:-0}" -gt 0 ] && [ "$n0" = $((6 * l0)) ]; then
    ok "--trace: rank 0 has 6 x its $l0 listed instructions"
else
    echo "rank 0: $n0 boxes, $l0 listed instructions" >"$TMP/out"
    not_ok "--trace: rank 0's boxes match its listing"
fi

"$PIPEC" "$SRC/examples/mlp.pipe" -o "$TMP/mlp.bin" || exit 2
script -qec "timeout 120 mpirun --oversubscribe -np 2 $PIPERT $TMP/mlp.bin --steps 300 --log-every 1000" /dev/null \
    >"$TMP/out" 2>&1
if grep -aEq $'\r\033\\[Kstep [0-9]+/300 loss [0-9.]+ [0-9]+ samples/s ETA [0-9]+:[0-9]{2}' "$TMP/out" \
    && grep -aq 'step 300/300 loss' "$TMP/out"; then
    ok "on a terminal: a live progress line (step, loss, samples/s, ETA)"
else
    not_ok "on a terminal: a live progress line"
fi
"${MPI[@]}" 2 "$PIPERT" "$TMP/mlp.bin" --steps 300 --log-every 1000 >"$TMP/out" 2>&1
if ! grep -q $'\r' "$TMP/out" && grep -q '^step 300/300 loss' "$TMP/out"; then
    ok "into a pipe: plain lines only"
else
    not_ok "into a pipe: plain lines only"
fi
e2e_end
