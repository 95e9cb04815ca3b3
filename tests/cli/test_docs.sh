#!/bin/bash
# The reference tables of the docs against the tables they describe, so a
# layer, loss, schedule or instruction cannot be added without its row:
#   - docs/dsl.md, "Layers and losses": one row per line of `pipec --layers`
#     (plan/layers.def), its first cell `name(signature)` (`name` alone
#     when there are no arguments) and its last cell the summary, word for
#     word; the losses table likewise (plan/losses.def): `name`, summary;
#     and no row for a layer or loss that does not exist;
#   - docs/instructions.md, section 2: the opcode table is `pipec --ops`
#     (schedules/ops.def), byte for byte;
#   - docs/schedules.md, "The built-in schedules": a row for every schedule
#     of `pipec --schedules` (schedules/schedules.def), and no other;
#   - docs/plan-format.md: the enum rows of layer kinds, losses and
#     schedules number them as the tables do (plan.bin stores the position).
#
#   bash tests/cli/test_docs.sh PATH/TO/pipec SOURCE_DIR
set -u
PIPEC=$1 SRC=$2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pipe-docs.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1"; sed 's/^/#   /' "$TMP/diff" | head -20; failed=$((failed + 1)); }
# same NAME WANT GOT: the two files equal
same() {
    if diff "$2" "$3" >"$TMP/diff"; then ok "$1"; else not_ok "$1 (< pipec, > docs)"; fi
}

# the Markdown table under the header line starting with $2, in file $1:
# its rows, without the header and the |---| line
table() {
    awk -v head="$2" 'index($0, head) == 1 { on = 1; n = 0; next }
        on && /^\|/ { if (n++ > 0) print; next }
        on { exit }' "$1"
}
# the cells of a row, trimmed, one per line
cells() { sed 's/^| *//; s/ *|$//; s/ *| */\n/g'; }

"$PIPEC" --layers >"$TMP/layers" || exit 2
"$PIPEC" --ops >"$TMP/ops" || exit 2
"$PIPEC" --schedules >"$TMP/schedules" || exit 2

# ---- layers: "name (sig)" then an indented summary, per layer; "loss name" for losses
awk '/^ / { sub(/^ +/, ""); print head "\t" $0; next }
     /^loss / { head = "loss\t" $2; next }
     { name = $1; sig = $0; sub(/^[^ ]+ +\(/, "", sig); sub(/\)$/, "", sig)
       head = "layer\t" (sig == "" ? "`" name "`" : "`" name "(" sig ")`") }' "$TMP/layers" |
    sort >"$TMP/want"
[ "$(grep -c '^layer' "$TMP/want")" -ge 14 ] || { echo "not ok - pipec --layers read: $(head -3 "$TMP/want")"; exit 1; }
: >"$TMP/got"
while IFS= read -r row; do
    printf '%s\n' "$row" | cells >"$TMP/c"
    printf 'layer\t%s\t%s\n' "$(head -n 1 "$TMP/c")" "$(tail -n 1 "$TMP/c")" >>"$TMP/got"
done < <(table "$SRC/docs/dsl.md" '| layer (signature) |')
while IFS= read -r row; do
    printf '%s\n' "$row" | cells >"$TMP/c"
    printf 'loss\t%s\t%s\n' "$(head -n 1 "$TMP/c" | tr -d '`')" "$(tail -n 1 "$TMP/c")" >>"$TMP/got"
done < <(table "$SRC/docs/dsl.md" '| loss | model output |')
sort "$TMP/got" -o "$TMP/got"
same "docs/dsl.md: a row per layer and loss of pipec --layers, signature and summary word for word" \
    "$TMP/want" "$TMP/got"

# ---- instructions: the table is --ops itself, header included
table "$SRC/docs/instructions.md" "$(head -n 1 "$TMP/ops")" >"$TMP/got"
tail -n +3 "$TMP/ops" >"$TMP/want"
[ "$(wc -l <"$TMP/want")" -ge 12 ] || { echo "not ok - pipec --ops read"; exit 1; }
same "docs/instructions.md: the opcode table is pipec --ops" "$TMP/want" "$TMP/got"

# ---- schedules: a row per schedule, named as `name` or `name(...)`
grep -v '^ ' "$TMP/schedules" | awk '{ print $1 }' | sort >"$TMP/want"
: >"$TMP/got"
while IFS= read -r row; do
    printf '%s\n' "$row" | cells | head -n 1 | sed 's/^`\([a-z0-9-]*\).*/\1/' >>"$TMP/got"
done < <(table "$SRC/docs/schedules.md" '| `schedule =` |')
sort "$TMP/got" -o "$TMP/got"
same "docs/schedules.md: a row per schedule of pipec --schedules" "$TMP/want" "$TMP/got"

# ---- plan.bin stores layers, losses and schedules by their position in the
# table: docs/plan-format.md's enum rows number them in the same order
numbered() { awk '{ printf "%s%d `%s`", (NR > 1 ? ", " : ""), NR - 1, $0 }'; }
enum_row() { # NAME ROW: the row is in docs/plan-format.md, word for word
    if grep -qxF -- "$2" "$SRC/docs/plan-format.md"; then
        ok "$1"
    else
        { echo "want: $2"; grep -F -- "$(echo "$2" | cut -d: -f1)" "$SRC/docs/plan-format.md" | sed 's/^/got:  /'; } >"$TMP/diff"
        not_ok "$1"
    fi
}
enum_row "docs/plan-format.md: the layer kinds, numbered as in plan/layers.def" \
    "| kind | enum | \`plan/layers.def\`: $(grep -v '^ ' "$TMP/layers" | grep -v '^loss ' | awk '{ print $1 }' | numbered) |"
enum_row "docs/plan-format.md: the losses, numbered as in plan/losses.def" \
    "| loss | enum | \`plan/losses.def\`: $(grep '^loss ' "$TMP/layers" | awk '{ print $2 }' | numbered) |"
enum_row "docs/plan-format.md: the schedules, numbered as in schedules/schedules.def" \
    "| schedule | enum | \`schedules/schedules.def\`: $(grep -v '^ ' "$TMP/schedules" | awk '{ print $1 }' | numbered) |"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
