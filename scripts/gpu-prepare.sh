#!/usr/bin/env bash
# scripts/gpu-prepare.sh [--build-dir DIR] [--no-debs] [CARRY]: prepares,
# on this machine (Debian 12, network to Debian's mirror, flex and bison
# installed, pipe built), what the GPU machine may lack, into CARRY (default
# .gpu-carry at the repository root; ignored by git, carried by the device
# tool's `carry`). docs/gpu.md, "On a GPU machine", says how it is used.
#
#   CARRY/parser/  bison's and flex's output for this tree's grammar
#                  (parser.c, parser.h, lexer.c), sha256 of the grammar files
#                  they were made from, and two stand-ins, parser/flex and
#                  parser/bison, that answer --version as the real tools did
#                  and copy those files where CMake asks, after checking the
#                  grammar file is the one they were made from; the check
#                  script points CMake at them (FLEX_EXECUTABLE,
#                  BISON_EXECUTABLE) when flex or bison is missing there
#   CARRY/debs/    Debian packages (apt-get download), by group, each with
#                  the libraries it needs except those any Linux image has
#                  (libc6, libstdc++6, zlib1g, ...): mpi (Open MPI: mpirun,
#                  mpicc, mpi.h, libmpi), blas (OpenBLAS, pthread flavour,
#                  with cblas.h and openblas.pc), zlib (zlib.h), jansson
#                  (libjansson.so.4, jansson.h, jansson.pc: the JSON reader), pkgconfig
#                  (pkgconf). debs/groups lists "GROUP FILE.deb"; the check
#                  script unpacks a group with `dpkg -x` into a prefix
#                  (/tmp/pipe-prefix, never /) only when the GPU machine lacks
#                  it
#   CARRY/plans/   the check's plans compiled here by pipec (a fallback for a
#                  machine where pipec does not build), their token files
#                  and forward FLOPs per sample
#   CARRY/MANIFEST the commit, the date, what is where, the sizes
#
# It ends by printing the folder's size and the working tree's, against the
# device tool's 64 MiB limit for both together.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR="" DEBS=1 CARRY=""
while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-debs) DEBS=0 ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-prepare.sh: unknown option $1" >&2; exit 2 ;;
    *) CARRY=$1 ;;
    esac
    shift
done
CARRY=${CARRY:-$SRC/.gpu-carry}
mkdir -p "$CARRY" || exit 2
CARRY=$(cd "$CARRY" && pwd)
say() { echo "gpu-prepare: $*"; }
fail() { echo "gpu-prepare: $*" >&2; exit 1; }

# ---- the generated parser ------------------------------------------------------------
command -v bison >/dev/null && command -v flex >/dev/null || fail "needs bison and flex here (apt-get install bison flex)"
P=$CARRY/parser
rm -rf "$P" && mkdir -p "$P" || exit 1
# CMake's commands (BISON_TARGET / FLEX_TARGET in CMakeLists.txt), with the
# outputs named relative to their folder (so #line and the header guard do
# not carry this machine's paths)
(cd "$P" && bison -Wall -Werror --defines=parser.h -o parser.c "$SRC/grammar/parser.y") || fail "bison failed"
(cd "$P" && flex -olexer.c "$SRC/grammar/lexer.l") || fail "flex failed"
(cd "$SRC/grammar" && sha256sum parser.y lexer.l) >"$P/sources.sha256"
BISON_V=$(bison --version | head -1) FLEX_V=$(flex --version | head -1)
for tool in bison flex; do
    if [ $tool = bison ]; then ver=$BISON_V gram=parser.y; else ver=$FLEX_V gram=lexer.l; fi
    cat >"$P/$tool" <<EOF
#!/bin/sh
# A stand-in for $tool, written by scripts/gpu-prepare.sh: copies what the
# real $tool ($ver) made from grammar/$gram on the preparing machine, after
# checking that the grammar it is given is that same file (sha256).
here=\$(cd "\$(dirname "\$0")" && pwd)
case "\${1:-}" in --version | -V) echo "$ver"; exit 0 ;; esac
out="" hdr="" in=""
while [ \$# -gt 0 ]; do
    case \$1 in
    -o) out=\$2; shift ;;
    -o*) out=\${1#-o} ;;
    --output=* | --outfile=*) out=\${1#*=} ;;
    --defines=* | --header=*) hdr=\${1#*=} ;;
    -*) ;;
    *) in=\$1 ;;
    esac
    shift
done
[ -n "\$in" ] && [ -n "\$out" ] || { echo "$tool (stand-in): needs -o OUT and the grammar file" >&2; exit 2; }
want=\$(sed -n 's/^\([0-9a-f]*\)  $gram\$/\1/p' "\$here/sources.sha256")
have=\$(sha256sum "\$in" | cut -d' ' -f1)
if [ "\$want" != "\$have" ]; then
    echo "$tool (stand-in): \$in is not the grammar the generated parser was made from; rerun scripts/gpu-prepare.sh" >&2
    exit 1
fi
EOF
    if [ $tool = bison ]; then
        echo 'cp "$here/parser.c" "$out" && { [ -z "$hdr" ] || cp "$here/parser.h" "$hdr"; }' >>"$P/$tool"
    else
        echo 'cp "$here/lexer.c" "$out"' >>"$P/$tool"
    fi
    chmod +x "$P/$tool"
done
say "parser: $(cd "$P" && ls | tr '\n' ' ')(from $BISON_V, $FLEX_V)"

