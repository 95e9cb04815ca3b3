#!/usr/bin/env bash
# scripts/gpu-check.sh OUTDIR: the one script to run on a GPU machine (issue
# 5, docs/gpu.md). It needs no network and installs nothing:
#
#   1. prints nvidia-smi and finds nvcc, cuDNN and NCCL: in the CUDA toolkit,
#      in the usual library directories, or inside Python packages
#      (nvidia-cudnn-cu*, nvidia-nccl-cu*, as PyTorch's wheels bring them),
#      and puts their library directories on LD_LIBRARY_PATH;
#   2. builds test_cuda_kernels and cuda_gemm with CMake in a fresh directory
#      (BUILD_TESTING=OFF when Check is missing). When CMake is missing or the
#      project does not configure (no flex / bison / Open MPI / OpenBLAS
#      there), it compiles those two programs directly with nvcc and cc
#      (with a naive cblas_sgemm for the CPU reference kernels if there is
#      no BLAS);
#   3. runs the CUDA kernel tests;
#   4. when CMake also built pipec and pipert (Open MPI, flex, bison, OpenBLAS
#      there), the end-to-end checks of `pipert --device cuda`, most
#      important first: tests/e2e/tied_mlp.pipe, tied_gpt.pipe and
#      examples/mlp.pipe for 5 steps on --device cpu and --device cuda,
#      losses compared (1e-5 relative, fp32); then tied_gpt on 2 and 4 ranks
#      sharing the one GPU (the staged MPI transport) against its 1-rank
#      CUDA run;
#   5. the GEMM benchmark (--quick);
#   6. with a python3 that has torch and sees the GPU: pipert --device cuda
#      against PyTorch in samples/s (scripts/gpu_bench_torch.py): MLP,
#      AlexNet (examples/alexnet.pipe on synthetic data) and GPT-2 small
#      (bench/gpt2_small.pipe, 124M, bf16), one rank each.
#
# Everything goes to OUTDIR, flat: 0-summary.txt (read this first),
# 1-env.txt, 2-configure.txt, 3-build.txt, 4-test_cuda_kernels.txt,
# 5-cuda_gemm.txt, 6-e2e.txt, 7-bench_torch.txt. Every step runs under
# `timeout`; the whole script stays within GPU_CHECK_BUDGET seconds (default
# 470, about 8 minutes): a step that would start too close to it is skipped
# and says so. Exit status: 0 when the kernel tests and every end-to-end
# check passed, 1 otherwise (skipped included: on a GPU machine a skip
# means the CUDA runtime saw no device).
#
# Environment: GPU_CHECK_BUDGET (seconds), GPU_CHECK_JOBS (parallel compiles;
# default nproc), GPU_CHECK_DIRECT=1 (skip CMake),
# GPU_CHECK_NAIVE_BLAS=1 (direct build: use the naive cblas_sgemm even if
# OpenBLAS is there), CUDNN_ROOT / NCCL_ROOT (where to look first).
set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUDGET=${GPU_CHECK_BUDGET:-470}
START=$(date +%s)
JOBS=${GPU_CHECK_JOBS:-$(nproc 2>/dev/null || echo 4)}
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/pipe-gpu-check.XXXXXX") || exit 2
trap 'rm -rf "$BUILD"' EXIT
SUMMARY=$OUT/0-summary.txt
ENVLOG=$OUT/1-env.txt
for f in 0-summary 1-env 2-configure 3-build 4-test_cuda_kernels 5-cuda_gemm 6-e2e 7-bench_torch; do : >"$OUT/$f.txt"; done

say() { echo "$*" | tee -a "$SUMMARY"; }
note() { echo "$*" >>"$ENVLOG"; }
# seconds for a step: at most $1, and never past the budget
left() {
    local l=$((BUDGET - ($(date +%s) - START)))
    [ "$l" -gt "$1" ] && l=$1
    [ "$l" -lt 5 ] && l=5
    echo "$l"
}
# run LOG MAXSECONDS CMD...: output to the log (and the terminal), status kept
run() {
    local log=$1 t
    t=$(left "$2")
    shift 2
    echo "\$ $* (timeout ${t}s)" >>"$log"
    timeout -k 5 "$t" "$@" >>"$log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "(timed out after ${t}s)" >>"$log"
    return $rc
}

