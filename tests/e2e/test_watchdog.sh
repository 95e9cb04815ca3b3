#!/usr/bin/env bash
# The communication watchdog: a rank that stops (SIGSTOP: alive, but making
# no progress) is reported by the rank that waits for it, naming its own
# instruction, the step and the peer it waits for, and the whole job ends
# within 30 s instead of hanging.
#   test_watchdog.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-wd "$@"
"$PIPEC" "$SRC/examples/mlp.pipe" -D steps=1000000 -o "$TMP/long.bin" || exit 2
timeout 120 mpirun --oversubscribe -np 2 "$PIPERT" "$TMP/long.bin" --verbose --watchdog 3 --log-every 100000 \
    >"$TMP/out" 2>&1 &
job=$!
pid=
for _ in $(seq 1 100); do
    pid=$(sed -n 's/^\[rank 1\] pid \([0-9]*\),.*/\1/p' "$TMP/out" | head -n 1)
    [ -n "$pid" ] && break
    sleep 0.2
done
[ -n "$pid" ] || { echo "not ok - the job did not start"; cat "$TMP/out"; exit 1; }
sleep 1 # into training
kill -STOP "$pid"
start=$(date +%s)
rc=124
for _ in $(seq 1 300); do
    if ! kill -0 "$job" 2>/dev/null; then
        wait "$job"
        rc=$?
        job=
        break
    fi
    sleep 0.1
done
took=$(($(date +%s) - start))
kill -9 "$pid" 2>/dev/null
re='^\[rank 0\] watchdog: stage 0 made no progress for [0-9]+ s (at instruction [0-9]+ \(.*\) of step [0-9]+, waiting (for the (gradient|activation) from stage 1 \(rank 1\)|in the sum over every stage of the lane)|outside the step.s program, waiting in the vote of every rank at the end of the step); .*--watchdog 3 s: ending the job'
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -le 30 ] && grep -Eq "$re" "$TMP/out"; then
    echo "ok - a stopped rank: rank 0 names its instruction and the peer, the job ends in ${took} s (exit $rc)"
    grep watchdog "$TMP/out" | sed 's/^/#   /'
    exit 0
fi
echo "not ok - a stopped rank (exit $rc after ${took} s)"
sed 's/^/#   /' "$TMP/out" | grep -v pid | head -8
exit 1
