#!/usr/bin/env bash
# pipert --device (issue 5, docs/gpu.md): on a machine without a usable
# GPU, `--device cuda` ends every rank with one clear message and exit 1,
# in seconds, never a hang; a pipert built without CUDA says so instead.
# On a machine with a GPU the run trains, and this test only checks that.
#   test_device.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipert-device "$@"
mpi_timeout 60
"$PIPEC" "$SRC/examples/mlp.pipe" -o "$TMP/mlp.bin" || exit 2
"$PIPEC" "$SRC/examples/mlp.pipe" -D stages=1 -o "$TMP/mlp1.bin" || exit 2

"$PIPERT" "$TMP/mlp1.bin" --device tpu >"$TMP/out" 2>&1; rc=$?
check_rc "an unknown device" 1 '^pipert: --device tpu: unknown device \(cpu or cuda\)$'
"$PIPERT" --version >"$TMP/out" 2>&1; rc=$?
check_rc "--version names the devices" 0 '^pipert [0-9].*devices: cpu'

# the CPU path maps no CUDA library: the backend is a module loaded for --device cuda only
if command -v ldd >/dev/null; then
    ldd "$PIPERT" >"$TMP/out" 2>&1
    grep -E -q 'libcudart|libcublas|libcudnn|libnccl' "$TMP/out" && rc=1 || rc=0
    echo "ldd done" >>"$TMP/out"
    check_rc "pipert itself links no CUDA library" 0 'ldd done'
    "$PIPERT" --version >"$TMP/out" 2>&1
fi
if ! grep -q 'devices: cpu, cuda' "$TMP/out"; then
    "$PIPERT" "$TMP/mlp1.bin" --device cuda >"$TMP/out" 2>&1; rc=$?
    check_rc "--device cuda without CUDA support: says so" 1 \
        '^pipert: --device cuda: this pipert was built without CUDA \(PIPE_CUDA=OFF or no toolkit\)$'
