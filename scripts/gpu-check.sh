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
#   3. runs the CUDA kernel tests, then the GEMM benchmark.
#
# Everything goes to OUTDIR, flat: 0-summary.txt (read this first),
# 1-env.txt, 2-configure.txt, 3-build.txt, 4-test_cuda_kernels.txt,
# 5-cuda_gemm.txt. Every step runs under `timeout`; the whole script stays
# within GPU_CHECK_BUDGET seconds (default 470, about 8 minutes).
# Exit status: 0 when the tests passed, 1 otherwise (skipped included: on a
# GPU machine a skip means the CUDA runtime saw no device).
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
for f in 0-summary 1-env 2-configure 3-build 4-test_cuda_kernels 5-cuda_gemm; do : >"$OUT/$f.txt"; done

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
if [ -n "$NCCL" ]; then say "NCCL: $NCCL_ROOT_ (libraries in $NCCL_LIB)"; else say "NCCL: not found (not needed yet)"; fi
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
TEST_BIN="" BENCH_BIN=""
if [ "${GPU_CHECK_DIRECT:-0}" != 1 ] && command -v cmake >/dev/null 2>&1; then
    TESTING=ON
    if ! pkg-config --exists check 2>/dev/null; then TESTING=OFF; fi
    if run "$OUT/2-configure.txt" 120 cmake -S "$SRC" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DPIPE_CUDA=ON \
        -DBUILD_TESTING=$TESTING -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
        ${CUDNN:+-DPIPE_CUDNN_ROOT="$CUDNN_ROOT_"} ${NCCL:+-DPIPE_NCCL_ROOT="$NCCL_ROOT_"}; then
        if run "$OUT/3-build.txt" 300 cmake --build "$BUILD/cmake" -j "$JOBS" --target test_cuda_kernels cuda_gemm; then
            METHOD="cmake (BUILD_TESTING=$TESTING, CMAKE_CUDA_ARCHITECTURES=$ARCH)"
            TEST_BIN=$BUILD/cmake/test_cuda_kernels BENCH_BIN=$BUILD/cmake/cuda_gemm
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
BLOG=$OUT/5-cuda_gemm.txt
run "$BLOG" 120 "$BENCH_BIN"
brc=$?
cat "$BLOG"
if [ $brc -eq 0 ]; then
    say "cuda_gemm: $(grep -E '_peak_tflops=' "$BLOG" | tr '\n' ' ')"
else
    say "cuda_gemm: exit $brc ($(tail -1 "$BLOG"))"
fi
say "total $(($(date +%s) - START)) s; logs in $OUT"
[ $trc -eq 0 ]
