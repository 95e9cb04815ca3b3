#!/usr/bin/env bash
# scripts/gpu-check.sh [--dry-run] [options] OUTDIR: the one script to run on
# a GPU machine (issues 5 and 17, docs/gpu.md, "On a GPU machine"). It needs
# no network and installs nothing outside /tmp. Six sections, in this order,
# each independent of the others' outcome, each with its own log in OUTDIR
# and one result line on stdout and in OUTDIR/summary.txt:
#
#   SECTION: ok|FAIL|skip - detail
#
#   build       cmake configure and build (pipec, pipert and pipert-cuda.so,
#               test_cuda_kernels, cuda_gemm), with what the machine has:
#               the generated parser when flex or bison is missing, Open MPI,
#               OpenBLAS, zlib and pkg-config unpacked from the carried
#               Debian packages when missing (scripts/gpu-prepare.sh); if
#               CMake cannot configure, test_cuda_kernels and cuda_gemm
#               compiled directly with nvcc and cc
#   kernels     test_cuda_kernels: every CUDA kernel against its CPU kernel
#   gemm        cuda_gemm: cuBLAS bf16 / tf32 / fp32 up to 8192^3, the
#               card's measured peak per precision
#   torch       scripts/gpu_bench_torch.py: PyTorch's own bf16 matmul and
#               samples/s of MLP, AlexNet, GPT-2 small (needs nothing of pipe)
#   parity      pipert --device cpu against --device cuda, 5 steps, every
#               loss within 1e-5 relative, on 1, 2 and 4 ranks (tied MLP,
#               tied GPT; 2 stages; 2 stages x 2 replicas)
#   throughput  pipert --device cuda samples/s on one rank: MLP, AlexNet,
#               GPT-2 small (124M, bf16), each as TFLOP/s and as a
#               percentage of the GEMM peak the gemm section measured
#
# Before them, a preflight of a few seconds (OUTDIR/env.txt): the GPU and its
# compute mode, nvcc, cuDNN, NCCL, the tools and libraries the build needs,
# the carried folder, and what the build will use for each.
#
# Budget: the whole run ends within --budget seconds (GPU_CHECK_BUDGET;
# default 290 on a GPU, 150 for --dry-run), plus 5 s. Each section runs
# under `timeout` for its own limit (CAPS below; GPU_CHECK_LIMITS=gemm=30,...
# overrides), never more than what the budget has left after keeping
# MIN_SECTION seconds for each later section; a section cut at its limit
# reports FAIL and the next one starts; one that cannot get MIN_SECTION
# seconds reports skip. Every pipert run has its own `timeout 40`.
#
# Files: exactly 8 in OUTDIR (summary.txt, env.txt, and build.txt,
# kernels.txt, gemm.txt, torch.txt, parity.txt, throughput.txt); scratch
# goes to a temporary folder, removed at the end (GPU_CHECK_KEEP=1 keeps it).
#
# Options:
#   --dry-run        every section's logic on a machine without a GPU:
#                    --device cuda is the host stand-in (tests/rt_cuda_fake.c,
#                    through PIPERT_CUDA_MODULE), PyTorch runs on the CPU with
#                    tiny sizes, small models and few steps; exit 0 when every
#                    section ran and reported, whatever each one's outcome
#   --build-dir DIR  the build directory (default /tmp/pipe-gpu-build, reused
#                    when it exists); in a dry run, an already built tree
#                    (with pipert-cuda-fake.so) that the build section checks
#                    instead of compiling
#   --carry DIR      what scripts/gpu-prepare.sh made (default .gpu-carry in
#                    the source tree, when it exists)
#   --only LIST      run only these sections (comma-separated); the others
#                    report skip
#   --budget SEC     the whole run's budget
# Internal: --section NAME (one section, run by the script itself);
# --make-plans DIR --pipec PIPEC (every plan the check uses, compiled into
# DIR; scripts/gpu-prepare.sh calls it).
#
# Environment: GPU_CHECK_BUDGET, GPU_CHECK_LIMITS, GPU_CHECK_JOBS (parallel
# compiles; default nproc), GPU_CHECK_KEEP=1, GPU_CHECK_PREFIX (where carried
# packages are unpacked; default /tmp/pipe-prefix), CUDNN_ROOT / NCCL_ROOT
# (where to look first); test hooks: GPU_CHECK_TEST_HANG=SECTION (that
# section sleeps until it is cut: the budget's test) and
# GPU_CHECK_PRETEND_MISSING="flex bison mpi openblas zlib jansson pkg-config cmake"
# (the preflight treats those as absent, so the fallbacks are chosen).
#
# Exit status: on a GPU, 0 when all six sections report ok, else 1; with
# --dry-run, 0 when all six reported; 2 for a usage error.
set -u
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
SRC=$(cd "$(dirname "$0")/.." && pwd)
SECTIONS="build kernels gemm torch parity throughput"
FILES="summary.txt env.txt build.txt kernels.txt gemm.txt torch.txt parity.txt throughput.txt"
MIN_SECTION=8
RUN_LIMIT=40 # every pipert run