else
    for np in 1 2; do
        plan=$TMP/mlp.bin; [ "$np" = 1 ] && plan=$TMP/mlp1.bin
        t0=$SECONDS
        "${MPI[@]}" "$np" "$PIPERT" "$plan" --device cuda --steps 2 >"$TMP/out" 2>&1; rc=$?
        secs=$((SECONDS - t0))
        if [ "$rc" -eq 0 ] && grep -q '^trained 2 steps' "$TMP/out"; then
            ok "$np rank(s): a CUDA device is present and trained (the no-device message is not checked here)"
            continue
        fi
        [ "$rc" -eq 124 ] && echo "timed out" >>"$TMP/out"
        [ "$secs" -gt 20 ] && echo "took $secs s" >>"$TMP/out" && rc=3
        [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$rc" -ne 124 ] && rc=1
        check_rc "$np rank(s), --device cuda with no usable GPU: one clear message, exit 1, in seconds ($secs s)" 1 \
            '^pipert: --device cuda: no CUDA device \(cudaGetDeviceCount: .+\)$'
        n=$(grep -c 'no CUDA device' "$TMP/out")
        [ "$n" = 1 ] && rc=0 || rc=1
        echo "said $n times" >"$TMP/out"
        check_rc "$np rank(s): the message once, not once per rank" 0 'said 1 times'
    done
fi

# ---- --device cuda's code on this machine: tests/rt_cuda_fake.c ------------------------
# pipert-cuda-fake.so is rt_cuda.c over a host stand-in for CUDA whose
# kernels are the CPU's: every path of --device cuda that is not CUDA itself
# (the GPU branches of the interpreter, staging, the staged transport, the
# loss queue, norm, update, tied weights, checkpoints) must give the CPU's
# losses and weights bit for bit.
# (built with the CUDA backend; a stale file of an earlier build does not count)
FAKE=$(dirname "$PIPERT")/pipert-cuda-fake.so
if [ -f "$FAKE" ] && "$PIPERT" --version | grep -q 'devices: cpu, cuda'; then
    cat >"$TMP/cnn.pipe" <<'EOF'
model cnn {
    input  image: float32[3, 16, 16]
    target label: int32[]
    conv2d(8, kernel = 3, padding = 1)
    relu
    maxpool2d(kernel = 2)
    conv2d(8, kernel = 3, padding = 1)
    tanh
    avgpool2d(kernel = 2)
    adaptive_avgpool2d(2, 2)
    flatten
    dropout(0.1)
    linear(16)
    gelu
    layernorm
    linear(16)
    sigmoid
    linear(10)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 4; micro_batch_size = 4; schedule = zb-h1; activation_checkpoint = 2 }
train { optimizer = sgd(lr = 0.05, momentum = 0.9, nesterov = true); steps = 5; seed = 7; grad_clip = 0.5
        data = synthetic(samples = 256); eval_data = synthetic(samples = 40); eval_every = 2 }
EOF
    cat >"$TMP/reg.pipe" <<'EOF'
model reg {
    input  x: float32[8]
    target y: float32[4]
    linear(16)
    relu
    linear(4)
    loss mse
}
pipeline { stages = 1; micro_batches = 2; micro_batch_size = 4; schedule = gpipe }
train { optimizer = adam(lr = 0.01); steps = 5; seed = 2; data = synthetic(samples = 64) }
EOF
    python3 -c 'import random, struct, sys
r = random.Random(5); t = [r.randrange(1, 64) for _ in range(4000)]
open(sys.argv[1], "wb").write(struct.pack("<%dH" % len(t), *t))' "$TMP/tokens.u16" || exit 2
    sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/tied_gpt.pipe" >"$TMP/tied_gpt.pipe"
    sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/llama_gqa.pipe" >"$TMP/llama_gqa.pipe"
    # same NAME NP PIPE [PIPEC -D ...]: the CPU run and the fake GPU run, 5
    # steps, every logged loss (9 digits) the same; the stand-in's block
    # products come from packed weights where the CPU's do (rt_cuda_fake.c)
    same() {
        local name=$1 np=$2 src=$3
        shift 3
        "$PIPEC" "$src" "$@" -o "$TMP/$name.bin" >"$TMP/out" 2>&1 || { rc=2; check_rc "$name: pipec" 0 x; return; }
        "$PIPEC" "$src" "$@" --stats --json >"$TMP/$name-stats.json" 2>"$TMP/out" || { rc=2; check_rc "$name: pipec --stats" 0 x; return; }
        "${MPI[@]}" "$np" "$PIPERT" "$TMP/$name.bin" --steps 5 --log-every 1 --metrics "$TMP/$name-cpu.jsonl" \
            >"$TMP/out" 2>&1; rc=$?
        [ "$rc" -ne 0 ] && { check_rc "$name: the CPU run" 0 x; return; }
        "${MPI[@]}" "$np" -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/$name.bin" --device cuda --steps 5 \
            --log-every 1 --metrics "$TMP/$name-gpu.jsonl" >"$TMP/out" 2>&1; rc=$?
        if [ "$rc" -eq 0 ]; then
            # the steps' records; the memory records apart (the CPU's
            # packed weights are an arena --device cuda does not allocate):
            # each rank's against pipec's memory_bytes_cuda for its stage
            grep -v '"memory_bytes"' "$TMP/$name-cpu.jsonl" | sed 's/, "samples_per_s.*//' >"$TMP/a"
            grep -v '"memory_bytes"' "$TMP/$name-gpu.jsonl" | sed 's/, "samples_per_s.*//' >"$TMP/b"
            { [ -s "$TMP/a" ] && cmp -s "$TMP/a" "$TMP/b" && python3 - "$TMP/$name-stats.json" "$TMP/$name-gpu.jsonl" "$np" 2>&1 <<'PY' && echo same; } >"$TMP/out" || { rc=1; diff "$TMP/a" "$TMP/b" >>"$TMP/out"; }
import json, sys
want = [s["memory_bytes_cuda"] for s in json.load(open(sys.argv[1]))["stages"]]
recs = [json.loads(l) for l in open(sys.argv[2]) if '"memory_bytes"' in l]
assert len(recs) == int(sys.argv[3]), "%d memory records for %s ranks" % (len(recs), sys.argv[3])
for r in recs:
    w = want[r["stage"]]
    if abs(r["memory_bytes"] - w) > 0.02 * w:
        sys.exit("rank %d (stage %d): allocated %d on the device path, pipec predicted %d" % (r["rank"], r["stage"], r["memory_bytes"], w))
PY
        fi
        check_rc "--device cuda (host stand-in) gives the CPU's losses: $name, $np rank(s)" 0 '^same$'
    }
    same tied_mlp 1 "$SRC/tests/e2e/tied_mlp.pipe"
    same tied_mlp-zbh1 2 "$SRC/tests/e2e/tied_mlp.pipe" -D stages=2 -D schedule=zb-h1
    same tied_gpt-dp2 4 "$TMP/tied_gpt.pipe" -D stages=2 -D data_parallel=2
    same tied_gpt-interleaved 2 "$TMP/tied_gpt.pipe" -D stages=2 -D "schedule=interleaved(chunks = 2)"
    same llama_gqa-zbh1 2 "$TMP/llama_gqa.pipe" -D stages=2 -D schedule=zb-h1
    same llama_gqa-ac2 1 "$TMP/llama_gqa.pipe" -D activation_checkpoint=2
    same cnn 2 "$TMP/cnn.pipe"
    same reg 1 "$TMP/reg.pipe"
    # batchnorm2d: its running statistics on the device (updated once per
    # micro-batch, not by the recompute; read by evaluation every 2 steps;
    # replica 0's taken by the others after each step)
    same bn_cnn-zbh1-ac1 2 "$SRC/tests/e2e/bn_cnn.pipe" -D stages=2 -D schedule=zb-h1 -D activation_checkpoint=1 \
        -D "eval_data=synthetic(samples = 64)" -D eval_every=2
    same bn_cnn-dp2 4 "$SRC/tests/e2e/bn_cnn.pipe" -D stages=2 -D data_parallel=2 -D micro_batches=4 \
        -D "eval_data=synthetic(samples = 64)" -D eval_every=2
    # and its checkpoints: the buffers copied back from the device are the CPU's
    "$PIPEC" "$SRC/tests/e2e/bn_cnn.pipe" -D stages=2 -o "$TMP/bnck.bin" || exit 2
    "${MPI[@]}" 2 "$PIPERT" "$TMP/bnck.bin" --steps 3 --save "$TMP/bnck-cpu" >"$TMP/out" 2>&1 &&
        "${MPI[@]}" 2 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/bnck.bin" --device cuda --steps 3 \
            --save "$TMP/bnck-gpu" >>"$TMP/out" 2>&1; rc=$?
    for f in stage-0 stage-1; do
        cmp "$TMP/bnck-cpu/latest/$f.safetensors" "$TMP/bnck-gpu/latest/$f.safetensors" >>"$TMP/out" 2>&1 || rc=1
    done
    grep -q running_mean "$TMP/bnck-gpu/latest/stage-0.safetensors" || rc=1
    echo "compared" >>"$TMP/out"
    check_rc "--device cuda (host stand-in) --save: batchnorm2d's running statistics are the CPU's" 0 compared
    # residual blocks: their layers through the CUDA table, their additions
    # through the backend's add; split (zb-h1) and recomputed (ac) too
    same resnet-zbh1 2 "$SRC/tests/e2e/residual_cnn.pipe" -D stages=2 -D schedule=zb-h1
    same resnet-ac1 1 "$SRC/tests/e2e/residual_cnn.pipe" -D activation_checkpoint=1
    # checkpoints: the weights written from the device are the CPU's, and a
    # resumed run continues as the CPU's does (a model of narrow linears:
    # the CPU computes wide ones from packed weights, kernels/cpu/k_gemm.c,
    # whose bits are not the stand-in's sgemm's)
    "$PIPEC" "$SRC/tests/e2e/tied_mlp.pipe" -D stages=2 -D "optimizer=adam(lr = 0.01)" -D steps=20 \
        -o "$TMP/ck.bin" || exit 2
    "${MPI[@]}" 2 "$PIPERT" "$TMP/ck.bin" --steps 3 --save "$TMP/ck-cpu" >"$TMP/out" 2>&1 &&
        "${MPI[@]}" 2 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/ck.bin" --device cuda --steps 3 --save "$TMP/ck-gpu" \
            >>"$TMP/out" 2>&1; rc=$?
    for f in stage-0 stage-1 optim-0 optim-1; do
        cmp "$TMP/ck-cpu/latest/$f.safetensors" "$TMP/ck-gpu/latest/$f.safetensors" >>"$TMP/out" 2>&1 || rc=1
    done
    echo "compared" >>"$TMP/out"
    check_rc "--device cuda (host stand-in) --save: the same weights and optimizer state as the CPU's" 0 compared
    "${MPI[@]}" 2 "$PIPERT" "$TMP/ck.bin" --steps 6 --log-every 1 --resume "$TMP/ck-cpu" >"$TMP/a" 2>&1 &&
        "${MPI[@]}" 2 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/ck.bin" --device cuda --steps 6 --log-every 1 \
            --resume "$TMP/ck-gpu" >"$TMP/b" 2>&1; rc=$?
    diff <(grep '^step' "$TMP/a" | cut -d' ' -f1-3) <(grep '^step' "$TMP/b" | cut -d' ' -f1-3) >"$TMP/out" || rc=1
    grep -q '^step 6/6' "$TMP/b" || rc=1
    echo "resumed" >>"$TMP/out"
    check_rc "--device cuda (host stand-in) --resume continues as the CPU does" 0 resumed
fi
e2e_end
