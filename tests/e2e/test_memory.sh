#!/usr/bin/env bash
# Predicted memory = allocated memory (docs/reliability.md, "Memory"): for
# every example, under every generator of schedules/schedules.def (read
# from the table), with and without activation checkpointing, plus a text
# schedule and a data-parallel run, each rank's `memory_bytes` record from
# `pipert --metrics` (what its arenas allocated, counted where they are
# allocated) must be within 2% of `pipec --stats --json`'s
# stages[s].memory_bytes for its stage. Both come from plan/plan_memory.c,
# so the test expects (and prints) 0 difference; 2% is the contract.
#   test_memory.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-mem "$@"
E2E_OUT= # a failure says why itself
worst=0

SCHEDS=$(sed -n 's/^SCHED_DEF([A-Z_0-9]*, "\([^"]*\)", "[^"]*", [A-Z]*, [01], \([a-z_0-9]*\),.*/\1 \2/p' \
    "$SRC/schedules/schedules.def" | awk '$2 != "NULL" { print $1 }')
[ "$(echo "$SCHEDS" | wc -l)" -ge 8 ] || { echo "not ok - the generators from schedules.def: '$SCHEDS'"; exit 1; }

# data for the examples (as tests/e2e/test_examples.sh makes it)
mkdir -p "$TMP/cifar"
python3 - "$TMP/cifar/data_batch_1.bin" <<'PY' || exit 2
import random, sys
r = random.Random(1)
rec = bytearray()
for i in range(32):
    rec.append(i % 10)
    rec += bytes(r.randrange(256) for _ in range(3072))
open(sys.argv[1], "wb").write(rec)
PY
python3 "$SRC/scripts/text_to_tokens.py" "$SRC/README.md" "$TMP/input.u16" >/dev/null || exit 2
fm=/usr/share/datasets/fashion-mnist
FM=(-D "eval_data=synthetic(samples = 64)")
[ -f "$fm/train-images-idx3-ubyte.gz" ] || FM+=(-D "data=synthetic(samples = 256)")

# check NAME MODEL NP PIPEC_ARGS... -- PIPERT_ARGS...: compile, run 0 steps,
# compare every rank's record with its stage's prediction
check() {
    local name=$1 model=$2 np=$3 cargs=() rargs=()
    shift 3
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cargs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    rargs=("$@")
    "$PIPEC" "$model" "${cargs[@]}" --stats --json >"$TMP/stats.json" 2>"$TMP/err" &&
        "$PIPEC" "$model" "${cargs[@]}" -o "$TMP/plan.bin" 2>>"$TMP/err" ||
        { not_ok "$name: compiles" "$(head -n 6 "$TMP/err")"; return; }
    rm -f "$TMP/m.jsonl"
    if ! "${MPI[@]}" "$np" "$PIPERT" "$TMP/plan.bin" --steps 0 --metrics "$TMP/m.jsonl" "${rargs[@]}" \
        </dev/null >"$TMP/out" 2>&1; then
        not_ok "$name: pipert --steps 0 on $np ranks" "$(tail -5 "$TMP/out")"
        return
    fi
    local verdict
    if verdict=$(python3 - "$TMP/stats.json" "$TMP/m.jsonl" "$np" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
want = [s["memory_bytes"] for s in stats["stages"]]
parts = [s["memory"] for s in stats["stages"]]
for p, w in zip(parts, want):
    assert sum(p.values()) == w, "the parts do not add up to memory_bytes: %s" % p
recs = [json.loads(l) for l in open(sys.argv[2]) if '"memory_bytes"' in l]
assert len(recs) == int(sys.argv[3]), "%d memory records for %s ranks" % (len(recs), sys.argv[3])
assert sorted(r["rank"] for r in recs) == list(range(len(recs))), "one record per rank"
worst = 0.0
for r in recs:
    w = want[r["stage"]]
    d = abs(r["memory_bytes"] - w) / w
    worst = max(worst, d)
    if d > 0.02:
        print("rank %d (stage %d): allocated %d, predicted %d (%.2f%%)" % (r["rank"], r["stage"], r["memory_bytes"], w, 100 * d))
        sys.exit(1)
print("%.6f" % worst)
PY
    ); then
        ok "$name: $np ranks allocate what pipec predicts (largest difference $(python3 -c "print('%.4g%%' % (100 * $verdict))"))"
        worst=$(python3 -c "print(max($worst, $verdict))")
    else
        not_ok "$name: allocated within 2% of the prediction" "$(printf '%s\n' "$verdict" | head -n 6)"
    fi
}

