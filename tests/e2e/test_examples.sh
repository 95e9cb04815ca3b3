#!/usr/bin/env bash
# Every example compiles and trains: each examples/*.pipe (and mlp.pipe with
# examples/custom.sched) is compiled and run for 2 steps under mpirun with
# as many ranks as it has stages, on small or synthetic data, so no example
# rots. Each run must exit 0 and print "step 2/2 loss".
#   test_examples.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-examples "$@"

# The stage count of a .pipe file (with its -D overrides): the ranks to run.
stages() {
    "$PIPEC" "$@" --stats --json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["pipeline"]["stages"])'
}

# example NAME FILE.pipe [PIPEC_ARGS...] -- [PIPERT_ARGS...]
example() {
    local name=$1 file=$2; shift 2
    local cargs=() rargs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cargs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    rargs=("$@")
    local bin="$TMP/$name.bin" n rc
    if "$PIPEC" "$file" "${cargs[@]}" -o "$bin" >"$TMP/out" 2>&1; then
        ok "$name: compiles"
    else
        not_ok "$name: compiles (exit $?)"; return
    fi
    n=$(stages "$file" "${cargs[@]}")
    if ! [ "$n" -ge 1 ] 2>/dev/null; then
        echo "pipec --stats --json gave no stage count" >"$TMP/out"; not_ok "$name: stage count"; return
    fi
    "${MPI[@]}" "$n" "$PIPERT" "$bin" --steps 2 "${rargs[@]}" >"$TMP/out" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ] && grep -Eq '^step 2/2 loss [0-9.]+' "$TMP/out"; then
        ok "$name: trains 2 steps on $n ranks"
    else
        not_ok "$name: trains 2 steps on $n ranks (exit $rc, want 0 and a 'step 2/2 loss' line)"
    fi
}

# Every example must be covered below: a new one fails here until it is.
for f in "$SRC"/examples/*.pipe; do
    case $(basename "$f") in
        mlp.pipe | alexnet.pipe | fashion_mnist.pipe | gpt_tiny.pipe | llama_tiny.pipe | resnet_cifar.pipe | resnet.pipe) ;;
        *) echo "no data for this example: add it to test_examples.sh" >"$TMP/out"
           not_ok "$(basename "$f"): covered by this test" ;;
    esac
done

# mlp: synthetic data, as it is; then with the hand-written schedule.
example mlp "$SRC/examples/mlp.pipe"
example mlp+custom.sched "$SRC/examples/mlp.pipe" -D 'schedule=file("custom.sched")'

# alexnet: a tiny CIFAR-10 binary batch (1 label byte + 3072 pixel bytes a
# record, 32 records), tiny micro-batches (AlexNet at 224 is ~1.4 GFLOP per
# sample forward).
mkdir -p "$TMP/cifar"
python3 - "$TMP/cifar/data_batch_1.bin" <<'PY'
import random, sys
r = random.Random(1)
rec = bytearray()
for i in range(32):
    rec.append(i % 10)
    rec += bytes(r.randrange(256) for _ in range(3072))
open(sys.argv[1], "wb").write(rec)
PY
example alexnet "$SRC/examples/alexnet.pipe" -D micro_batches=2 -D micro_batch_size=2 -- --data "$TMP/cifar"
# resnet_cifar (residual blocks): the same batch, at 32x32, under its zb-h1
example resnet_cifar "$SRC/examples/resnet_cifar.pipe" -D micro_batches=2 -D micro_batch_size=2 -- --data "$TMP/cifar"

# fashion_mnist: Debian's dataset when installed, else synthetic; a small
# synthetic evaluation set either way.
fm=/usr/share/datasets/fashion-mnist
fmargs=(-D "eval_data=synthetic(samples = 64)")
if [ ! -f "$fm/train-images-idx3-ubyte.gz" ] || [ ! -f "$fm/train-labels-idx1-ubyte.gz" ]; then
    fmargs+=(-D "data=synthetic(samples = 256)")
fi
example fashion_mnist "$SRC/examples/fashion_mnist.pipe" "${fmargs[@]}"
# resnet (batchnorm2d inside residual blocks) on the same data
example resnet "$SRC/examples/resnet.pipe" "${fmargs[@]}"

# gpt_tiny: byte-level tokens of README.md, made by scripts/text_to_tokens.py.
if python3 "$SRC/scripts/text_to_tokens.py" "$SRC/README.md" "$TMP/input.u16" >"$TMP/out" 2>&1 &&
    grep -Eq '^[0-9]+ tokens written' "$TMP/out"; then
    ok "text_to_tokens.py: README.md to $(cut -d' ' -f1 "$TMP/out") tokens"
else
    not_ok "text_to_tokens.py: README.md to tokens"
fi
python3 "$SRC/scripts/text_to_tokens.py" "$SRC/README.md" "$TMP/x.u16" --vocab 100 >"$TMP/out" 2>&1
if [ $? -ne 0 ] && grep -q 'vocab >= 256' "$TMP/out"; then
    ok "text_to_tokens.py: --vocab under 256 refused"
else
    not_ok "text_to_tokens.py: --vocab under 256 refused"
fi
example gpt_tiny "$SRC/examples/gpt_tiny.pipe" -- --data "$TMP/input.u16"
# llama_tiny: the same tokens.
example llama_tiny "$SRC/examples/llama_tiny.pipe" -- --data "$TMP/input.u16"

e2e_end