say "pipe gpu-check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), source $SRC ($(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"

# ---- 1. the machine ------------------------------------------------------------
GPUS=0
DRIVER_CUDA=""
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi 2>&1 | tee -a "$ENVLOG"
    GPUS=$(timeout 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    DRIVER_CUDA=$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)
    CAP=$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    say "GPUs: $GPUS ($(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)); driver supports CUDA ${DRIVER_CUDA:-?}"
else
    CAP=""
    say "nvidia-smi: not found (no NVIDIA driver?)"
fi

PYS=""
for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
    command -v "$py" >/dev/null 2>&1 && PYS="$PYS $py"
done
# directories of an nvidia.* Python package (e.g. cudnn), one per line
py_pkg_dirs() {
    for py in $PYS; do
        timeout 20 "$py" -c "import nvidia.$1 as m; print('\n'.join(m.__path__))" 2>/dev/null
    done | sort -u
}
# every nvidia/*/{include,lib} of the Python packages (the direct build's fallback)
py_nvidia_dirs() {
    for py in $PYS; do
        timeout 20 "$py" -c "import nvidia, os
for p in nvidia.__path__:
    for d in sorted(os.listdir(p)):
        for s in ('include', 'lib'):
            q = os.path.join(p, d, s)
            if os.path.isdir(q): print(q)" 2>/dev/null
    done | sort -u
}
SITE_DIRS=$(for py in $PYS; do timeout 20 "$py" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null; done | sort -u)

# version of an nvcc as a comparable number: 12.4 -> 1204
nvcc_version() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | awk '{print $1 * 100 + $2}'; }
# nvcc: the newest one the driver can run (its CUDA version <= the driver's)
NVCC=""
DRV=$(echo "${DRIVER_CUDA:-99.9}" | awk -F. '{print $1 * 100 + $2}')
CANDS=$( (command -v nvcc; ls -d /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc /opt/cuda/bin/nvcc 2>/dev/null
          for d in $(py_pkg_dirs cuda_nvcc); do echo "$d/bin/nvcc"; done) 2>/dev/null | while read -r f; do
          [ -x "$f" ] && readlink -f "$f"; done | awk '!seen[$0]++')
best=-1
for c in $CANDS; do
    v=$(nvcc_version "$c")
    note "nvcc candidate: $c (version code ${v:-?})"
    [ -z "$v" ] && continue
    if [ "$v" -le "$DRV" ] && [ "$v" -gt "$best" ]; then best=$v NVCC=$c; fi
done
if [ -z "$NVCC" ]; then NVCC=$(echo "$CANDS" | head -1); fi
if [ -z "$NVCC" ]; then
    say "nvcc: NOT FOUND (no CUDA toolkit): nothing can be built"
    exit 1
fi
CUDA_HOME_=$(dirname "$(dirname "$NVCC")")
say "nvcc: $NVCC ($("$NVCC" --version | grep release))"