# ---- helpers shared by the parent and the sections ---------------------------------
now() { date +%s; }
# lim N: at most N seconds, and never past this section's deadline
lim() {
    local l=$((${GC_DEADLINE:-$(($(now) + $1))} - $(now) - 1))
    [ "$l" -gt "$1" ] && l=$1
    [ "$l" -lt 1 ] && l=1
    echo "$l"
}
# run N CMD...: the command, under timeout (own process group, killed with
# its children), its output to this section's log (stdout); status kept
run() {
    local t
    t=$(lim "$1")
    shift
    echo "\$ $* (timeout ${t}s)"
    timeout -k 3 "$t" "$@" </dev/null 2>&1
    local rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "(cut after ${t}s)"
    return $rc
}
# runto FILE N CMD...: the same, output to FILE as well as the log
runto() {
    local f=$1 t rc
    t=$(lim "$2")
    shift 2
    echo "\$ $* (timeout ${t}s)"
    timeout -k 3 "$t" "$@" </dev/null >"$f" 2>&1
    rc=$?
    cat "$f"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "(cut after ${t}s)" | tee -a "$f"
    return $rc
}
# the state the sections hand on, KEY=VALUE lines in $GC_WORK/state
put() { printf '%s=%q\n' "$1" "$2" >>"$GC_WORK/state"; }
# (when the build section did not run, --only: what the build directory holds)
load_state() {
    [ -f "$GC_WORK/state" ] && . "$GC_WORK/state"
    [ -n "${BUILD_RAN:-}" ] && return 0
    local B=$GC_BUILD_DIR x
    for x in "$B/test_cuda_kernels" "$B/direct/test_cuda_kernels"; do [ -x "$x" ] && TEST_BIN=$x && break; done
    for x in "$B/cuda_gemm" "$B/direct/cuda_gemm"; do [ -x "$x" ] && BENCH_BIN=$x && break; done
    [ -x "$B/pipec" ] && PIPEC=$B/pipec
    [ -x "$B/pipert" ] && PIPERT=$B/pipert
    [ -e "$B/pipert-cuda-fake.so" ] && FAKE_MODULE=$B/pipert-cuda-fake.so
    return 0
}
# this section's result line and the details under it in the summary
result() { printf '%s - %s\n' "$1" "$2" >"$GC_WORK/result.$GC_SECTION"; }
detail() { echo "  $*" >>"$GC_WORK/detail.$GC_SECTION"; }
missing_pretend() { case " ${GPU_CHECK_PRETEND_MISSING:-} " in *" $1 "*) return 0 ;; esac; return 1; }
# (bash's command -v names a non-executable file when it finds nothing better)
have() {
    local p
    ! missing_pretend "$1" && p=$(command -v "$1" 2>/dev/null) && [ -x "$p" ] && [ -f "$p" ]
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# ---- the plans (the parity and throughput sections; gpu-prepare.sh) ------------------
# NAME|SOURCE|PIPEC -D settings, separated by ';' (@NAME: tests/e2e/NAME.pipe, tied_gpt
# or llama_gqa, on the token file written beside the plans)
PLANS="p_tied_mlp|tests/e2e/tied_mlp.pipe|
p_tied_gpt|@tied_gpt|
p_tied_gpt_s2|@tied_gpt|stages=2
p_tied_gpt_s2dp2|@tied_gpt|stages=2;data_parallel=2
p_llama_gqa_s2|@llama_gqa|stages=2
t_mlp|examples/mlp.pipe|stages=1
t_alexnet|examples/alexnet.pipe|stages=1;data=synthetic(samples = 1024);micro_batches=8
t_gpt2|bench/gpt2_small.pipe|stages=1
d_alexnet|examples/alexnet.pipe|stages=1;data=synthetic(samples = 64);micro_batches=1;micro_batch_size=2
d_gpt2|@tied_gpt|precision=bf16"
# make_plans DIR PIPEC [NAME...]: NAME.bin, NAME.flops (forward FLOPs per
# sample) and the token files in DIR; status 1 if any failed
make_plans() {
    local dir=$1 pipec=$2 bad=0 line name src defs args d
    shift 2
    mkdir -p "$dir" || return 1
    # tied_gpt's tokens: ids 1..63 (0 is its pad); GPT-2's: any id below
    # 50257; little-endian uint16
    [ -f "$dir/tied_gpt.u16" ] || LC_ALL=C awk 'BEGIN { srand(5); for (i = 0; i < 4000; i++) printf "%c%c", 1 + int(rand() * 63), 0 }' >"$dir/tied_gpt.u16"
    [ -f "$dir/gpt2.u16" ] || LC_ALL=C awk 'BEGIN { srand(1); for (i = 0; i < 40000; i++) { t = int(rand() * 50257); printf "%c%c", t % 256, int(t / 256) } }' >"$dir/gpt2.u16"
    for m in tied_gpt llama_gqa; do sed "s|TOKENS|$dir/tied_gpt.u16|" "$SRC/tests/e2e/$m.pipe" >"$dir/$m.pipe"; done
    while IFS= read -r line; do
        name=${line%%|*} src=${line#*|} defs=${src#*|} src=${src%%|*}
        [ $# -gt 0 ] && case " $* " in *" $name "*) ;; *) continue ;; esac
        case $src in @*) src=$dir/${src#@}.pipe ;; *) src=$SRC/$src ;; esac
        args=()
        IFS=';' read -r -a d <<<"$defs"
        for x in "${d[@]}"; do [ -n "$x" ] && args+=(-D "$x"); done
        if "$pipec" "$src" "${args[@]}" -o "$dir/$name.bin"; then
            "$pipec" "$src" "${args[@]}" --stats --json | sed -n 's/.*"total_flops": *\([0-9]*\).*/\1/p' | head -1 >"$dir/$name.flops"
        else
            echo "pipec failed: $name" >&2
            bad=1
        fi
    done <<<"$PLANS"
    return $bad
}

# ---- preflight: what the machine has, what the build will use ------------------------
# (run as its own step before the sections; writes $GC_WORK/env.sh, which
# every section sources, and OUTDIR/env.txt)
# (as found, not resolved: a virtual environment's python3 is a link to
# the base interpreter, which would not see the environment's packages)
py_candidates() {
    local p
    for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3 /usr/local/bin/python3; do
        command -v "$p" 2>/dev/null
    done | awk '!seen[$0]++'
}
# directories of an nvidia.* Python package (e.g. cudnn), one per line
py_pkg_dirs() {
    local py
    for py in $(py_candidates); do
        timeout 20 "$py" -c "import nvidia.$1 as m; print('\n'.join(m.__path__))" 2>/dev/null
    done | sort -u
}
nvcc_version() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | awk '{print $1 * 100 + $2}'; }
# find_lib HEADER LIBGLOB PYPKG ROOT: "INCLUDE_DIR|LIBRARY" of cuDNN or NCCL:
# ROOT, the toolkit, Python's nvidia.PYPKG, the usual places, then a bounded find
find_lib() {
    local hdr=$1 lib=$2 pkg=$3 root=$4 d l h
    for d in $root "$CUDA_HOME_" "$CUDA_HOME_/targets/x86_64-linux" $(py_pkg_dirs "$pkg") /usr/local/cuda /usr /usr/local; do
        [ -d "$d" ] || continue
        l=$(ls "$d"/lib64/$lib "$d"/lib/$lib "$d"/lib/x86_64-linux-gnu/$lib 2>/dev/null | head -1)
        for h in "$d/include" "$d/include/x86_64-linux-gnu"; do
            if [ -n "$l" ] && [ -f "$h/$hdr" ]; then
                echo "$h|$l"
                return 0
            fi
        done
    done
    local sites
    sites=$(for py in $(py_candidates); do timeout 10 "$py" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null; done | sort -u)
    l=$(timeout 8 find /usr/local /usr/lib /usr/lib64 /opt $sites -maxdepth 7 -name "$lib" 2>/dev/null | sort | head -1)
    h=$(timeout 8 find /usr/local /usr/include /opt $sites -maxdepth 7 -name "$hdr" 2>/dev/null | sort | head -1)
    [ -n "$l" ] && [ -n "$h" ] && { echo "$(dirname "$h")|$l"; return 0; }
    return 1
}
# unpack_group G: the carried .debs of group G into $PREFIX (dpkg -x; a
# Python reader of the .deb format where dpkg-deb is missing)
unpack_group() {
    local g=$1 f
    for f in $(awk -v g="$g" '$1 == g { print $2 }' "$CARRY/debs/groups"); do
        [ -f "$PREFIX/.unpacked/$f" ] && continue
        if have dpkg-deb; then
            dpkg -x "$CARRY/debs/$f" "$PREFIX" || return 1
        else
            local py ok=""
            for py in /usr/bin/python3 $(py_candidates); do
                [ -x "$py" ] && "$py" -c 'import lzma, tarfile' 2>/dev/null && ok=$py && break
            done
            [ -n "$ok" ] || { echo "no dpkg-deb and no python3 with lzma to unpack $f"; return 1; }
            "$ok" - "$CARRY/debs/$f" "$PREFIX" <<'EOF' || return 1
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", "not a .deb"
at = 8
while at < len(data):
    name, size = data[at:at + 16].decode().strip().rstrip("/"), int(data[at + 48:at + 58])
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(data[at + 60:at + 60 + size]), mode="r:*").extractall(sys.argv[2])
        break
    at += 60 + size + (size & 1)
EOF
        fi
        mkdir -p "$PREFIX/.unpacked" && : >"$PREFIX/.unpacked/$f"
        echo "unpacked $f"
    done
}
# after unpacking: what Debian's maintainer scripts would have done, inside
# the prefix (alternatives links, .pc prefixes, links out of it)
fix_prefix() {
    local l t b c u=$PREFIX/usr ml=$PREFIX/usr/lib/x86_64-linux-gnu
    for b in mpirun mpiexec mpicc; do
        [ -e "$u/bin/$b.openmpi" ] && ln -sf "$b.openmpi" "$u/bin/$b"
    done
    [ -e "$ml/openblas-pthread/libopenblas.so.0" ] && ln -sf openblas-pthread/libopenblas.so.0 "$ml/libopenblas.so.0"
    for c in $(find "$PREFIX" -name '*.pc' 2>/dev/null); do
        sed -i -E "s#^([A-Za-z_]+)=/usr#\1=$u#" "$c"
    done
    find "$PREFIX" -type l 2>/dev/null | while read -r l; do
        t=$(readlink "$l")
        case $t in
        "$PREFIX"/*) ;;
        /*)
            if [ -e "$PREFIX$t" ]; then
                ln -sf "$PREFIX$t" "$l"
            elif [ ! -e "$t" ]; then
                # a development link to a library of the machine's own (libz.so)
                b=$(basename "$l")
                c=$(ldconfig -p 2>/dev/null | awk -v b="$b" 'index($1, b ".") == 1 && /x86-64/ { print $NF; exit }')
                [ -n "$c" ] && ln -sf "$c" "$l" && echo "relinked $l -> $c"
            fi
            ;;
        esac
    done
}
preflight() {
    local T0 q
    T0=$(now)
    PREFIX=${GPU_CHECK_PREFIX:-/tmp/pipe-prefix}
    CARRY=${GC_CARRY:-}
    # written whole at the end (a preflight cut short leaves none)
    local envsh=$GC_WORK/env.sh.part
    : >"$envsh"
    e() { echo "$*" >>"$envsh"; }
    echo "==== preflight, $(date -u '+%Y-%m-%d %H:%M:%S UTC'): $(uname -srm), $(nproc) cores"
    [ -n "${GPU_CHECK_PRETEND_MISSING:-}" ] && echo "test hook GPU_CHECK_PRETEND_MISSING: treated as absent: $GPU_CHECK_PRETEND_MISSING"
    # -- the GPU
    local GPUS=0 CAP="" CMODE="" DRIVER_CUDA="" gpu="no GPU"
    if command -v nvidia-smi >/dev/null 2>&1; then
        timeout 20 nvidia-smi 2>&1
        q=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,compute_mode --format=csv,noheader 2>/dev/null)
        GPUS=$(printf '%s\n' "$q" | grep -c . || true)
        CAP=$(printf '%s\n' "$q" | head -1 | awk -F', *' '{ print $4 }' | tr -d ' .')
        CMODE=$(printf '%s\n' "$q" | head -1 | awk -F', *' '{ print $5 }' | tr -d ' ')
        DRIVER_CUDA=$(timeout 20 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)
        gpu="$GPUS GPU(s): $(printf '%s\n' "$q" | head -1), driver CUDA ${DRIVER_CUDA:-?}"
    else
        gpu="no nvidia-smi (no NVIDIA driver)"
    fi
    case $CMODE in
    Default | "") ;;
    Exclusive_Process) gpu="$gpu; compute mode Exclusive_Process: one process per GPU, so the 2- and 4-rank parity runs are skipped" ;;
    *) gpu="$gpu; compute mode $CMODE: CUDA runs may be refused" ;;
    esac
    echo "gpu: $gpu"
    # -- nvcc: the newest the driver can run
    NVCC="" CUDA_HOME_=""
    local DRV cands best=-1 c v
    DRV=$(echo "${DRIVER_CUDA:-99.9}" | awk -F. '{print $1 * 100 + $2}')
    cands=$( (command -v nvcc; ls -d /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc /opt/cuda/bin/nvcc 2>/dev/null
              for d in $(py_pkg_dirs cuda_nvcc); do echo "$d/bin/nvcc"; done) 2>/dev/null | while read -r f; do
              [ -x "$f" ] && readlink -f "$f"; done | awk '!seen[$0]++')
    for c in $cands; do
        v=$(nvcc_version "$c")
        echo "nvcc candidate: $c (version code ${v:-?})"
        [ -z "$v" ] && continue
        if [ "$v" -le "$DRV" ] && [ "$v" -gt "$best" ]; then best=$v NVCC=$c; fi
    done
    [ -z "$NVCC" ] && NVCC=$(echo "$cands" | head -1)
    [ -n "$NVCC" ] && CUDA_HOME_=$(dirname "$(dirname "$NVCC")")
    local CUDNN="" NCCL=""
    if [ -n "$NVCC" ]; then
        CUDNN=$(find_lib cudnn.h 'libcudnn.so*' cudnn "${CUDNN_ROOT:-}")
        NCCL=$(find_lib nccl.h 'libnccl.so*' nccl "${NCCL_ROOT:-}")
    fi
    echo "nvcc: ${NVCC:-NOT FOUND} ($([ -n "$NVCC" ] && "$NVCC" --version | grep release))"
    echo "cuDNN: ${CUDNN:-NOT FOUND}"
    echo "NCCL: ${NCCL:-not found (one GPU: not needed)}"
    # -- tools; the carried folder; a decision for each need
    local t tools=""
    for t in cmake ninja make cc c++ flex bison pkg-config mpicc mpirun dpkg-deb git; do
        if have "$t"; then tools="$tools $t"; else tools="$tools !$t"; fi
    done
    echo "tools (! = missing):$tools"
    local cmeta="none"
    if [ -n "$CARRY" ] && [ -d "$CARRY" ]; then
        cmeta="$CARRY ($(sed -n 's/^commit //p' "$CARRY/MANIFEST" 2>/dev/null || echo 'no MANIFEST'); tree $(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    fi
    echo "carried folder: $cmeta"
    local PARSER MPI BLAS ZLIB PKGC groups="" PREFIX_LD=""
    # the parser (a copy may have lost the stand-ins' execute bits)
    for t in flex bison; do
        [ -f "${CARRY:-/nonexistent}/parser/$t" ] && [ ! -x "$CARRY/parser/$t" ] && chmod +x "$CARRY/parser/$t" 2>/dev/null
    done
    if have flex && have bison; then
        PARSER=tools
    elif [ -x "${CARRY:-/nonexistent}/parser/flex" ] && [ -x "$CARRY/parser/bison" ]; then
        if (cd "$SRC/grammar" && sha256sum -c --quiet "$CARRY/parser/sources.sha256" >/dev/null 2>&1); then
            PARSER=generated
        else
            PARSER="stale (the grammar changed since scripts/gpu-prepare.sh: rerun it)"
        fi
    else
        PARSER="missing (no flex/bison, no generated parser: run scripts/gpu-prepare.sh and carry .gpu-carry)"
    fi
    local cgroup=""
    [ -n "$CARRY" ] && [ -f "$CARRY/debs/groups" ] && cgroup=$CARRY/debs/groups
    carried() { [ -n "$cgroup" ] && grep -q "^$1 " "$cgroup"; }
    # pkg-config, then OpenBLAS through it
    if have pkg-config; then PKGC=system; elif carried pkgconfig; then PKGC=carried groups="$groups pkgconfig"; else PKGC=missing; fi
    if ! missing_pretend mpi && have mpicc && have mpirun; then MPI=system; elif carried mpi; then MPI=carried groups="$groups mpi"; else MPI=missing; fi
    if ! missing_pretend zlib && echo '#include <zlib.h>' | cc -E -x c - >/dev/null 2>&1; then
        ZLIB=system
    elif carried zlib; then ZLIB=carried groups="$groups zlib"; else ZLIB=missing; fi
    if ! missing_pretend openblas && [ "$PKGC" = system ] && pkg-config --exists openblas 2>/dev/null; then
        BLAS=system
    elif carried blas; then BLAS=carried groups="$groups blas"; else BLAS=missing; fi
    # jansson: the JSON reader of checkpoints and safetensors (base/base_json.c)
    if ! missing_pretend jansson && [ "$PKGC" = system ] && pkg-config --exists jansson 2>/dev/null; then
        JANSSON=system
    elif carried jansson; then JANSSON=carried groups="$groups jansson"; else JANSSON=missing; fi
    # unpack what is carried and missing
    if [ -n "$groups" ]; then
        mkdir -p "$PREFIX" || return 1
        for g in $groups; do
            unpack_group "$g" >/dev/null || { echo "unpacking $g into $PREFIX FAILED"; eval "$(echo "$g" | tr a-z A-Z | sed 's/PKGCONFIG/PKGC/')=missing"; }
        done
        fix_prefix
        local u=$PREFIX/usr ml=$PREFIX/usr/lib/x86_64-linux-gnu
        e "export PATH=$u/bin:\$PATH"
        e "export PKG_CONFIG_PATH=$ml/pkgconfig:$ml/openblas-pthread/pkgconfig:$u/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
        e "export CMAKE_PREFIX_PATH=$u\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
        PREFIX_LD=$ml:$ml/openmpi/lib:$ml/openblas-pthread:$ml/pmix2/lib
        [ "$MPI" = carried ] && e "export OPAL_PREFIX=$u PMIX_PREFIX=$ml/pmix2 PMIX_DATADIR=$ml/pmix2/share PMIX_PKGDATADIR=$ml/pmix2/share/pmix PMIX_LIBDIR=$ml/pmix2/lib PMIX_PKGLIBDIR=$ml/pmix2/lib/pmix"
        echo "unpacked into $PREFIX:$groups ($(du -sh "$PREFIX" 2>/dev/null | cut -f1))"
    fi
    echo "decisions: parser $PARSER; pkg-config $PKGC; MPI $MPI; OpenBLAS $BLAS; zlib $ZLIB; jansson $JANSSON"
    # the libraries every CUDA run needs; Open MPI's settings for a container
    local cl="${CUDNN##*|}" nl="${NCCL##*|}"
    local rl="${CUDNN:+$(dirname "$cl"):}${NCCL:+$(dirname "$nl"):}${CUDA_HOME_:+$CUDA_HOME_/lib64:}$PREFIX_LD"
    e "RUN_LD=${rl%:}"
    e "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1"
    # no CMA single copy (ptrace is refused in containers and VMs), no UCX
    e "export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp"
    # shellcheck disable=SC2016
    e "NVCC=$NVCC CUDA_HOME_=$CUDA_HOME_ CAP=$CAP CMODE=$CMODE GPUS=$GPUS"
    e "CUDNN_INC=${CUDNN%%|*} CUDNN_LIB=${CUDNN##*|} NCCL_INC=${NCCL%%|*} NCCL_LIB=${NCCL##*|}"
    e "PARSER='$PARSER' MPI=$MPI BLAS=$BLAS ZLIB=$ZLIB JANSSON=$JANSSON PKGC=$PKGC PREFIX=$PREFIX CARRY=$CARRY"
    local nv=missing cu=missing nc=missing
    [ -n "$NVCC" ] && nv="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') ($NVCC)"
    [ -n "$CUDNN" ] && cu="${CUDNN##*|}"
    [ -n "$NCCL" ] && nc="${NCCL##*|}"
    local line="preflight ($(($(now) - T0)) s): $gpu; nvcc $nv; cuDNN $cu; NCCL $nc; parser ${PARSER%% *}; pkg-config $PKGC; MPI $MPI; OpenBLAS $BLAS; zlib $ZLIB; carried folder ${CARRY:-none}"
    echo "$line"
    echo "$line" >"$GC_WORK/preflight.line"
    mv "$envsh" "$GC_WORK/env.sh"
}

# ---- the sections ------------------------------------------------------------------------
sec_build() {
    . "$GC_WORK/env.sh" 2>/dev/null || { result FAIL "the preflight did not finish (env.txt)"; return; }
    export LD_LIBRARY_PATH=${RUN_LD:+$RUN_LD:}${LD_LIBRARY_PATH:-}
    local B=$GC_BUILD_DIR jobs=${GPU_CHECK_JOBS:-$(nproc 2>/dev/null || echo 4)} T0
    T0=$(now)
    local args=(-DCMAKE_BUILD_TYPE=Release)
    have ninja && args+=(-G Ninja)
    if [ "$GC_MODE" = gpu ]; then
        args+=(-DPIPE_CUDA=ON -DBUILD_TESTING=OFF -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="${CAP:-90}-real")
    else
        args+=(-DPIPE_CUDA=AUTO -DBUILD_TESTING=ON) # the host stand-in is a test target
    fi
    [ -n "$CUDNN_INC" ] && args+=(-DPIPE_CUDNN_INCLUDE_DIR="$CUDNN_INC" -DPIPE_CUDNN_LIBRARY="$CUDNN_LIB")
    [ -n "$NCCL_INC" ] && args+=(-DPIPE_NCCL_INCLUDE_DIR="$NCCL_INC" -DPIPE_NCCL_LIBRARY="$NCCL_LIB")
    [ "$PARSER" = generated ] && args+=(-DFLEX_EXECUTABLE="$CARRY/parser/flex" -DBISON_EXECUTABLE="$CARRY/parser/bison")
    missing_pretend flex && [ "$PARSER" != generated ] && args+=(-DCMAKE_DISABLE_FIND_PACKAGE_FLEX=ON)
    [ "$MPI" = carried ] && args+=(-DMPI_C_COMPILER="$PREFIX/usr/bin/mpicc.openmpi")
    [ "$PKGC" = carried ] && args+=(-DPKG_CONFIG_EXECUTABLE="$PREFIX/usr/bin/pkgconf")
    [ "$ZLIB" = carried ] && args+=(-DZLIB_ROOT="$PREFIX/usr")
    local need="" m
    for m in "parser:$PARSER" "MPI:$MPI" "OpenBLAS:$BLAS" "zlib:$ZLIB" "jansson:$JANSSON" "pkg-config:$PKGC"; do
        case ${m#*:} in missing* | stale*) need="$need, ${m%%:*} ${m#*:}" ;; esac
    done
    have cmake || need="$need, cmake missing"
    echo "configure: cmake -S $SRC -B $B ${args[*]}"
    local made="" why=""
    if [ "$GC_MODE" = dry ] && [ -n "${GC_BUILD_GIVEN:-}" ]; then
        # a dry run on an existing build: the decisions above ran; check the tree
        echo "dry run: checking the given build $B instead of compiling"
        for m in pipec pipert pipert-cuda-fake.so pipert-cuda.so test_cuda_kernels cuda_gemm; do
            [ -e "$B/$m" ] && made="$made $m"
        done
        grep -q '^CMAKE_PROJECT_NAME:STATIC=pipe' "$B/CMakeCache.txt" 2>/dev/null || why="not a pipe build directory"
    elif [ -z "$need" ] || [ "$GC_MODE" = dry ]; then
        # (an existing build directory is configured again, then built incrementally)
        # (only what this run built counts: a reused directory may hold older programs)
        if ! run 120 cmake -S "$SRC" -B "$B" "${args[@]}"; then
            why="configure failed: $(awk '/Could NOT find|CMake Error/ { n = 1 } n && NF { printf "%s ", $0; if (++n > 3) exit }' \
                "$GC_OUT/build.txt" | tr -s ' ' | cut -c1-200)"
        else
            if run 240 cmake --build "$B" -j "$jobs" --target test_cuda_kernels cuda_gemm; then
                made="$made test_cuda_kernels cuda_gemm"
            else
                echo "(the kernel programs did not build)"
            fi
            local tg="pipec pipert"
            [ "$GC_MODE" = dry ] && tg=all
            if run 240 cmake --build "$B" -j "$jobs" --target $tg; then
                for m in pipec pipert pipert-cuda.so pipert-cuda-fake.so; do [ -e "$B/$m" ] && made="$made $m"; done
            else
                why="pipec / pipert did not build: $(grep -m1 -E 'error:|Error ' "$GC_OUT/build.txt" | cut -c1-160)"
            fi
        fi
    else
        why="not configured:${need#,}"
    fi
    # the kernel programs without CMake, when it could not make them
    if [ "$GC_MODE" = gpu ] && [[ " $made " != *" test_cuda_kernels "* ]] && [ -n "$NVCC" ] && [ -n "$CUDNN_INC" ]; then
        echo "---- direct build of test_cuda_kernels and cuda_gemm (nvcc + cc)"
        direct_build "$B/direct" && made="$made test_cuda_kernels(direct) cuda_gemm(direct)"
    fi
    put BUILD_RAN 1
    case " $made " in
    *" test_cuda_kernels "*) put TEST_BIN "$B/test_cuda_kernels"; put BENCH_BIN "$B/cuda_gemm" ;;
    *" test_cuda_kernels(direct) "*) put TEST_BIN "$B/direct/test_cuda_kernels"; put BENCH_BIN "$B/direct/cuda_gemm" ;;
    esac
    case " $made " in *" pipec "*) put PIPEC "$B/pipec" ;; esac
    case " $made " in *" pipert "*) put PIPERT "$B/pipert" ;; esac
    case " $made " in *" pipert-cuda-fake.so "*) put FAKE_MODULE "$B/pipert-cuda-fake.so" ;; esac
    local warn
    warn=$(grep -c 'warning:' "$GC_OUT/build.txt" 2>/dev/null)
    local how="parser ${PARSER%% *}, MPI $MPI, OpenBLAS $BLAS, zlib $ZLIB, jansson $JANSSON, pkg-config $PKGC"
    [ "$GC_MODE" = gpu ] && how="sm_${CAP:-90}, $how"
    detail "built:${made:- nothing} ($how; $warn compiler warnings)"
    local want="pipec pipert test_cuda_kernels cuda_gemm"
    [ "$GC_MODE" = dry ] && want="pipec pipert pipert-cuda-fake.so"
    local lack=""
    for m in $want; do [[ " $made " == *" $m"[\ \(]* ]] || lack="$lack $m"; done
    if [ -z "$why" ] && [ -z "$lack" ]; then
        result ok "$([ "$GC_MODE" = dry ] && [ -n "${GC_BUILD_GIVEN:-}" ] && echo 'dry run, given build: ')${made# } ($how) in $(($(now) - T0)) s"
    else
        result FAIL "${why:-missing:$lack}; built:${made:- nothing} ($how)"
    fi
}

# The direct build: what CMake would do for test_cuda_kernels and cuda_gemm,
# by hand (a naive cblas_sgemm for the CPU reference when there is no BLAS).
direct_build() {
    local d=$1 sm=${CAP:-90}
    mkdir -p "$d/naive" || return 1
    local inc="-I$SRC/kernels -I$CUDA_HOME_/include -I$CUDNN_INC" libs="-L$CUDA_HOME_/lib64 -lcublas"
    local blasinc="" blaslib="" blassrc=""
    if [ "$BLAS" != missing ] && pkg-config --exists openblas 2>/dev/null; then
        blasinc=$(pkg-config --cflags openblas) blaslib=$(pkg-config --libs openblas)
    else
        echo "no OpenBLAS: a naive cblas_sgemm for the CPU reference (slow, exact enough)"
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
    # every source folder with headers (the tree's layout may change)
    local hdrs="" x
    for x in "$SRC"/*/; do ls "$x"*.h >/dev/null 2>&1 && hdrs="$hdrs -I${x%/}"; done
    [ -d "$PREFIX/usr/include" ] && hdrs="$hdrs -I$PREFIX/usr/include" # carried zlib.h
    local objs="" f o
    for f in "$SRC"/kernels/cuda/*.cu; do
        o=$d/$(basename "$f" .cu).o
        run 200 "$NVCC" -std=c++17 -O3 --fmad=false -gencode "arch=compute_$sm,code=sm_$sm" $inc \
            -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter -c "$f" -o "$o" || return 1
        objs="$objs $o"
    done
    for f in "$SRC"/kernels/cpu/k_dense.c "$SRC"/kernels/cpu/k_pointwise.c "$SRC"/kernels/cpu/k_random.c \
        "$SRC"/kernels/cpu/k_block.c $blassrc; do
        o=$d/cpu_$(basename "$f" .c).o
        run 120 cc $cflags -O3 $blasinc -I"$SRC/kernels" -c "$f" -o "$o" || return 1
        objs="$objs $o"
    done
    run 60 cc $cflags -ffp-contract=off $hdrs -c "$SRC/runtime/rt_optim.c" -o "$d/rt_optim.o" || return 1
    # what rt_optim.c needs below it: every file of base/, plan/ and
    # schedules/ that compiles here, in an archive the linker picks from
    mkdir -p "$d/support" && rm -f "$d/libsupport.a"
    for f in "$SRC"/base/*.c "$SRC"/plan/*.c "$SRC"/schedules/*.c; do
        [ -f "$f" ] || continue
        o=$d/support/$(basename "$(dirname "$f")")_$(basename "$f" .c).o
        timeout 60 cc $cflags -ffp-contract=off $hdrs -c "$f" -o "$o" 2>&1 || echo "(left out: $f)"
    done
    ls "$d"/support/*.o >/dev/null 2>&1 && ar rcs "$d/libsupport.a" "$d"/support/*.o
    objs="$objs $d/rt_optim.o"
    [ -f "$d/libsupport.a" ] && objs="$objs $d/libsupport.a"
    run 60 cc $cflags $inc $hdrs -c "$SRC/tests/test_cuda_kernels.c" -o "$d/test.o" || return 1
    run 60 cc $cflags $inc -c "$SRC/bench/cuda_gemm.c" -o "$d/bench.o" || return 1
    local rpath="-Xlinker -rpath -Xlinker $CUDA_HOME_/lib64 -Xlinker -rpath -Xlinker $(dirname "$CUDNN_LIB")"
    run 120 "$NVCC" -o "$d/test_cuda_kernels" "$d/test.o" $objs $libs "$CUDNN_LIB" $blaslib -lm $rpath || return 1
    run 120 "$NVCC" -o "$d/cuda_gemm" "$d/bench.o" $objs $libs "$CUDNN_LIB" $blaslib -lm $rpath || return 1
}

sec_kernels() {
    . "$GC_WORK/env.sh" 2>/dev/null
    export LD_LIBRARY_PATH=${RUN_LD:+$RUN_LD:}${LD_LIBRARY_PATH:-}
    load_state
    [ -n "${TEST_BIN:-}" ] || { result skip "test_cuda_kernels was not built (build.txt)"; return; }
    local f=$GC_WORK/kernels.out rc nok nfail
    runto "$f" 240 "$TEST_BIN"
    rc=$?
    nok=$(grep -c '^ok ' "$f") nfail=$(grep -c '^FAIL' "$f")
    if [ $rc -eq 0 ]; then
        result ok "$nok checks passed"
    elif [ $rc -eq 77 ]; then
        result skip "no CUDA device ($(grep -m1 -o 'cudaGetDeviceCount.*' "$f" | tr -d '()'))"
    else
        result FAIL "$nfail of $((nok + nfail)) checks failed (exit $rc): $(grep -m1 '^FAIL' "$f" | cut -c1-120)"
        grep '^FAIL' "$f" | head -12 | while read -r l; do detail "$l"; done
    fi
}

sec_gemm() {
    . "$GC_WORK/env.sh" 2>/dev/null
    export LD_LIBRARY_PATH=${RUN_LD:+$RUN_LD:}${LD_LIBRARY_PATH:-}
    load_state
    [ -n "${BENCH_BIN:-}" ] || { result skip "cuda_gemm was not built (build.txt)"; return; }
    local f=$GC_WORK/gemm.out rc p
    runto "$f" 90 "$BENCH_BIN"
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^bf16_peak_tflops=' "$f"; then
        for p in bf16 tf32 fp32; do put "PEAK_$p" "$(sed -n "s/^${p}_peak_tflops=//p" "$f")"; done
        grep -E ' 8192 +8192 +8192 ' "$f" | while read -r l; do detail "$l"; done
        result ok "measured peak TFLOP/s: bf16 $(sed -n 's/^bf16_peak_tflops=//p' "$f"), tf32 $(sed -n 's/^tf32_peak_tflops=//p' "$f"), fp32 $(sed -n 's/^fp32_peak_tflops=//p' "$f") (best of 4096^3, 8192^3, GPT-2 shapes)"
    elif [ $rc -eq 77 ]; then
        result skip "no CUDA device ($(grep -m1 -o 'cudaGetDeviceCount.*' "$f" | tr -d '()'))"
        if [ "$GC_MODE" = dry ]; then
            # so that the throughput section's arithmetic runs: stated as assumed
            for p in bf16 tf32 fp32; do put "PEAK_$p" 1.0; done
            put PEAK_NOTE "assumed: a dry run measures none"
        fi
    else
        result FAIL "exit $rc: $(tail -1 "$f" | cut -c1-120)"
    fi
}

sec_torch() {
    load_state
    local py="" p dev=cuda tiny=""
    [ "$GC_MODE" = dry ] && dev=cpu tiny=--tiny
    # /usr/bin/python3 first in a dry run (Debian's torch there, not on PATH's python3)
    local cands
    cands=$(py_candidates)
    [ "$GC_MODE" = dry ] && cands="/usr/bin/python3 $cands"
    for p in $cands; do
        [ -x "$p" ] || continue
        if [ $dev = cuda ]; then
            timeout 60 "$p" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' >/dev/null 2>&1 && { py=$p; break; }
        else
            timeout 60 "$p" -c 'import torch' >/dev/null 2>&1 && { py=$p; break; }
        fi
    done
    if [ -z "$py" ]; then
        result skip "no python3 whose torch $([ $dev = cuda ] && echo 'sees a CUDA device' || echo imports) (tried: $(echo $cands))"
        return
    fi
    local f=$GC_WORK/torch.out rc name v
    runto "$f" 150 env PYTHONUNBUFFERED=1 "$py" "$SRC/scripts/gpu_bench_torch.py" --device $dev $tiny
    rc=$?
    while read -r _ name v _; do
        case $name in matmul) put TORCH_MATMUL "$v" ;; mlp | alexnet | gpt2) [ "$v" != FAIL: ] && put "TORCH_$name" "$v" ;; esac
    done < <(grep '^torch [a-z0-9]* [0-9.]* \(samples\|TFLOP\)/s' "$f")
    grep '^torch [a-z0-9]* ' "$f" | while read -r l; do detail "$l"; done
    local got
    got=$(grep -c '^torch [a-z0-9]* [0-9.]* \(samples\|TFLOP\)/s' "$f")
    if [ $rc -eq 0 ] && [ "$got" -eq 4 ]; then
        result ok "$(sed -n 's/^torch matmul \([0-9.]*\) TFLOP\/s.*/matmul \1 TFLOP\/s/p' "$f"); samples/s: $(grep -o '^torch [a-z0-9]* [0-9.]* samples/s' "$f" | awk '{ printf "%s%s %s", n++ ? ", " : "", $2, $3 }') ($py, $dev$([ -n "$tiny" ] && echo ', tiny sizes'))"
    else
        result FAIL "exit $rc, $got of 4 figures: $(grep -m1 'FAIL\|Error' "$f" | cut -c1-120)"
    fi
}

# pipert_run NAME NP DEVICE PLAN [ARGS...]: --log-every 1 --metrics, output
# in $GC_WORK/runs/NAME.{out,jsonl}; the CUDA runs of a dry run go to the
# host stand-in
pipert_run() {
    local name=$1 np=$2 dev=$3 plan=$4
    shift 4
    local x=()
    [ "$dev" = cuda ] && [ -n "${CUDA_MODULE:-}" ] && x=(-x PIPERT_CUDA_MODULE="$CUDA_MODULE")
    mkdir -p "$GC_WORK/runs"
    rm -f "$GC_WORK/runs/$name.jsonl"
    runto "$GC_WORK/runs/$name.out" "$RUN_LIMIT" mpirun --oversubscribe -np "$np" "${x[@]}" "$PIPERT" "$plan" \
        --device "$dev" --log-every 1 --metrics "$GC_WORK/runs/$name.jsonl" "$@"
}
losses() { sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/p' "$GC_WORK/runs/$1.jsonl" 2>/dev/null; }
# compare A B TOL: the same 5 steps, every loss within TOL (relative); prints
# "ok|FAIL, worst relative difference X"
compare() {
    paste <(losses "$1") <(losses "$2") | awk -v tol="$3" '
        { n++; d = $2 - $4; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; rel = m > 0 ? d / m : d
          if (rel > worst) worst = rel; if ($1 != $3) bad = 1 }
        END { if (n != 5 || bad) { print "FAIL, " n + 0 " steps compared, not 5"; exit }
              printf "%s, worst relative difference %.2e\n", (worst <= tol ? "ok" : "FAIL"), worst }'
}
# the plans: pipec here, else the carried ones
get_plans() {
    PLANDIR=$GC_WORK/plans
    [ -f "$PLANDIR/.made" ] && return 0
    if [ -n "${PIPEC:-}" ]; then
        make_plans "$PLANDIR" "$PIPEC" && : >"$PLANDIR/.made" && return 0
    fi
    if [ -n "${CARRY:-}" ] && [ -f "$CARRY/plans/p_tied_mlp.bin" ]; then
        echo "using the plans compiled by scripts/gpu-prepare.sh ($CARRY/plans)"
        mkdir -p "$PLANDIR" && cp "$CARRY"/plans/* "$PLANDIR"/ && : >"$PLANDIR/.made" && return 0
    fi
    return 1
}
run_env() {
    . "$GC_WORK/env.sh" 2>/dev/null
    export LD_LIBRARY_PATH=${RUN_LD:+$RUN_LD:}${LD_LIBRARY_PATH:-}
    load_state
    CUDA_MODULE=""
    if [ "$GC_MODE" = dry ]; then CUDA_MODULE=${FAKE_MODULE:-}; fi
}

sec_parity() {
    run_env
    [ -n "${PIPERT:-}" ] || { result skip "pipert was not built (build.txt)"; return; }
    [ "$GC_MODE" = dry ] && [ -z "$CUDA_MODULE" ] && { result skip "no host stand-in (pipert-cuda-fake.so) in the build"; return; }
    get_plans || { result FAIL "no plans: pipec did not build or failed, and nothing carried"; return; }
    local cases="tied_mlp 1 p_tied_mlp
tied_gpt 1 p_tied_gpt
tied_gpt-2stages 2 p_tied_gpt_s2
tied_gpt-2x2 4 p_tied_gpt_s2dp2
llama_gqa-2stages 2 p_llama_gqa_s2"
    local n=0 okn=0 bad="" skipped="" name np plan r data
    while read -r name np plan; do
        n=$((n + 1))
        if [ "$np" -gt 1 ] && [ "${CMODE:-}" = Exclusive_Process ] && [ "${GPUS:-1}" -lt "$np" ]; then
            skipped="$skipped $name"
            detail "$name ($np ranks): skipped, compute mode Exclusive_Process (ranks cannot share the GPU)"
            continue
        fi
        data=()
        case $plan in *gpt* | *llama*) data=(--data "$PLANDIR/tied_gpt.u16") ;; esac
        if ! pipert_run "$name-cpu-np$np" "$np" cpu "$PLANDIR/$plan.bin" --steps 5 "${data[@]}" >/dev/null; then
            r="FAIL, the CPU run failed: $(grep -m1 -E '^\[rank [0-9]+\]|^pipert:|cut after' "$GC_WORK/runs/$name-cpu-np$np.out" | cut -c1-120)"
        elif ! pipert_run "$name-cuda-np$np" "$np" cuda "$PLANDIR/$plan.bin" --steps 5 --verbose "${data[@]}" >/dev/null; then
            r="FAIL, the CUDA run failed: $(grep -E '^\[rank [0-9]+\] .*(failed|error)|^pipert:|cut after' "$GC_WORK/runs/$name-cuda-np$np.out" | head -1 | cut -c1-160)"
        else
            r=$(compare "$name-cpu-np$np" "$name-cuda-np$np" 1e-5)
        fi
        cat "$GC_WORK/runs/$name-cpu-np$np.out" "$GC_WORK/runs/$name-cuda-np$np.out" 2>/dev/null
        echo "== $name on $np rank(s), cpu vs cuda: $r"
        paste <(losses "$name-cpu-np$np") <(losses "$name-cuda-np$np")
        detail "$name ($np rank$([ "$np" -gt 1 ] && echo s)): $r"
        case $r in ok*) okn=$((okn + 1)) ;; *) bad="$bad $name/$np" ;; esac
    done <<<"$cases"
    grep -h -o 'transport [a-z-]*' "$GC_WORK"/runs/*-cuda-*.out 2>/dev/null | sort | uniq -c | while read -r l; do detail "$l"; done
    local worst
    worst=$(grep -h -o 'worst relative difference [0-9.e+-]*' "$GC_WORK/detail.parity" 2>/dev/null | awk '{ if ($4 + 0 >= w) w = $4 + 0 } END { printf "%.2e", w }')
    local what="cpu vs cuda$([ "$GC_MODE" = dry ] && echo ' (host stand-in)'), 5 steps, losses within 1e-5"
    if [ -z "$bad" ] && [ -z "$skipped" ]; then
        result ok "$okn/$n on 1, 2, 4 ranks: $what (worst $worst)"
    elif [ -z "$bad" ]; then
        result skip "$okn/$n passed, skipped:$skipped ($what)"
    else
        result FAIL "$okn/$n: failed:$bad ($what)"
    fi
}

sec_throughput() {
    run_env
    [ -n "${PIPERT:-}" ] || { result skip "pipert was not built (build.txt)"; return; }
    [ "$GC_MODE" = dry ] && [ -z "$CUDA_MODULE" ] && { result skip "no host stand-in (pipert-cuda-fake.so) in the build"; return; }
    get_plans || { result FAIL "no plans: pipec did not build or failed, and nothing carried"; return; }
    # NAME PLAN STEPS PRECISION
    local cases="mlp t_mlp 50 fp32
alexnet t_alexnet 6 fp32
gpt2 t_gpt2 6 bf16"
    [ "$GC_MODE" = dry ] && cases="mlp t_mlp 5 fp32
alexnet d_alexnet 3 fp32
gpt2 d_gpt2 5 bf16"
    local okn=0 bad="" line="" name plan steps prec data sps tf peak pct tsps rc
    while read -r name plan steps prec; do
        data=()
        [ "$name" = gpt2 ] && data=(--data "$PLANDIR/$([ "$plan" = t_gpt2 ] && echo gpt2 || echo tied_gpt).u16")
        pipert_run "bench-$name" 1 cuda "$PLANDIR/$plan.bin" --steps "$steps" "${data[@]}"
        rc=$?
        # this run's own figures, from its own metrics (flushed each step, so
        # a run cut short still has its finished steps): samples over time of
        # the steps after the first 2
        sps=$(sed -n 's/.*"step": \([0-9]*\),.*"samples_per_s": \([0-9.e+-]*\), "step_ms": \([0-9.e+-]*\).*/\1 \2 \3/p' \
            "$GC_WORK/runs/bench-$name.jsonl" 2>/dev/null |
            awk '$1 > 2 { n++; t += $3; s += $2 * $3 / 1000 } END { if (n > 0 && t > 0) printf "%.1f", s * 1000 / t }')
        local why=""
        [ $rc -ne 0 ] && why=$(grep -m1 -E '^\[rank [0-9]+\]|^pipert:|cut after' "$GC_WORK/runs/bench-$name.out" | cut -c1-140)
        [ $rc -ne 0 ] && bad="$bad $name"
        if [ -z "$sps" ]; then
            [ $rc -eq 0 ] && bad="$bad $name"
            detail "$name: FAIL: ${why:-fewer than 3 steps logged}"
            continue
        fi
        okn=$((okn + 1))
        peak=$(eval echo "\${PEAK_$prec:-}")
        tf=$(awk -v s="$sps" -v f="$(cat "$PLANDIR/$plan.flops" 2>/dev/null)" 'BEGIN { if (f > 0) printf "%.2f", s * 3 * f / 1e12 }')
        pct=""
        [ -n "$peak" ] && [ -n "$tf" ] && pct=$(awk -v t="$tf" -v p="$peak" 'BEGIN { if (p > 0) printf "%.1f", 100 * t / p }')
        tsps=$(eval echo "\${TORCH_$name:-}")
        local vs="no GEMM peak to compare with"
        [ -n "$pct" ] && vs="$pct% of the $prec GEMM peak ($peak TFLOP/s, ${PEAK_NOTE:-measured})"
        detail "$name ($plan, $prec, $steps steps, the first 2 left out): $sps samples/s, ${tf:-?} TFLOP/s (3 x forward FLOPs), $vs; torch ${tsps:-not measured}${tsps:+ samples/s}"
        [ -n "$why" ] && detail "$name: the run failed after its figures: $why"
        line="$line, $name $sps/s${pct:+ = $pct% of $prec peak}"
    done <<<"$cases"
    local what="samples/s"
    if [ -n "${PEAK_NOTE:-}" ]; then what="$what, % of an assumed GEMM peak"
    elif [ -n "${PEAK_bf16:-}" ]; then what="$what, % of the measured GEMM peak"
    else what="$what; no GEMM peak measured (gemm.txt)"; fi
    [ "$GC_MODE" = dry ] && what="$what; dry run: host stand-in, small models"
    if [ -z "$bad" ]; then
        result ok "${line#, } ($what)"
    else
        result FAIL "failed:$bad; ${line#, } ($what)"
    fi
}

# ---- a section, run by the parent under timeout ----------------------------------------
if [ "${1:-}" = --section ]; then
    GC_SECTION=$2
    echo "==== $GC_SECTION, $(date -u '+%H:%M:%S UTC'), until $(date -u -d "@$GC_DEADLINE" '+%H:%M:%S' 2>/dev/null || echo "$GC_DEADLINE")"
    if [ "${GPU_CHECK_TEST_HANG:-}" = "$GC_SECTION" ]; then
        echo "test hook GPU_CHECK_TEST_HANG=$GC_SECTION: sleeping until cut"
        sleep 100000
    fi
    case $GC_SECTION in
    preflight) preflight ;;
    build | kernels | gemm | torch | parity | throughput) "sec_$GC_SECTION" ;;
    *) echo "unknown section $GC_SECTION" >&2; exit 2 ;;
    esac
    exit 0