# the stage count that fits: the example's own, else fewer (the V
# schedules need two parts per stage, dualpipev two micro-batches)
fit() { # MODEL PIPEC_ARGS...
    local model=$1 s
    shift
    s=$("$PIPEC" "$model" "$@" --stats --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline"]["stages"])' 2>/dev/null)
    [ -n "$s" ] && { echo "$s"; return; }
    for s in 4 3 2 1; do
        "$PIPEC" "$model" "$@" -D stages=$s --stats --json >/dev/null 2>&1 && { echo "$s"; return; }
    done
    echo 0
}

example() { # NAME MODEL PIPEC_ARGS... -- PIPERT_ARGS...
    local name=$1 model=$2 cargs=() rargs=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cargs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    rargs=("$@")
    for sched in $SCHEDS; do
        for ac in 0 1; do
            local s
            s=$(fit "$model" "${cargs[@]}" -D "schedule=$sched" -D activation_checkpoint=$ac)
            [ "$s" -gt 0 ] || { not_ok "$name, $sched: no stage count compiles"; continue; }
            check "$name, $sched, activation_checkpoint = $ac" "$model" "$s" "${cargs[@]}" -D "schedule=$sched" \
                -D activation_checkpoint=$ac -D stages=$s -- "${rargs[@]}"
        done
    done
}

example mlp "$SRC/examples/mlp.pipe"
example alexnet "$SRC/examples/alexnet.pipe" -- --data "$TMP/cifar"
example fashion_mnist "$SRC/examples/fashion_mnist.pipe" "${FM[@]}"
example gpt_tiny "$SRC/examples/gpt_tiny.pipe" -- --data "$TMP/input.u16"
example llama_tiny "$SRC/examples/llama_tiny.pipe" -- --data "$TMP/input.u16"
example resnet_cifar "$SRC/examples/resnet_cifar.pipe" -D micro_batches=4 -D micro_batch_size=2 -- --data "$TMP/cifar"
# residual blocks: their layers' outputs and states inside the block's saved
# state, their inner gradients under split schedules, their scratch
example resnet "$SRC/tests/e2e/residual_cnn.pipe" -D stages=3
# a text schedule, and 2 replicas of each stage (each rank holds one replica)
check "mlp, a text schedule" "$SRC/examples/mlp.pipe" 2 -D 'schedule=file("custom.sched")'
check "fashion_mnist, 2 stages x 2 replicas" "$SRC/examples/fashion_mnist.pipe" 4 "${FM[@]}" -D data_parallel=2
check "tied MLP, activation_checkpoint = 2, zb-v" "$SRC/tests/e2e/tied_mlp.pipe" 2 -D stages=2 \
    -D schedule=zb-v -D activation_checkpoint=2
# batchnorm2d's buffers (running statistics, num_batches_tracked) count as
# parameters: every schedule with and without activation checkpointing on 2
# stages, and 2 replicas of each stage, with evaluation buffers
example bn_cnn "$SRC/tests/e2e/bn_cnn.pipe" -D stages=2
check "bn_cnn, 2 stages x 2 replicas, eval data" "$SRC/tests/e2e/bn_cnn.pipe" 4 -D stages=2 -D data_parallel=2 \
    -D micro_batches=4 -D "eval_data=synthetic(samples = 64)"
echo "# largest difference over all runs: $(python3 -c "print('%.4g%%' % (100 * $worst))")"
e2e_end