# cuDNN / NCCL: a directory with include/<h> and lib*/<lib>*: $CUDNN_ROOT /
# $NCCL_ROOT, then the toolkit nvcc belongs to (built for its CUDA), then
# Python packages (PyTorch's), then the usual places
find_pkg() { # HEADER LIBGLOB PYPKG ENVROOT
    local hdr=$1 lib=$2 pkg=$3 root=$4 d l
    for d in $root "$CUDA_HOME_" "$CUDA_HOME_/targets/x86_64-linux" $(py_pkg_dirs "$pkg") /usr/local/cuda /usr /usr/local; do
        [ -d "$d" ] || continue
        l=$(ls "$d"/lib64/$lib "$d"/lib/$lib "$d"/lib/x86_64-linux-gnu/$lib 2>/dev/null | head -1)
        if [ -n "$l" ] && { [ -f "$d/include/$hdr" ] || [ -f "$d/include/x86_64-linux-gnu/$hdr" ]; }; then
            echo "$d|$(dirname "$l")"
            return 0
        fi
    done
    # last resort: a bounded search of the likely trees
    l=$(timeout 30 find /usr/local /usr/lib /usr/lib64 /opt $SITE_DIRS -maxdepth 6 -name "$lib" 2>/dev/null | head -1)
    if [ -n "$l" ]; then
        d=$(dirname "$(dirname "$l")")
        echo "$d|$(dirname "$l")"
        return 0
    fi
    return 1
}
CUDNN=$(find_pkg cudnn.h 'libcudnn.so*' cudnn "${CUDNN_ROOT:-}")
NCCL=$(find_pkg nccl.h 'libnccl.so*' nccl "${NCCL_ROOT:-}")
CUDNN_ROOT_=${CUDNN%%|*} CUDNN_LIB=${CUDNN##*|}
NCCL_ROOT_=${NCCL%%|*} NCCL_LIB=${NCCL##*|}
if [ -n "$CUDNN" ]; then
    say "cuDNN: $CUDNN_ROOT_ (libraries in $CUDNN_LIB: $(cd "$CUDNN_LIB" && ls libcudnn.so* | tr '\n' ' '))"
else
    say "cuDNN: NOT FOUND (looked in Python's nvidia.cudnn, $CUDA_HOME_, /usr, /usr/local, /opt)"
fi
if [ -n "$NCCL" ]; then say "NCCL: $NCCL_ROOT_ (libraries in $NCCL_LIB)"; else say "NCCL: not found (GPU ranks will use the staged MPI transport; on one GPU NCCL is not used anyway)"; fi
export LD_LIBRARY_PATH="${CUDNN_LIB:+$CUDNN_LIB:}${NCCL_LIB:+$NCCL_LIB:}$CUDA_HOME_/lib64:${LD_LIBRARY_PATH:-}"
note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
note "python: $PYS"
for py in $PYS; do note "$py: $(timeout 30 "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"; done
note "cmake: $(command -v cmake) $(cmake --version 2>/dev/null | head -1)"
note "cc: $(cc --version 2>/dev/null | head -1)"
ARCH=${CAP:+${CAP}-real}
ARCH=${ARCH:-90-real}

# ---- 2. build --------------------------------------------------------------------
METHOD=""
TEST_BIN="" BENCH_BIN="" PIPEC_BIN="" PIPERT_BIN=""
if [ "${GPU_CHECK_DIRECT:-0}" != 1 ] && command -v cmake >/dev/null 2>&1; then
    TESTING=ON
    if ! pkg-config --exists check 2>/dev/null; then TESTING=OFF; fi
    if run "$OUT/2-configure.txt" 120 cmake -S "$SRC" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DPIPE_CUDA=ON \
        -DBUILD_TESTING=$TESTING -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
        ${CUDNN:+-DPIPE_CUDNN_ROOT="$CUDNN_ROOT_"} ${NCCL:+-DPIPE_NCCL_ROOT="$NCCL_ROOT_"}; then
        if run "$OUT/3-build.txt" 300 cmake --build "$BUILD/cmake" -j "$JOBS" --target test_cuda_kernels cuda_gemm; then
            METHOD="cmake (BUILD_TESTING=$TESTING, CMAKE_CUDA_ARCHITECTURES=$ARCH)"
            TEST_BIN=$BUILD/cmake/test_cuda_kernels BENCH_BIN=$BUILD/cmake/cuda_gemm
            # the runtime, for the end-to-end checks: its failure costs only those
            if run "$OUT/3-build.txt" 240 cmake --build "$BUILD/cmake" -j "$JOBS" --target pipec pipert; then
                PIPEC_BIN=$BUILD/cmake/pipec PIPERT_BIN=$BUILD/cmake/pipert
            else
                say "pipec / pipert did not build (3-build.txt): no end-to-end checks"
            fi
        else
            say "cmake build FAILED (3-build.txt); trying the direct build"
        fi
    else
        say "cmake configure failed (2-configure.txt: $(grep -m1 -E 'Could NOT find|CMake Error' "$OUT/2-configure.txt" | head -1)); trying the direct build"
    fi
else
    echo "CMake not used (GPU_CHECK_DIRECT=${GPU_CHECK_DIRECT:-0}, cmake: $(command -v cmake || echo missing))" >>"$OUT/2-configure.txt"
fi

# The direct build: what CMake would do for these two programs, by hand.
direct_build() {
    local d=$BUILD/direct log=$OUT/3-build.txt
    mkdir -p "$d/naive" || return 1
    echo "---- direct build in $d" >>"$log"
    local sm=${CAP:-90}
    local inc="-I$SRC/kernels -I$CUDA_HOME_/include ${CUDNN:+-I$CUDNN_ROOT_/include}"
    local libs="-L$CUDA_HOME_/lib64 -lcublas"
    local x
    for x in $(py_nvidia_dirs); do
        case $x in */include) inc="$inc -I$x" ;; */lib) libs="$libs -L$x" ;; esac
    done
    local cudnnlib
    cudnnlib=$(ls "$CUDNN_LIB"/libcudnn.so "$CUDNN_LIB"/libcudnn.so.[0-9]* 2>/dev/null | head -1)
    [ -z "$cudnnlib" ] && { echo "no libcudnn" >>"$log"; return 1; }
    # BLAS for the CPU reference kernels: OpenBLAS if its header and library are there
    local blasinc="" blaslib=""
    if [ "${GPU_CHECK_NAIVE_BLAS:-0}" = 1 ]; then
        :
    elif pkg-config --exists openblas 2>/dev/null; then
        blasinc=$(pkg-config --cflags openblas) blaslib=$(pkg-config --libs openblas)
    else
        for h in /usr/include/cblas.h /usr/include/x86_64-linux-gnu/cblas.h /usr/include/openblas/cblas.h \
                 /usr/local/include/cblas.h; do
            [ -f "$h" ] || continue
            for l in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
                if ls "$l"/libopenblas.so* >/dev/null 2>&1; then
                    blasinc="-I$(dirname "$h")" blaslib="-L$l -lopenblas"
                    break 2
                fi
            done
        done
    fi
    local blassrc=""
    if [ -z "$blaslib" ]; then
        echo "no OpenBLAS: a naive cblas_sgemm for the CPU reference (slow, exact enough)" >>"$log"
        cat >"$d/naive/cblas.h" <<'EOF'
/* a naive cblas_sgemm (row-major only), written by scripts/gpu-check.sh */
#ifndef CBLAS_H
#define CBLAS_H
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };
void cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
#endif
EOF
        cat >"$d/naive/cblas.c" <<'EOF'
