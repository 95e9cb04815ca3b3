#!/usr/bin/env bash
# A preempted job: SIGTERM to one rank of a running 2-stage job finishes the
# current step on every rank, writes a checkpoint when --save was given, and
# exits 0; a second signal ends the job at once.
#   test_signals.sh PIPEC PIPERT SOURCE_DIR
set -u
PIPEC=$1 PIPERT=$2 SRC=$3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pipert-sig.XXXXXX") || exit 2
trap 'rm -rf "$TMP"; [ -n "${job:-}" ] && kill -9 "$job" 2>/dev/null' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; sed 's/^/#   /' "$TMP/out" | tail -6; failed=$((failed + 1)); }
"$PIPEC" "$SRC/examples/mlp.pipe" -D steps=1000000 -o "$TMP/long.bin" || exit 2
# steps of a few hundred ms, so that a second signal 10 ms after the first
# lands inside the same step
"$PIPEC" "$SRC/examples/mlp.pipe" -D steps=1000000 -D micro_batches=16 -D micro_batch_size=512 -o "$TMP/slow.bin" || exit 2

start_job() { # PLAN ARGS...: starts a long run; sets job and pid (rank 0's)
    local plan=$1
    shift
    rm -f "$TMP/out"
    mpirun --oversubscribe -np 2 "$PIPERT" "$plan" --verbose --log-every 100000 "$@" >"$TMP/out" 2>&1 &
    job=$!
    pid=
    for _ in $(seq 1 100); do
        pid=$(sed -n 's/^\[rank 0\] pid \([0-9]*\),.*/\1/p' "$TMP/out" | head -n 1)
        [ -n "$pid" ] && break
        sleep 0.2
    done
    sleep 1 # into training
}

finish() { # waits up to 30 s for the job; sets rc (124 when it did not end)
    rc=124
    for _ in $(seq 1 300); do
        if ! kill -0 "$job" 2>/dev/null; then
            wait "$job"
            rc=$?
            job=
            return
        fi
        sleep 0.1
    done
}

start_job "$TMP/long.bin" --save "$TMP/w"
kill -TERM "$pid"
finish
if [ "$rc" -eq 0 ] && grep -Eq '^pipert: stopped by a signal after step [0-9]+ of 1000000; checkpoint saved in ' "$TMP/out" \
    && [ -s "$TMP/w/manifest.json" ] && [ -s "$TMP/w/latest/stage-0.safetensors" ] \
    && [ -s "$TMP/w/latest/optim-1.safetensors" ]; then
    ok "SIGTERM: the step finishes, a checkpoint is written, exit 0"
else
    not_ok "SIGTERM: the step finishes, a checkpoint is written, exit 0 (exit $rc)"
fi
start_job "$TMP/slow.bin"
kill -INT "$pid"
sleep 0.01 # two signals at once may merge into one: deliver them apart
kill -INT "$pid"
finish
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then
    ok "a second signal ends the job at once (exit $rc)"
else
    not_ok "a second signal ends the job at once (exit $rc)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
