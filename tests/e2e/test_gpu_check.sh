#!/usr/bin/env bash
# scripts/gpu-check.sh (issue 17, docs/gpu.md) tested without a GPU, through
# its --dry-run over the host stand-in of --device cuda: the report (one
# "SECTION: ok|FAIL|skip - detail" line per section, in order), the
# sections' independence (one cut at its time limit reports FAIL and the
# next ones still run), the budget (a hanging last section is cut when the
# budget ends), at most 8 files out; then the fallbacks the preflight picks
# (the generated parser of scripts/gpu-prepare.sh, carried Debian packages
# unpacked into a prefix) and CMake building the grammar with the stand-in
# flex and bison.
#   test_gpu_check.sh PIPEC PIPERT SOURCE_DIR   (the build is PIPERT's folder)
set -u
PIPEC=$1 PIPERT=$2 SRC=$3
B=$(cd "$(dirname "$PIPERT")" && pwd)
CHECK=$SRC/scripts/gpu-check.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-test.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; shift; for l in "$@"; do echo "#   $l"; done; failed=$((failed + 1)); }
check() { # NAME COMMAND...: passes when the command succeeds
    local name=$1
    shift
    if "$@" >"$TMP/why" 2>&1; then ok "$name"; else not_ok "$name" "$(head -5 "$TMP/why")"; fi
}
SECS="build kernels gemm torch parity throughput"
# report OUT STDOUT: the six result lines, in order, each well formed, once
report() {
    local got
    got=$(grep -E '^(build|kernels|gemm|torch|parity|throughput): ' "$2" | cut -d: -f1 | tr '\n' ' ')
    [ "$got" = "$SECS " ] || { echo "sections reported: '$got'"; return 1; }
    local bad
    bad=$(grep -E '^(build|kernels|gemm|torch|parity|throughput): ' "$2" | grep -v -E '^[a-z]+: (ok|FAIL|skip) - .+')
    [ -z "$bad" ] || { echo "malformed: $bad"; return 1; }
    diff <(grep -E '^(build|kernels|gemm|torch|parity|throughput): ' "$2") \
        <(grep -E '^(build|kernels|gemm|torch|parity|throughput): ' "$1/summary.txt") || return 1
}
files_ok() { # OUT: at most 8 files, the named ones, nothing else
    local n
    n=$(find "$1" -mindepth 1 | wc -l)
    [ "$n" -le 8 ] || { echo "$n entries in $1"; return 1; }
    for f in summary env build kernels gemm torch parity throughput; do [ -f "$1/$f.txt" ] || { echo "no $f.txt"; return 1; }; done
}
line_of() { grep -E "^$1: " "$2"; }

# ---- 1. the whole dry run, with gemm made to hang past its own limit -------------------
t0=$SECONDS
GPU_CHECK_TEST_HANG=gemm GPU_CHECK_LIMITS=gemm=4 "$CHECK" --dry-run --build-dir "$B" --budget 100 "$TMP/o1" \
    >"$TMP/s1" 2>&1
rc=$? el=$((SECONDS - t0))
sed "s/^/# /" "$TMP/s1"
check "dry run: exit 0 (every section ran and reported)" test "$rc" -eq 0
check "dry run: one well-formed result line per section, in order, also in summary.txt" report "$TMP/o1" "$TMP/s1"
check "dry run: at most 8 files out, the named ones" files_ok "$TMP/o1"
check "dry run: gemm, made to hang, is cut at its 4 s limit and reported FAIL" \
    grep -q -E '^gemm: FAIL - cut after 4 s' "$TMP/s1"
check "dry run: the sections after the cut one still ran and reported their own result" \
    bash -c "! grep -E '^(torch|parity|throughput): .*(ended without|no time left)' '$TMP/s1'"