#include "cblas.h"
void cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    (void)o;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta == CblasTrans ? a[p * lda + i] : a[i * lda + p]) *
                     (double)(tb == CblasTrans ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = beta == 0.0f ? alpha * (float)s : alpha * (float)s + beta * c[i * ldc + j];
        }
}
EOF
        blasinc="-I$d/naive" blassrc="$d/naive/cblas.c"
    fi
    local cflags="-std=c11 -O2 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter"
    local objs="" f o
    for f in "$SRC"/kernels/cuda/*.cu; do
        o=$d/$(basename "$f" .cu).o
        run "$log" 300 "$NVCC" -std=c++17 -O3 --fmad=false -gencode "arch=compute_$sm,code=sm_$sm" $inc \
            -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter -c "$f" -o "$o" || return 1
        objs="$objs $o"
    done
    for f in "$SRC"/kernels/cpu/k_dense.c "$SRC"/kernels/cpu/k_pointwise.c "$SRC"/kernels/cpu/k_random.c \
             "$SRC"/kernels/cpu/k_block.c $blassrc; do
        o=$d/cpu_$(basename "$f" .c).o
        run "$log" 120 cc $cflags -O3 $blasinc -I"$SRC/kernels" -c "$f" -o "$o" || return 1
        objs="$objs $o"
    done
    run "$log" 60 cc $cflags -ffp-contract=off -I"$SRC/runtime" -I"$SRC/compiler" -I"$SRC/grammar" \
        -I"$SRC/schedules" -c "$SRC/runtime/rt_optim.c" -o "$d/rt_optim.o" || return 1
    run "$log" 60 cc $cflags $inc -I"$SRC/runtime" -I"$SRC/compiler" -I"$SRC/grammar" -I"$SRC/schedules" \
        -c "$SRC/tests/test_cuda_kernels.c" -o "$d/test.o" || return 1
    run "$log" 60 cc $cflags $inc -c "$SRC/bench/cuda_gemm.c" -o "$d/bench.o" || return 1
    local rpath="-Xlinker -rpath -Xlinker $CUDA_HOME_/lib64 -Xlinker -rpath -Xlinker $CUDNN_LIB"
    run "$log" 120 "$NVCC" -o "$d/test_cuda_kernels" "$d/test.o" $objs "$d/rt_optim.o" $libs "$cudnnlib" $blaslib -lm \
        $rpath || return 1
    run "$log" 120 "$NVCC" -o "$d/cuda_gemm" "$d/bench.o" $objs $libs "$cudnnlib" $blaslib -lm $rpath || return 1
    TEST_BIN=$d/test_cuda_kernels BENCH_BIN=$d/cuda_gemm
}
if [ -z "$METHOD" ]; then
    if [ -z "$CUDNN" ]; then
        say "direct build impossible: no cuDNN"
    elif direct_build; then
        METHOD="direct (nvcc + cc, sm_${CAP:-90}$([ -f "$BUILD/direct/naive/cblas.h" ] && echo ', naive BLAS'))"
    else
        say "direct build FAILED (3-build.txt)"
    fi
fi
[ -f "$OUT/3-build.txt" ] && grep -i -E 'warning' "$OUT/3-build.txt" | head -20 >"$BUILD/warnings.txt"
if [ -z "$METHOD" ]; then
    say "RESULT: nothing built"
    tail -30 "$OUT/3-build.txt" 2>/dev/null
    exit 1
fi
say "built: $METHOD, in $(($(date +%s) - START)) s so far; compiler warnings: $(wc -l <"$BUILD/warnings.txt")"

# ---- 3. run -------------------------------------------------------------------------
TLOG=$OUT/4-test_cuda_kernels.txt
run "$TLOG" 240 "$TEST_BIN"
trc=$?
cat "$TLOG"
if [ $trc -eq 0 ]; then
    say "test_cuda_kernels: PASSED ($(tail -1 "$TLOG"))"
elif [ $trc -eq 77 ]; then
    say "test_cuda_kernels: SKIPPED, the CUDA runtime sees no device: $(grep -m1 cudaGetDeviceCount "$TLOG")"
else
    say "test_cuda_kernels: FAILED (exit $trc): $(grep -c '^FAIL' "$TLOG") failing lines; $(tail -1 "$TLOG")"
    grep '^FAIL' "$TLOG" | head -20 | tee -a "$SUMMARY"
fi

# ---- 4. end to end: pipert --device cuda against --device cpu -------------------------
ELOG=$OUT/6-e2e.txt
erc=0
E2E=$BUILD/e2e
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# a run's losses, "step loss" per line, from --metrics (9 digits)
losses() { sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/p' "$1"; }
# pipert_run NAME NP DEVICE PLAN [ARGS...]: 5 steps, metrics in $E2E/NAME.jsonl
pipert_run() {
    local name=$1 np=$2 dev=$3 plan=$4
    shift 4
    rm -f "$E2E/$name.jsonl"
    run "$ELOG" 90 mpirun --oversubscribe -np "$np" "$PIPERT_BIN" "$plan" --device "$dev" --steps 5 --log-every 1 \
        --metrics "$E2E/$name.jsonl" "$@"
}
# compare A B TOL: the same 5 steps, every loss within TOL (relative)
compare() {
    local r
    r=$(paste <(losses "$E2E/$1.jsonl") <(losses "$E2E/$2.jsonl") | awk -v tol="$3" '
        { n++; d = $2 - $4; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; rel = m > 0 ? d / m : d
          if (rel > worst) worst = rel; if ($1 != $3) bad = 1 }
        END { if (n != 5 || bad) { print "FAIL: " n " steps compared"; exit }
              printf "%s, max relative difference %.2e\n", (worst <= tol ? "ok" : "FAIL"), worst }')
    echo "compare $1 $2 (tolerance $3): ${r:-FAIL: no losses}" >>"$ELOG"
    paste <(losses "$E2E/$1.jsonl") <(losses "$E2E/$2.jsonl") >>"$ELOG"
    say "  $1 vs $2: ${r:-FAIL: no losses (6-e2e.txt)}"
    case $r in ok*) return 0 ;; *) return 1 ;; esac
}
if [ -z "$PIPERT_BIN" ]; then
    say "end to end: not run (no pipert built)"
    erc=1
elif [ $trc -ne 0 ]; then
    say "end to end: not run (the kernel tests did not pass)"
    erc=1
else
    mkdir -p "$E2E"
    say "end to end (6-e2e.txt):"
    # tied_gpt's tokens: ids 1..63 (0 is its pad), little-endian uint16
    LC_ALL=C awk 'BEGIN { srand(5); for (i = 0; i < 4000; i++) printf "%c%c", 1 + int(rand() * 63), 0 }' >"$E2E/tokens.u16"
    sed "s|TOKENS|$E2E/tokens.u16|" "$SRC/tests/e2e/tied_gpt.pipe" >"$E2E/tied_gpt.pipe"
    for m in "$SRC/tests/e2e/tied_mlp.pipe" "$E2E/tied_gpt.pipe" "$SRC/examples/mlp.pipe"; do
        b=$(basename "$m" .pipe)
        if [ "$(left 100)" -lt 60 ]; then say "  $b: skipped (budget)"; erc=1; continue; fi
        run "$ELOG" 30 "$PIPEC_BIN" "$m" -o "$E2E/$b.bin" || { say "  $b: pipec FAILED"; erc=1; continue; }
        np=1; [ "$b" = mlp ] && np=2   # examples/mlp.pipe has 2 stages
        pipert_run "$b-cpu" "$np" cpu "$E2E/$b.bin" || { say "  $b: the CPU run FAILED"; erc=1; continue; }
        if ! pipert_run "$b-cuda" "$np" cuda "$E2E/$b.bin" --verbose; then
            say "  $b: the CUDA run FAILED: $(grep -E '^\[rank [0-9]+\] |^pipert: ' "$ELOG" | tail -1)"
            erc=1
            continue
        fi
        compare "$b-cpu" "$b-cuda" 1e-5 || erc=1
    done
    # several ranks on the one GPU: the staged MPI transport, a tie across
    # stages, then data parallel too
    for cfg in "2 -D stages=2" "4 -D stages=2 -D data_parallel=2"; do
        np=${cfg%% *} defs=${cfg#* }
        if [ "$(left 100)" -lt 45 ]; then say "  tied_gpt on $np ranks: skipped (budget)"; erc=1; continue; fi
        # shellcheck disable=SC2086
        run "$ELOG" 30 "$PIPEC_BIN" "$E2E/tied_gpt.pipe" $defs -o "$E2E/tgpt$np.bin" || { erc=1; continue; }
        if ! pipert_run "tied_gpt-cuda-np$np" "$np" cuda "$E2E/tgpt$np.bin" --verbose; then
            say "  tied_gpt on $np ranks: FAILED: $(grep -E '^\[rank [0-9]+\] |^pipert: ' "$ELOG" | tail -1)"
            erc=1
            continue
        fi
        compare tied_gpt-cuda "tied_gpt-cuda-np$np" 1e-5 || erc=1
    done
    grep -h -o 'transport [a-z-]*' "$ELOG" | sort | uniq -c | sed 's/^/  /' >>"$SUMMARY"
fi

BLOG=$OUT/5-cuda_gemm.txt
run "$BLOG" 120 "$BENCH_BIN" --quick
brc=$?
cat "$BLOG"
if [ $brc -eq 0 ]; then
    say "cuda_gemm: $(grep -E '_peak_tflops=' "$BLOG" | tr '\n' ' ')"
else
    say "cuda_gemm: exit $brc ($(tail -1 "$BLOG"))"
fi

# ---- 6. against PyTorch ----------------------------------------------------------------------
TLOG2=$OUT/7-bench_torch.txt
TORCH_PY=""
for py in $PYS; do
    if timeout 60 "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
        TORCH_PY=$py
        break
    fi
done
# bench_one NAME PIPE STEPS [PIPEC -D ...]: pipert --device cuda on one rank
bench_one() {
    local name=$1 src=$2 steps=$3 sps
    shift 3
    if [ "$(left 100)" -lt 50 ]; then say "  pipert $name: skipped (budget)"; return; fi
    run "$TLOG2" 30 "$PIPEC_BIN" "$src" -D stages=1 "$@" -o "$E2E/bench-$name.bin" || { say "  pipert $name: pipec FAILED"; return; }
    run "$TLOG2" 150 "$PIPERT_BIN" "$E2E/bench-$name.bin" --device cuda --steps "$steps" --log-every "$steps" \
        ${DATA:+--data "$DATA"}
    sps=$(grep -E '^trained ' "$TLOG2" | tail -1 | sed -n 's/.*(\([0-9.]*\) samples\/s).*/\1/p')
    say "  pipert $name: ${sps:-FAILED} samples/s ($steps steps on one rank, the first included)"
    LAST_SPS=${sps:-}
}
if [ -z "$PIPERT_BIN" ] || [ $trc -ne 0 ] || [ $erc -ne 0 ]; then
    say "PyTorch benchmark: not run (pipert --device cuda did not pass the checks above)"