# ---- Debian packages -------------------------------------------------------------------
# what any Linux image with CUDA and Python has, or what nothing here needs
# at run time (hwloc's X11/OpenCL plugins, InfiniBand providers, ssh)
BASE=" libc6 libgcc-s1 libstdc++6 gcc-12-base zlib1g libudev1 adduser debconf libatomic1 libcrypt1 libselinux1
 libpcre2-8-0 passwd libpam0g libpam-modules libaudit1 libsemanage2 perl-base dpkg libzstd1 liblzma5 libbz2-1.0
 libmd0 tar base-files libtinfo6 libsystemd0 libcap2 libgcrypt20 liblz4-1 openssh-client libx11-6 libxml2
 libhwloc-plugins ocl-icd-libopencl1 ibverbs-providers libssl3 libgmp10 libquadmath0 libuuid1 "
# deps_of PKG: its Depends and Pre-Depends, the first alternative of each
deps_of() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | awk '/^(Pre-)?Depends:/ {
        sub(/^[^:]*: /, ""); n = split($0, a, /, /)
        for (i = 1; i <= n; i++) { split(a[i], b, / \| /); x = b[1]; sub(/ .*/, "", x); sub(/:any$/, "", x); print x } }'
}
# closure ROOTS...: the roots and everything they need, less BASE
closure() {
    local queue="$*" seen=" " p d
    while [ -n "${queue// /}" ]; do
        set -- $queue
        p=$1
        shift
        queue="$*"
        case "$seen" in *" $p "*) continue ;; esac
        case "$BASE" in *" $p "*) continue ;; esac
        seen="$seen$p "
        for d in $(deps_of "$p"); do queue="$queue $d"; done
    done
    echo $seen
}
if [ "$DEBS" = 1 ]; then
    command -v apt-get >/dev/null || fail "needs apt-get (a Debian machine); --no-debs skips the packages"
    apt-cache show --no-all-versions libopenmpi3 >/dev/null 2>&1 || apt-get update -qq || fail "apt-get update failed"
    D=$CARRY/debs
    rm -rf "$D" && mkdir -p "$D" || exit 1
    # GROUP: run-time closure roots | development packages taken alone
    GROUPS_DEF="mpi:openmpi-bin libopenmpi3 openmpi-common|libopenmpi-dev
blas:libopenblas0-pthread|libopenblas-pthread-dev
zlib:|zlib1g-dev
jansson:libjansson4|libjansson-dev
pkgconfig:pkg-config|"
    all=" "
    while IFS= read -r line; do
        g=${line%%:*} rest=${line#*:}
        roots=${rest%%|*} dev=${rest#*|}
        pk="$( [ -n "$roots" ] && closure $roots) $dev"
        for p in $pk; do
            echo "$g $p" >>"$D/groups.pkgs"
            case "$all" in *" $p "*) ;; *) all="$all$p " ;; esac
        done
    done <<<"$GROUPS_DEF"
    (cd "$D" && apt-get download $all >"$D/download.log" 2>&1) || { cat "$D/download.log"; fail "apt-get download failed"; }
    rm -f "$D/download.log"
    # groups: GROUP FILE.deb (the file apt-get saved for each package)
    while read -r g p; do
        f=$(cd "$D" && ls "${p}"_*.deb 2>/dev/null | head -1)
        [ -n "$f" ] || fail "no .deb for $p"
        echo "$g $f"
    done <"$D/groups.pkgs" >"$D/groups"
    rm -f "$D/groups.pkgs"
    for g in mpi blas zlib jansson pkgconfig; do
        say "debs, $g: $(awk -v g=$g '$1 == g { sub(/_.*/, "", $2); printf "%s ", $2 }' "$D/groups")"
    done
fi

# ---- plans -------------------------------------------------------------------------------
PIPEC=""
for b in "$BUILD_DIR" "$SRC/build-gpu" "$SRC/build"; do
    [ -n "$b" ] && [ -x "$b/pipec" ] && { PIPEC=$b/pipec; break; }
done
if [ -n "$PIPEC" ]; then
    rm -rf "$CARRY/plans"
    "$SRC/scripts/gpu-check.sh" --make-plans "$CARRY/plans" --pipec "$PIPEC" || fail "compiling the plans failed"
    say "plans ($PIPEC): $(cd "$CARRY/plans" && ls *.bin | tr '\n' ' ')"
else
    say "plans: none (no pipec: build first, or pass --build-dir)"
fi

# ---- manifest and sizes -------------------------------------------------------------------
tree_bytes=$(cd "$SRC" && { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null |
    awk '{ s += $1 } END { print s + 0 }')
carry_bytes=$(du -sb "$CARRY" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
{
    echo "prepared by scripts/gpu-prepare.sh on $(date -u '+%Y-%m-%d %H:%M UTC'), $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
    echo "commit $(cd "$SRC" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "parser: $BISON_V, $FLEX_V"
    [ -f "$CARRY/debs/groups" ] && sed 's/^/deb: /' "$CARRY/debs/groups"
    [ -d "$CARRY/plans" ] && (cd "$CARRY/plans" && ls | sed 's/^/plan: /')
    echo "size: this folder $(mib "$carry_bytes"), the working tree $(mib "$tree_bytes")"
} >"$CARRY/MANIFEST"
total=$((carry_bytes + tree_bytes))
say "$CARRY: $(mib "$carry_bytes"); the working tree: $(mib "$tree_bytes"); together $(mib "$total") of the 64 MiB the device tool carries"
[ "$total" -le $((64 * 1048576)) ] || fail "over 64 MiB together: carry less"
exit 0