check "dry run: within its budget (100 s, took $el s)" test "$el" -le 105
check "dry run: the preflight line comes first" grep -q '^# preflight ([0-9]* s): ' "$TMP/s1"
if [ -e "$B/pipert-cuda-fake.so" ]; then
    check "dry run: build checks the given tree" grep -q -E '^build: ok - dry run, given build: .*pipert-cuda-fake.so' "$TMP/s1"
    check "dry run: kernels and gemm report skip without a device" \
        bash -c "grep -q -E '^kernels: skip - no CUDA device' '$TMP/s1'"
    check "dry run: parity, cpu vs cuda (host stand-in) on 1, 2 and 4 ranks" \
        grep -q -E '^parity: ok - 5/5 on 1, 2, 4 ranks' "$TMP/s1"
    check "dry run: throughput, three models in samples/s, no peak since gemm was cut" \
        grep -q -E '^throughput: ok - mlp [0-9.]+/s, alexnet [0-9.]+/s, gpt2 [0-9.]+/s \(samples/s; no GEMM peak measured' "$TMP/s1"
fi
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || python3 -c 'import torch' >/dev/null 2>&1; then
    check "dry run: torch runs PyTorch's side on the CPU, four figures" \
        grep -q -E '^torch: ok - matmul [0-9.]+ TFLOP/s; samples/s: mlp [0-9.]+, alexnet [0-9.]+, gpt2 [0-9.]+' "$TMP/s1"
fi

# ---- 2. the budget: a hanging last section is cut when the budget ends ------------------
t0=$SECONDS
GPU_CHECK_TEST_HANG=throughput "$CHECK" --dry-run --build-dir "$B" --only throughput --budget 15 "$TMP/o2" \
    >"$TMP/s2" 2>&1
rc=$? el=$((SECONDS - t0))
sed 's/^/# /' "$TMP/s2"
check "budget: exit 0, six lines" bash -c "[ $rc -eq 0 ] && [ \$(grep -c -E '^[a-z]+: (ok|FAIL|skip) - ' '$TMP/s2') -eq 6 ]"
check "budget: throughput cut by the 15 s budget, not its own 70 s limit" \
    grep -q -E '^throughput: FAIL - cut after (1[0-5]|[0-9]) s' "$TMP/s2"
check "budget: the whole run ended within the budget + 5 s (took $el s)" test "$el" -le 20
check "budget: the others report skip, not selected" \
    bash -c "[ \$(grep -c -E '^[a-z]+: skip - not selected' '$TMP/s2') -eq 5 ]"

