#!/usr/bin/env bash
# A rank that dies takes the job down: kill one rank of a running 2-stage
# job and check that the whole job ends, with a message naming the dead
# rank, within 30 s, instead of the other rank waiting forever.
#   test_rank_death.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-death "$@"

"$PIPEC" "$SRC/examples/mlp.pipe" -D steps=100000 -o "$TMP/long.bin" || exit 2
mpirun --oversubscribe -np 2 "$PIPERT" "$TMP/long.bin" --verbose --log-every 1000 >"$TMP/out" 2>&1 &
job=$!
pid=
for _ in $(seq 1 100); do # wait up to 20 s for the ranks to start training
    pid=$(sed -n 's/^\[rank 1\] pid \([0-9]*\),.*/\1/p' "$TMP/out" | head -n 1)
    [ -n "$pid" ] && grep -q '^step ' "$TMP/out" && break
    sleep 0.2
done
if [ -z "$pid" ]; then
    not_ok "the job started and rank 1 printed its pid"
else
    ok "the job started and rank 1 printed its pid"
    start=$(date +%s)
    kill -9 "$pid"
    ended=0
    for _ in $(seq 1 300); do # 30 s
        if ! kill -0 "$job" 2>/dev/null; then ended=1; break; fi
        sleep 0.1
    done
    took=$(($(date +%s) - start))
    wait "$job"
    rc=$?
    job=
    if [ "$ended" -eq 1 ] && [ "$rc" -ne 0 ]; then
        ok "killing rank 1 ends the whole job within 30 s (took ${took} s, exit $rc)"
    else
        not_ok "killing rank 1 ends the whole job within 30 s (ended $ended, exit $rc)"
    fi
    if grep -Eq 'rank 1 .*(exited on signal 9|Killed)|process rank 1' "$TMP/out"; then
        ok "the message names the dead rank"
    else
        not_ok "the message names the dead rank"
    fi
fi
e2e_end