fi

if [ "${1:-}" = --make-plans ]; then
    [ $# -ge 4 ] && [ "$3" = --pipec ] || { echo "usage: $0 --make-plans DIR --pipec PIPEC" >&2; exit 2; }
    make_plans "$2" "$4"
    exit
fi

# ---- the parent ---------------------------------------------------------------------------
usage() { sed -n '2,/^set -u/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; }
MODE=gpu BUILD_GIVEN="" CARRY_GIVEN="" ONLY="" BUDGET="" OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    --dry-run) MODE=dry ;;
    --build-dir) BUILD_GIVEN=$2; shift ;;
    --carry) CARRY_GIVEN=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu-check.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    *) [ -n "$OUT" ] && { echo "gpu-check.sh: one OUTDIR only" >&2; exit 2; }; OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || { echo "usage: $0 [--dry-run] [--build-dir DIR] [--carry DIR] [--only LIST] [--budget SEC] OUTDIR" >&2; exit 2; }
for s in ${ONLY//,/ }; do
    case " $SECTIONS " in *" $s "*) ;; *) echo "gpu-check.sh: --only: no section $s ($SECTIONS)" >&2; exit 2 ;; esac
done
BUDGET=${BUDGET:-${GPU_CHECK_BUDGET:-$([ $MODE = dry ] && echo 150 || echo 290)}}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
for f in $FILES; do : >"$OUT/$f"; done
GC_WORK=$(mktemp -d "${TMPDIR:-/tmp}/pipe-gpu-check.XXXXXX") || exit 2
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$GC_WORK"' EXIT
if [ -n "$BUILD_GIVEN" ]; then
    mkdir -p "$BUILD_GIVEN" && GC_BUILD_DIR=$(cd "$BUILD_GIVEN" && pwd)
