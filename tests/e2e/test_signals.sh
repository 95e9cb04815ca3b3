#!/usr/bin/env bash
# A preempted job: SIGTERM to one rank of a running 2-stage job finishes the
# current step on every rank, writes a checkpoint when --save was given, and
# exits 0; a second signal ends the job at once.
#
# SIGTERM or SIGINT to mpirun itself (what a user or a batch system does):
# Open MPI 4.1's mpirun does not forward it. It ends the job: SIGCONT to the
# ranks, odls_base_sigkill_timeout seconds (default 1) later SIGTERM, as
# long again later SIGKILL, and mpirun exits 1 whatever the ranks return
# (they are killed inside MPI_Finalize, whose last exchange waits for
# mpirun). So the ranks have that timeout to finish the step and write the
# checkpoint: it is complete and resumable; mpirun's exit status is 1. A
# second signal to mpirun ends it at once, exit 1, before the ranks' SIGTERM.
#   test_signals.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-sig "$@"
E2E_TAIL=6
# lr 0.01: the example's 0.1 (meant for its 20 steps) makes the loss of
# this run overflow at step 4,461, about 3 s in at 0.6 ms a step, and the
# SIGTERM-to-mpirun case below trains for 1 s plus mpirun's 2 s kill
# timeout: the job stopped on the non-finite loss instead of the signal
"$PIPEC" "$SRC/examples/mlp.pipe" -D steps=1000000 -D "optimizer = sgd(lr = 0.01, momentum = 0.9)" -o "$TMP/long.bin" ||
    exit 2
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

# as start_job, under mpirun's own (default or given) kill timeout
start_job_mca() { # TIMEOUT PLAN ARGS...
    local t=$1
    shift
    OMPI_MCA_odls_base_sigkill_timeout=$t start_job "$@"
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
# SIGTERM to mpirun. The step and the save take milliseconds here; a 2 s
# kill timeout (the knob docs/reliability.md gives for longer steps) keeps a
# slow fsync on a busy machine from racing mpirun's SIGKILL.
start_job_mca 2 "$TMP/long.bin" --save "$TMP/m"
kill -TERM "$job"
finish
step=$(sed -n 's/^ *"step": \([0-9]*\),*$/\1/p' "$TMP/m/manifest.json" 2>/dev/null | head -n 1)
if [ "$rc" -eq 1 ] && grep -Eq '^pipert: stopped by a signal after step [0-9]+ of 1000000; checkpoint saved in ' "$TMP/out" \
    && [ -n "$step" ]; then
    ok "SIGTERM to mpirun: the ranks stop after a step and save (step $step); mpirun exits 1"
else
    not_ok "SIGTERM to mpirun: the ranks stop after a step and save; mpirun exits 1 (exit $rc, step '${step:-}')"
fi
if [ -n "$step" ] && timeout 60 mpirun --oversubscribe -np 2 "$PIPERT" "$TMP/long.bin" --resume "$TMP/m" \
    --steps $((step + 1)) --log-every 1 >"$TMP/out" 2>&1 \
    && grep -q "^resumed from $TMP/m at step $step of $((step + 1))\$" "$TMP/out" \
    && grep -q "^step $((step + 1))/$((step + 1)) loss " "$TMP/out"; then
    ok "that checkpoint resumes"
else
    not_ok "that checkpoint resumes"
fi
# SIGINT to mpirun, its default timeout: the same exit status
start_job "$TMP/long.bin"
kill -INT "$job"
finish
if [ "$rc" -eq 1 ] && grep -q '^pipert: stopped by a signal after step ' "$TMP/out"; then
    ok "SIGINT to mpirun: exit 1"
else
    not_ok "SIGINT to mpirun: exit 1 (exit $rc)"
fi
e2e_end
