# tests/e2e/lib.sh: what the end-to-end tests share. A test is run as
#
#   bash tests/e2e/test_NAME.sh PIPEC PIPERT SOURCE_DIR
#
# and begins
#
#   set -u
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   e2e_start pipe-NAME "$@"
#
# then prints one "ok - ..." or "not ok - ..." line per check (with "#   "
# lines under a failure saying why) and ends with e2e_end: "N passed, M
# failed", exit 0 when none failed, else 1. Exit 2: the test could not set
# itself up (a plan did not compile); 77: skipped (ctest SKIP_RETURN_CODE).

# Open MPI as root, more ranks than cores, and no single-copy transport
# (containers often forbid the ptrace it needs); what ctest's ENVIRONMENT
# also sets, so a test run by hand behaves the same.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none

# "${MPI[@]}" N PIPERT ...: mpirun under a time limit, so that a hang fails
# the check instead of the whole ctest run (mpi_timeout SECONDS changes it).
mpi_timeout() { MPI=(timeout "$1" mpirun --oversubscribe -np); }
mpi_timeout 120

passed=0 failed=0
# The file whose last E2E_TAIL lines follow a "not ok" that gives no reason
# of its own (tests send each command's output there); empty: none.
E2E_OUT= E2E_TAIL=8

# e2e_start PREFIX PIPEC PIPERT SOURCE_DIR: sets PIPEC, PIPERT, SRC and TMP
# (a new folder, removed at exit with whatever still runs from it: a job
# left behind by a failed check, or the background job in $job).
e2e_start() {
    PIPEC=$2 PIPERT=$3 SRC=$4
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 2
    E2E_OUT=$TMP/out
    trap e2e_cleanup EXIT
}
e2e_cleanup() {
    [ -n "${job:-}" ] && kill -9 "$job" 2>/dev/null
    pkill -9 -f "$TMP/" 2>/dev/null
    rm -rf "$TMP"
}

ok() { echo "ok - $1"; passed=$((passed + 1)); }
# not_ok NAME [WHY]: WHY's lines under it, each as "#   ...", or without
# WHY the tail of $E2E_OUT
not_ok() {
    echo "not ok - $1"
    if [ $# -ge 2 ]; then
        [ -n "$2" ] && printf '%s\n' "$2" | sed 's/^/#   /'
    elif [ -n "$E2E_OUT" ] && [ -f "$E2E_OUT" ]; then
        sed 's/^/#   /' "$E2E_OUT" | tail -n "$E2E_TAIL"
    fi
    failed=$((failed + 1))
}
# check_rc NAME WANT_RC REGEX: the last command (its status in $rc, its
# output in $TMP/out) exited WANT_RC and printed a line matching REGEX
check_rc() {
    if [ "$rc" -eq "$2" ] && grep -Eq -- "$3" "$TMP/out"; then
        ok "$1"
    else
        not_ok "$1 (exit $rc, want $2; want /$3/)" "$(head -n 5 "$TMP/out")"
    fi
}

e2e_end() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}

# e2e_tokens FILE: the test models' tokens (random ids below 64, every
# 23rd a padding 0), the same in every test
e2e_tokens() {
    python3 -c 'import random, struct, sys
random.seed(7)
t = [random.randrange(1, 64) for _ in range(17 * 400)]
for i in range(0, len(t), 23): t[i] = 0
open(sys.argv[1], "wb").write(struct.pack("<%dH" % len(t), *t))' "$1"
}

# losses METRICS: the step losses of a pipert --metrics file, one a line
losses() { python3 -c 'import json,sys; [print(repr(json.loads(l)["loss"])) for l in open(sys.argv[1]) if "\"loss\"" in l]' "$1"; }

# close A B TOL: files of losses with the same count, each within TOL
# relative; prints the worst difference
close() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
a = [float(x) for x in open(sys.argv[1])]; b = [float(x) for x in open(sys.argv[2])]; tol = float(sys.argv[3])
assert len(a) == len(b) and len(a) > 0, (len(a), len(b))
worst = max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b))
print(f"worst relative difference {worst:.2e}")
sys.exit(0 if worst <= tol else 1)
EOF
}

# run_metrics NAME NP PLAN [pipert options]: trains, logging every step;
# metrics in $TMP/NAME.m, losses in $TMP/NAME.l, the output in $TMP/out
run_metrics() {
    local name=$1 np=$2 plan=$3
    shift 3
    "${MPI[@]}" "$np" "$PIPERT" "$plan" --log-every 1 --metrics "$TMP/$name.m" "$@" >"$TMP/out" 2>&1 &&
        losses "$TMP/$name.m" >"$TMP/$name.l"
}