# ---- 3. the fallbacks: generated parser, carried packages ---------------------------------
C=$TMP/carry
if command -v bison >/dev/null && command -v flex >/dev/null; then
    "$SRC/scripts/gpu-prepare.sh" --no-debs --build-dir "$B" "$C" >"$TMP/prep" 2>&1
    check "gpu-prepare.sh --no-debs: parser, stand-ins, plans, manifest with sizes" \
        bash -c "[ -x '$C/parser/flex' ] && [ -x '$C/parser/bison' ] && [ -f '$C/plans/t_gpt2.bin' ] && grep -q '^size: ' '$C/MANIFEST'"
    # the stand-ins give what the real tools give (run as gpu-prepare.sh runs
    # them), and refuse another grammar
    mkdir -p "$TMP/real" && (cd "$TMP/real" && bison -Wall -Werror --defines=parser.h -o parser.c "$SRC/grammar/parser.y" &&
        flex -olexer.c "$SRC/grammar/lexer.l")
    "$C/parser/bison" -Wall -Werror --defines="$TMP/st.h" -o "$TMP/st.c" "$SRC/grammar/parser.y"
    check "stand-in bison: the parser.c and parser.h bison makes of this grammar" \
        bash -c "cmp '$TMP/real/parser.c' '$TMP/st.c' && cmp '$TMP/real/parser.h' '$TMP/st.h'"
    "$C/parser/flex" -o"$TMP/st.l.c" "$SRC/grammar/lexer.l"
    check "stand-in flex: the lexer.c flex makes of this grammar" cmp "$TMP/real/lexer.c" "$TMP/st.l.c"
    { cat "$SRC/grammar/parser.y"; echo "/* changed */"; } >"$TMP/other.y"
    check "stand-in bison: refuses a grammar it was not made from" \
        bash -c "! '$C/parser/bison' -o '$TMP/x.c' '$TMP/other.y' 2>'$TMP/err' && grep -q 'rerun scripts/gpu-prepare.sh' '$TMP/err'"
    check "stand-ins answer --version as the tools do" \
        bash -c "[ \"\$('$C/parser/flex' --version)\" = \"\$(flex --version | head -1)\" ]"
    # a carried group: a package made here, as apt-get download would fetch it
    P=$TMP/pkg
    mkdir -p "$P/DEBIAN" "$P/usr/bin" "$P/usr/lib/x86_64-linux-gnu/pkgconfig" "$C/debs"
    printf 'Package: fake-mpi\nVersion: 1\nArchitecture: amd64\nMaintainer: test <t@t>\nDescription: test\n' >"$P/DEBIAN/control"
    printf '#!/bin/sh\necho fake\n' >"$P/usr/bin/mpirun.openmpi"
    cp "$P/usr/bin/mpirun.openmpi" "$P/usr/bin/mpicc.openmpi"
    chmod +x "$P/usr/bin/"*
    printf 'prefix=/usr\nlibdir=/usr/lib/x86_64-linux-gnu\nName: fake\nDescription: x\nVersion: 1\n' \
        >"$P/usr/lib/x86_64-linux-gnu/pkgconfig/fake.pc"
    ln -s /lib/x86_64-linux-gnu/libz.so.0.0.0-not-there "$P/usr/lib/x86_64-linux-gnu/libz.so"
    if command -v dpkg-deb >/dev/null && dpkg-deb --build "$P" "$C/debs/fake-mpi_1_amd64.deb" >/dev/null 2>&1; then
        echo "mpi fake-mpi_1_amd64.deb" >"$C/debs/groups"
        for how in dpkg python; do
            pre=$TMP/prefix-$how
            miss="flex bison mpi"
            [ $how = python ] && miss="$miss dpkg-deb"
            GPU_CHECK_PREFIX=$pre GPU_CHECK_PRETEND_MISSING="$miss" "$CHECK" --dry-run --build-dir "$B" --carry "$C" \
                --only build "$TMP/o3" >"$TMP/s3" 2>&1
            check "fallbacks ($how): the preflight picks the generated parser and the carried MPI" \
                grep -q '^decisions: parser generated; pkg-config system; MPI carried; ' "$TMP/o3/env.txt"
            check "fallbacks ($how): the package unpacked into the prefix, alternatives links made" \
                test -x "$pre/usr/bin/mpirun"
            check "fallbacks ($how): .pc prefixes point into the prefix" \
                grep -q "^prefix=$pre/usr\$" "$pre/usr/lib/x86_64-linux-gnu/pkgconfig/fake.pc"
            check "fallbacks ($how): a link to a library the machine has in another version is relinked" \
                test -e "$pre/usr/lib/x86_64-linux-gnu/libz.so"
            check "fallbacks ($how): the build line names them" \
                grep -q -E '^build: (ok|FAIL) - .*parser generated, MPI carried' "$TMP/s3"
        done
    fi
    rm -rf "$C/debs"
    GPU_CHECK_PRETEND_MISSING="flex bison" "$CHECK" --dry-run --build-dir "$B" --carry "$TMP/none" --only build "$TMP/o4" \
        >"$TMP/s4" 2>&1
    check "fallbacks: no flex, no bison, nothing carried: the preflight says what is missing and how to get it" \
        grep -q '^decisions: parser missing (no flex/bison, no generated parser: run scripts/gpu-prepare.sh' "$TMP/o4/env.txt"
    # CMake with the stand-ins and no flex or bison of its own
    if cmake -S "$SRC" -B "$TMP/cb" -DPIPE_CUDA=OFF -DBUILD_TESTING=OFF -DFLEX_EXECUTABLE="$C/parser/flex" \
        -DBISON_EXECUTABLE="$C/parser/bison" >"$TMP/cfg" 2>&1 &&
        cmake --build "$TMP/cb" --target pipe_grammar -j 2 >>"$TMP/cfg" 2>&1; then
        check "CMake builds the grammar with the generated parser (stand-in flex and bison)" \
            bash -c "grep -q 'Found FLEX: $C/parser/flex' '$TMP/cfg' && cmp '$TMP/cb/parser.c' '$C/parser/parser.c'"
    else
        not_ok "CMake builds the grammar with the generated parser (stand-in flex and bison)" "$(grep -m3 -i error "$TMP/cfg")"
    fi
else
    echo "# no bison or flex here: the generated parser's checks are skipped"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
