#!/usr/bin/env bash
# The layering of docs/design-notes.md ("One plan IR shared by both
# programs"): the runtime reads plans, never source.
#   - every header runtime/ includes is one of plan/, schedules/, kernels/,
#     base/ or runtime/ itself (never compiler/ or grammar/);
#   - so is every header plan/, schedules/ and base/ include (the IR does
#     not lean on the compiler either);
#   - pipert holds no parser, front-end or generator symbol (nm), and does
#     hold the plan reader (so the check looks at the right binary);
#   - no two headers of the tree share a name (one include path for all).
#   test_layering.sh PIPERT SOURCE_DIR
set -u
PIPERT=$1 SRC=$2
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | head -8 | sed 's/^/#   /'; failed=$((failed + 1)); }

# includes_outside DIR ALLOWED...: the quoted includes of DIR's sources that
# name no header in the allowed folders
includes_outside() {
    local dir=$1
    shift
    local allowed=("$@")
    grep -ho '#include "[^"]*"' "$SRC/$dir"/*.c "$SRC/$dir"/*.h 2>/dev/null | sed 's/#include "\(.*\)"/\1/' | sort -u |
        while read -r h; do
            found=0
            for a in "${allowed[@]}"; do
                [ -f "$SRC/$a/$h" ] && found=1
            done
            # a .def table or a header of the folder itself
            [ -f "$SRC/$dir/$h" ] && found=1
            [ "$found" = 1 ] || echo "$h"
        done
}

for cfg in "runtime:plan schedules kernels base" "plan:schedules kernels base" "schedules:base" "base:" \
           "kernels:"; do
    dir=${cfg%%:*} allowed=${cfg#*:}
    # shellcheck disable=SC2086
    bad=$(includes_outside "$dir" $allowed)
    if [ -z "$bad" ]; then
        ok "$dir/ includes only ${allowed:-its own} headers"
    else
        not_ok "$dir/ includes only ${allowed:-its own} headers" "outside: $(echo $bad)"
    fi
done

if ! command -v nm >/dev/null; then
    echo "ok - # skip: no nm"
else
    syms=$(nm "$PIPERT" 2>/dev/null | awk 'NF >= 3 { print $3 }')
    if echo "$syms" | grep -qx 'plan_read'; then
        ok "pipert holds the plan reader (plan_read)"
    else
        not_ok "pipert holds the plan reader (plan_read)" "nm found no plan_read in $PIPERT"
    fi
    leaked=$(echo "$syms" | grep -E '^(gr_|pc_|ast_|sched_gen_|sched_text_read)' | head -8)
    if [ -z "$leaked" ]; then
        ok "pipert holds no parser, front-end or generator symbol"
    else
        not_ok "pipert holds no parser, front-end or generator symbol" "$leaked"
    fi
fi

dups=$(find "$SRC/base" "$SRC/plan" "$SRC/grammar" "$SRC/compiler" "$SRC/schedules" "$SRC/runtime" "$SRC/kernels" \
    -name '*.h' -printf '%f\n' | sort | uniq -d)
if [ -z "$dups" ]; then
    ok "no two headers share a name"
else
    not_ok "no two headers share a name" "$dups"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
