#!/bin/bash
# tests/cli/test_tune.sh: pipec --tune --world N (docs/profiling.md,
# "Tune"): every row keeps the model's global batch and uses N ranks, rows
# come fastest first, memory_limit drops what does not fit, -o writes the
# first row's plan and that plan verifies and trains; a profile limits the
# micro-batch size to its own; a -D of a tuned setting holds it; the
# refusals.
#
#   bash tests/cli/test_tune.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
e2e_start pipe-tune "$@"
PY=python3
MODEL=$SRC/tests/e2e/tied_mlp.pipe   # 10 layers, 8 micro-batches of 4: global batch 32 on its 1 stage x N/1 ranks

# check_table JSON WORLD GLOBAL [LIMIT]: the invariants of every row
check_table() {
    $PY - "$@" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1])); world, G = int(sys.argv[2]), int(sys.argv[3])
limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
bad = []
if t["world"] != world or t["global_batch"] != G: bad.append(f"world {t['world']} global {t['global_batch']}")
if not t["top"]: bad.append("no rows")
if t["fit"] + t["did_not_verify"] + t["over_memory_limit"] + t["refused_otherwise"] != t["tried"]: bad.append("tally")
steps = [r["step_time"] for r in t["top"]]
if any(b < a * (1 - 1e-9) for a, b in zip(steps, steps[1:])): bad.append(f"not fastest first: {steps}")
for r in t["top"]:
    if r["stages"] * r["data_parallel"] != world: bad.append(f"{r}: ranks")
    if r["micro_batches"] * r["micro_batch_size"] * r["data_parallel"] != G: bad.append(f"{r}: global batch")
    if limit is not None and r["peak_memory_bytes"] > limit: bad.append(f"{r}: over the limit")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}

"$PIPEC" "$MODEL" --tune --world 4 --json >"$TMP/t.json" 2>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && why=$(check_table "$TMP/t.json" 4 128); then
    ok "--tune --world 4 --json: rows use 4 ranks, keep the global batch, fastest first"
else
    not_ok "--tune --world 4 --json" "$(cat "$TMP/out") ${why:-}"
fi
"$PIPEC" "$MODEL" --tune --world 4 >"$TMP/out" 2>&1
rc=$?
check_rc "--tune prints a table of 10 ranked rows" 0 "^  10 "
# a limit below what the fastest needs
LIMIT=$($PY -c 'import json,sys; t=json.load(open(sys.argv[1])); print(min(r["peak_memory_bytes"] for r in t["top"]) - 1)' "$TMP/t.json")
"$PIPEC" "$MODEL" --tune --world 4 --json -D "memory_limit = $((LIMIT / 1024)) KiB" >"$TMP/m.json" 2>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && why=$(check_table "$TMP/m.json" 4 128 "$(( (LIMIT / 1024) * 1024 ))") &&
    $PY -c 'import json,sys; assert json.load(open(sys.argv[1]))["over_memory_limit"] > 0' "$TMP/m.json"; then
    ok "memory_limit: plans over it dropped, every row under it"
else
    not_ok "memory_limit respected" "$(cat "$TMP/out") ${why:-}"
fi
# -o: the first row's plan, which verifies (pipec reads it back) and trains
"$PIPEC" "$MODEL" --tune --world 4 -D link_bandwidth=1 -o "$TMP/best.bin" >"$TMP/out" 2>&1
rc=$?
check_rc "-o writes the best plan" 0 "wrote the best plan \(rank 1\) to"
"$PIPEC" "$MODEL" --tune --world 4 -D link_bandwidth=1 --json >"$TMP/b.json" 2>/dev/null
"$PIPEC" "$TMP/best.bin" --stats --json >"$TMP/s.json" 2>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && $PY - "$TMP/b.json" "$TMP/s.json" <<'EOF'
import json, sys
top = json.load(open(sys.argv[1]))["top"][0]; s = json.load(open(sys.argv[2]))
assert abs(s["step_time"] - top["step_time"]) <= 1e-9 * top["step_time"], (s["step_time"], top)
assert len(s["stages"]) == top["stages"], (len(s["stages"]), top)
EOF
then ok "the written plan verifies on reading and is the first row's (stages, predicted step)"
else not_ok "the written plan is the first row's" "$(cat "$TMP/out")"; fi
"${MPI[@]}" 4 "$PIPERT" "$TMP/best.bin" --steps 2 >"$TMP/out" 2>&1
rc=$?
check_rc "and trains on 4 ranks" 0 "^trained 2 steps"
# with link_bandwidth, data-parallel reductions cost: not every row is pure data parallelism
if $PY -c 'import json,sys; t=json.load(open(sys.argv[1]))["top"]; assert any(r["stages"] > 1 for r in t)' "$TMP/b.json"; then
    ok "with link_bandwidth, pipelines compete with pure data parallelism"