else
    GC_BUILD_DIR=/tmp/pipe-gpu-build
    [ $MODE = dry ] && GC_BUILD_DIR=$GC_WORK/build
fi
GC_CARRY=${CARRY_GIVEN:-}
[ -z "$GC_CARRY" ] && [ -d "$SRC/.gpu-carry" ] && GC_CARRY=$SRC/.gpu-carry
[ -n "$GC_CARRY" ] && GC_CARRY=$(cd "$GC_CARRY" 2>/dev/null && pwd)
GC_BUILD_GIVEN=$([ -n "$BUILD_GIVEN" ] && echo 1)
export GC_MODE=$MODE GC_OUT=$OUT GC_WORK GC_BUILD_DIR GC_CARRY GC_BUILD_GIVEN
START=$(now)
DEADLINE=$((START + BUDGET))
SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }
say "pipe gpu-check$([ $MODE = dry ] && echo ' --dry-run (no GPU: --device cuda is the host stand-in)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), source $SRC ($(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')), budget $BUDGET s"

# the preflight: its own step, in the first seconds, bounded
GC_DEADLINE=$((START + 60)) timeout -k 3 60 bash "$SELF" --section preflight >>"$OUT/env.txt" 2>&1
say "# $(cat "$GC_WORK/preflight.line" 2>/dev/null || echo 'preflight: did not finish (env.txt)')"

