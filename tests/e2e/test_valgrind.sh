#!/usr/bin/env bash
# pipec and pipert under valgrind memcheck (docs/reliability.md,
# "Hardening"): no invalid read or write, no use of uninitialised memory,
# no leak (definite or indirect) in pipe's code. Open MPI's own leaks are
# suppressed by tests/e2e/valgrind.supp, which names only Open MPI and the
# libraries it loads.
#   - pipec on every examples/*.pipe and tests/e2e/*.pipe: --stats and -o
#     plan.bin, then the plan read back with --list --stats; --emit svg,
#     trace and sched; a text schedule; a file with errors
#   - pipert without mpirun (a world of one rank) for 2 steps of small
#     models: an MLP with --save then --resume, the tied MLP (dropout,
#     AdamW), a CNN with evaluation, a GPT with a tied head and a padding
#     mask on token data
# Exits 77 (skipped) without valgrind or on sanitizer builds, which
# valgrind cannot run.
#   test_valgrind.sh PIPEC PIPERT SOURCE_DIR
set -u
PIPEC=$(realpath "$1") PIPERT=$(realpath "$2") SRC=$(realpath "$3")
if ! command -v valgrind >/dev/null; then
    echo "skipped: no valgrind (scripts/deps.sh installs it)"
    exit 77
fi
if grep -q -e __asan_init -e __ubsan_handle "$PIPEC" "$PIPERT"; then
    echo "skipped: sanitizer builds do not run under valgrind"
    exit 77
fi
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-valgrind "$PIPEC" "$PIPERT" "$SRC"
export HWLOC_COMPONENTS=-x86 # hwloc's CPUID probe does not work under valgrind (and says so)
VG=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --num-callers=40 --suppressions="$SRC/tests/e2e/valgrind.supp")

# vg NAME WANT_RC CMD...: runs CMD under memcheck; passes when it exits
# WANT_RC (99 is memcheck's: an error or a leak)
vg() {
    local name=$1 want=$2 rc
    shift 2
    "${VG[@]}" "$@" >"$TMP/out" 2>&1
    rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "$name"
    else
        not_ok "$name (exit $rc, want $want; 99: memcheck found an error)" "$(tail -n 60 "$TMP/out")"
    fi
}

cd "$TMP" || exit 2
for f in "$SRC"/examples/*.pipe "$SRC"/tests/e2e/*.pipe; do
    n=$(basename "$f" .pipe)
    vg "pipec $n.pipe --stats -o $n.bin" 0 "$PIPEC" "$f" --stats -o "$n.bin"
    vg "pipec $n.bin --list --stats --json" 0 "$PIPEC" "$n.bin" --list --stats --json
done
GPT=$SRC/examples/gpt_tiny.pipe
vg "pipec gpt_tiny --emit svg" 0 "$PIPEC" "$GPT" -D stages=2 -D schedule=zb-v --emit svg -o gpt.svg
vg "pipec gpt_tiny --emit trace" 0 "$PIPEC" "$GPT" -D 'schedule=looped-bfs(chunks = 2)' --emit trace -o gpt.json
vg "pipec gpt_tiny --emit sched" 0 "$PIPEC" "$GPT" -D stages=2 -D schedule=dualpipev --emit sched -o gpt.sched
vg "pipec mlp with examples/custom.sched" 0 "$PIPEC" "$SRC/examples/mlp.pipe" -D 'schedule=file("custom.sched")' --list
printf 'model bad {\n  input x: float32[4]\n  target y: int32[]\n  linaer(3)\n  loss cross_entropy\n}\n' >bad.pipe
vg "pipec on a file with errors (exit 1)" 1 "$PIPEC" bad.pipe
printf 'PIPEPLAN' >cut.bin
vg "pipec on a cut plan (exit 1)" 1 "$PIPEC" cut.bin --list

# pipert, one rank, 2 steps
small=(-D stages=1 -D steps=2 -D micro_batches=2 -D micro_batch_size=2)
"$PIPEC" "$SRC/examples/mlp.pipe" "${small[@]}" -D "data=synthetic(samples = 16)" -o mlp1.bin &&
    "$PIPEC" "$SRC/tests/e2e/tied_mlp.pipe" "${small[@]}" -o tied1.bin &&
    "$PIPEC" "$SRC/examples/fashion_mnist.pipe" "${small[@]}" -D "data=synthetic(samples = 16)" \
        -D "eval_data=synthetic(samples = 4)" -o cnn1.bin &&
    "$PIPEC" "$SRC/tests/e2e/tied_gpt.pipe" "${small[@]}" -o gpt1.bin &&
    "$PIPEC" "$SRC/tests/e2e/residual_cnn.pipe" "${small[@]}" -D activation_checkpoint=1 -o res1.bin &&
    "$PIPEC" "$SRC/tests/e2e/residual_cnn.pipe" "${small[@]}" -D schedule=zb-h1 -o res1z.bin || {
    echo "not ok - pipec: the plans for pipert"
    exit 1
}
python3 -c 'import random, struct, sys
r = random.Random(7)
open(sys.argv[1], "wb").write(struct.pack("<512H", *[r.randrange(64) for _ in range(512)]))' tokens.u16 || exit 2
vg "pipert mlp, 2 steps, --save" 0 "$PIPERT" mlp1.bin --save ckpt
vg "pipert mlp, --resume for a third step" 0 "$PIPERT" mlp1.bin --resume ckpt --steps 3
vg "pipert tied MLP (dropout, AdamW)" 0 "$PIPERT" tied1.bin
vg "pipert CNN with evaluation" 0 "$PIPERT" cnn1.bin
vg "pipert GPT (tied head, padding mask, tokens)" 0 "$PIPERT" gpt1.bin --data tokens.u16
vg "pipert ResNet (residual blocks, activation checkpointing)" 0 "$PIPERT" res1.bin
vg "pipert ResNet (residual blocks, zb-h1: split backward)" 0 "$PIPERT" res1z.bin

e2e_end