else
    not_ok "with link_bandwidth, pipelines compete" "$(head -c 600 "$TMP/b.json")"
fi

# a profile: its micro-batch size only
"$PIPEC" "$MODEL" -o "$TMP/one.bin" >/dev/null 2>&1 || exit 2
"${MPI[@]}" 1 "$PIPERT" "$TMP/one.bin" --steps 3 --profile "$TMP/p.json" >"$TMP/out" 2>&1 || exit 2
"$PIPEC" "$MODEL" --tune --world 2 --json -D "costs=profile(\"$TMP/p.json\")" >"$TMP/p-t.json" 2>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && $PY -c '
import json,sys; t=json.load(open(sys.argv[1]))
assert t["costs"].endswith("p.json") and all(r["micro_batch_size"] == 4 for r in t["top"]), t' "$TMP/p-t.json"; then
    ok "with a profile: measured costs, its micro-batch size only"
else
    not_ok "with a profile" "$(cat "$TMP/out")"
fi

# a -D of a setting the tuner varies holds it: every row has it (and
# without it the table has other values, so the check can fail)
"$PIPEC" "$MODEL" --tune --world 4 --json -D stages=2 -D "schedule = zb-h1" >"$TMP/h.json" 2>"$TMP/out"
rc=$?
if [ $rc -eq 0 ] && why=$(check_table "$TMP/h.json" 4 64) && $PY -c '
import json,sys; t=json.load(open(sys.argv[1])); u=json.load(open(sys.argv[2]))
assert t["held"] == ["stages=2", "schedule=zb-h1"], t["held"]
assert all(r["stages"] == 2 and r["schedule"] == "zb-h1" for r in t["top"]), t["top"]
assert any(r["stages"] != 2 or r["schedule"] != "zb-h1" for r in u["top"]) and u["held"] == []' "$TMP/h.json" "$TMP/t.json"; then
    ok "-D stages=2 -D schedule=zb-h1: held, every row has both"
else
    not_ok "-D holds a tuned setting" "$(cat "$TMP/out") ${why:-}"
fi
"$PIPEC" "$MODEL" --tune --world 4 -D stages=3 >"$TMP/out" 2>&1
rc=$?
check_rc "a held setting no candidate has: exit 1, says which" 1 "no plan fits: 0 tried.*held by -D: stages=3"

# refusals
"$PIPEC" "$MODEL" --tune >"$TMP/out" 2>&1
rc=$?
check_rc "--tune without --world" 1 "--tune needs --world N"
"$PIPEC" "$MODEL" --tune --world 0 >"$TMP/out" 2>&1
rc=$?
check_rc "--world 0" 1 "--world needs a rank count"
"$PIPEC" "$MODEL" --world 2 >"$TMP/out" 2>&1
rc=$?
check_rc "--world without --tune" 1 "--world goes with --tune"
"$PIPEC" "$TMP/one.bin" --tune --world 2 >"$TMP/out" 2>&1
rc=$?
check_rc "--tune on a plan.bin" 1 "is a compiled plan: --tune takes a .pipe file"
"$PIPEC" "$MODEL" --tune --world 2 -D "memory_limit = 1 KiB" >"$TMP/out" 2>&1
rc=$?
check_rc "nothing fits: exit 1, the tally" 1 "error: --tune --world 2: no plan fits: [0-9]+ tried, [0-9]+ did not verify, [0-9]+ over memory_limit"
e2e_end