elif [ -z "$TORCH_PY" ]; then
    say "PyTorch benchmark: not run (no python3 with torch that sees a CUDA device)"
else
    say "PyTorch benchmark (7-bench_torch.txt):"
    mkdir -p "$E2E"
    LC_ALL=C awk 'BEGIN { srand(1); for (i = 0; i < 40000; i++) { t = int(rand() * 50257); printf "%c%c", t % 256, int(t / 256) } }' \
        >"$E2E/gpt2.u16"
    DATA="" bench_one mlp "$SRC/examples/mlp.pipe" 50
    DATA="" bench_one alexnet "$SRC/examples/alexnet.pipe" 6 -D "data=synthetic(samples = 1024)" -D micro_batches=8
    DATA=$E2E/gpt2.u16 bench_one gpt2 "$SRC/bench/gpt2_small.pipe" 6
    # the fraction of the card's measured bf16 GEMM peak (5-cuda_gemm.txt)
    # the GPT-2 run reaches: samples/s x 3 x forward FLOPs per sample
    # (pipec's total_flops; a training step is about 3 forward passes)
    peak=$(grep -o 'bf16_peak_tflops=[0-9.]*' "$BLOG" | tail -1 | cut -d= -f2)
    fwd=$("$PIPEC_BIN" "$SRC/bench/gpt2_small.pipe" -D stages=1 --stats --json 2>/dev/null |
        grep -o '"total_flops": *[0-9]*' | grep -o '[0-9]*$')
    if [ -n "${LAST_SPS:-}" ] && [ -n "$peak" ] && [ -n "$fwd" ]; then
        say "  pipert gpt2: $(awk -v s="$LAST_SPS" -v f="$fwd" -v p="$peak" \
            'BEGIN { t = s * 3 * f / 1e12; printf "%.1f TFLOP/s = %.1f%% of the measured bf16 GEMM peak (%.0f TFLOP/s)", t, 100 * t / p, p }')"
    fi
    for w in mlp alexnet gpt2; do
        if [ "$(left 100)" -lt 40 ]; then say "  torch $w: skipped (budget)"; continue; fi
        run "$TLOG2" 120 "$TORCH_PY" "$SRC/scripts/gpu_bench_torch.py" "$w"
        say "  $(grep -E "^torch $w " "$TLOG2" | tail -1 || true)"
    done
fi
say "end to end: $([ $erc -eq 0 ] && echo passed || echo 'FAILED or incomplete')"
say "total $(($(date +%s) - START)) s; logs in $OUT"
[ $trc -eq 0 ] && [ $erc -eq 0 ]