# cap SECTION: its own limit in seconds
cap() {
    local c
    case $MODE:$1 in
    gpu:build) c=150 ;; gpu:kernels) c=90 ;; gpu:gemm) c=60 ;; gpu:torch) c=90 ;; gpu:parity) c=90 ;; gpu:throughput) c=135 ;;
    dry:build) c=400 ;; dry:kernels) c=20 ;; dry:gemm) c=20 ;; dry:torch) c=45 ;; dry:parity) c=70 ;; dry:throughput) c=70 ;;
    esac
    local o
    for o in ${GPU_CHECK_LIMITS:+${GPU_CHECK_LIMITS//,/ }}; do [ "${o%%=*}" = "$1" ] && c=${o#*=}; done
    echo "$c"
}
selected() {
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}
reported=0 oks=0
set -- $SECTIONS
while [ $# -gt 0 ]; do
    s=$1
    shift
    later=0
    for x in "$@"; do selected "$x" && later=$((later + 1)); done
    t0=$(now)
    if ! selected "$s"; then
        res="skip - not selected (--only $ONLY)"
    else
        left=$((DEADLINE - t0))
        t=$(cap "$s")
        # what the later sections' minimum leaves, but at least MIN_SECTION
        # while the budget has it: the order is the priority
        avail=$((left - MIN_SECTION * later))
        [ "$avail" -lt "$MIN_SECTION" ] && avail=$((left < MIN_SECTION ? left : MIN_SECTION))
        [ "$avail" -lt "$t" ] && t=$avail
        if [ "$t" -lt "$MIN_SECTION" ] && [ "$t" -lt "$(cap "$s")" ]; then
            res="skip - no time left in the budget ($left s left, $MIN_SECTION s kept for each of $later later section(s))"
        else
            rm -f "$GC_WORK/result.$s"
            GC_DEADLINE=$((t0 + t)) timeout -k 5 "$t" bash "$SELF" --section "$s" >>"$OUT/$s.txt" 2>&1
            rc=$?
            el=$(($(now) - t0))
            if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
                res="FAIL - cut after $t s, its time limit ($s.txt)"
                echo "==== cut by the budget after $t s" >>"$OUT/$s.txt"
            elif [ -s "$GC_WORK/result.$s" ]; then
                res="$(cat "$GC_WORK/result.$s") [$el s]"
            else
                res="FAIL - ended without a result (exit $rc; $s.txt)"
            fi
        fi
    fi
    say "$s: $res"
    [ -f "$GC_WORK/detail.$s" ] && tee -a "$SUMMARY" <"$GC_WORK/detail.$s"
    reported=$((reported + 1))
    case $res in ok*) oks=$((oks + 1)) ;; esac
done
nfiles=$(find "$OUT" -type f | wc -l)
say "# total $(($(now) - START)) s of a $BUDGET s budget; $nfiles files in $OUT"
if [ $MODE = dry ]; then
    [ $reported -eq 6 ]
else
    [ $oks -eq 6 ]
fi
