#!/bin/bash
# tests/e2e/test_profile.sh: pipert --profile and pipec's costs =
# profile(...) end to end (docs/profiling.md): a profile of the tied MLP on
# one stage has every layer timed over every recorded micro-batch and no
# links; one on two ranks gathers both stages' layers and measures the
# link; pipec predicts any stage count and schedule from either, balances
# partition = time, and refuses another model or micro-batch size where
# the setting is written; the profile's bits of training are the run's
# (profiling changes no result). Timing accuracy is a benchmark
# (bench/predict_accuracy.py), not a check here.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-profile "$@"
PY=python3

MODEL=$SRC/tests/e2e/tied_mlp.pipe
"$PIPEC" "$MODEL" -o "$TMP/one.bin" >"$TMP/out" 2>&1 || exit 2
"$PIPEC" "$MODEL" -D stages=2 -o "$TMP/two.bin" >"$TMP/out" 2>&1 || exit 2
NLAYERS=$("$PIPEC" "$MODEL" --stats --json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))')

# field checks on a profile: FILE NLAYERS SAMPLES_PER_LAYER LINKS
check_profile() {
    $PY - "$@" <<'EOF'
import json, sys
path, n, samples, links = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
p = json.load(open(path))
bad = []
if p["format"] != "pipe-profile" or p["version"] != 1: bad.append("format/version")
if len(p["layers"]) != n: bad.append(f"{len(p['layers'])} layers, want {n}")
for L in p["layers"]:
    if L["samples"] != samples: bad.append(f"layer {L['index']}: {L['samples']} samples, want {samples}")
    if not L["forward_ms"] > 0: bad.append(f"layer {L['index']}: forward_ms {L['forward_ms']}")
    if not L["activation_bytes"] > 0: bad.append(f"layer {L['index']}: no activation bytes")
# the linears have weights: both backward halves measured (the first
# layer's input gradient is never computed: its input is data)
for i in (0, 2, 5, 7, 9):
    L = p["layers"][i]
    if not ((L["backward_input_ms"] > 0) == (i > 0) and L["backward_weight_ms"] > 0): bad.append(f"layer {i}: backward {L}")
if not (p["loss_ms"] > 0 and p["optimizer_ns_per_param"] > 0 and p["step_ms"] > 0): bad.append("loss/optimizer/step")
if p["backend"] != "cpu" or p["micro_batch_size"] != 4 or p["threads"] != 1: bad.append("backend/mbs/threads")
if len(p["links"]) != links: bad.append(f"{len(p['links'])} links, want {links}")
for l in p["links"]:
    if not (l["latency_us"] > 0 and l["bandwidth_gbps"] > 0 and l["to_stage"] == l["from_stage"] + 1): bad.append(f"link {l}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}

# one stage: 5 steps, the first a warm-up: 4 x 8 micro-batches per layer
"${MPI[@]}" 1 "$PIPERT" "$TMP/one.bin" --steps 5 --profile "$TMP/p1.json" --log-every 1 >"$TMP/out" 2>&1
rc=$?
check_rc "one stage: --profile writes the file and says so" 0 "profile of 5 steps \(the first a warm-up\) written to"
if why=$(check_profile "$TMP/p1.json" "$NLAYERS" 32 0); then
    ok "one stage: every layer timed over the 32 recorded micro-batches, no links"
else
    not_ok "one stage: the profile's fields" "$why"
fi
grep '^step' "$TMP/out" | awk '{print $4}' >"$TMP/loss.profiled"

# profiling changes no number
"${MPI[@]}" 1 "$PIPERT" "$TMP/one.bin" --steps 5 --log-every 1 >"$TMP/out" 2>&1
grep '^step' "$TMP/out" | awk '{print $4}' >"$TMP/loss.plain"
if [ -s "$TMP/loss.plain" ] && cmp -s "$TMP/loss.plain" "$TMP/loss.profiled"; then
    ok "the profiled run's losses are the plain run's"
else
    not_ok "the profiled run's losses are the plain run's" "$(paste "$TMP/loss.plain" "$TMP/loss.profiled")"
fi

# two ranks: both stages' layers gathered, the link measured
"${MPI[@]}" 2 "$PIPERT" "$TMP/two.bin" --steps 3 --profile "$TMP/p2.json" >"$TMP/out" 2>&1
rc=$?
check_rc "two stages: --profile on 2 ranks" 0 "written to"
if why=$(check_profile "$TMP/p2.json" "$NLAYERS" 16 1); then
    ok "two stages: every layer of both stages, and the link from stage 0 to 1"
else
    not_ok "two stages: the profile's fields" "$why"
fi

# pipec predicts from it, for any stage count and schedule
for s in "1f1b" "zb-h1" "interleaved(chunks = 2)" "gpipe"; do
    "$PIPEC" "$MODEL" -D stages=2 -D "schedule=$s" -D "costs=profile(\"$TMP/p1.json\")" --stats --json \
        >"$TMP/s.json" 2>"$TMP/out"
    rc=$?
    flops=$("$PIPEC" "$MODEL" -D stages=2 -D "schedule=$s" --stats --json |
        $PY -c 'import json,sys; print(json.load(sys.stdin)["step_time"])')
    if [ $rc -eq 0 ] && $PY - "$TMP/s.json" "$TMP/p1.json" "$flops" <<'EOF'
import json, sys
s, p, flops = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
# measured costs are milliseconds on a CPU, far from 100 TFLOP/s: the
# step must be at least the slowest stage's share of the measured work
work = sum(L["forward_ms"] + L["backward_input_ms"] + L["backward_weight_ms"] for L in p["layers"]) / 1e3
M = 8
assert s["step_time"] > 10 * flops, (s["step_time"], flops)
assert s["step_time"] >= M * work / 2 * 0.999, (s["step_time"], M * work / 2)
assert s["step_time"] <= M * work * 1.5 + 0.01, (s["step_time"], M * work)
EOF
    then ok "costs = profile(...): 2 stages, $s: a step between the even split and the whole work"
    else not_ok "costs = profile(...): 2 stages, $s" "$(cat "$TMP/out")"; fi
done
"$PIPEC" "$MODEL" -D stages=2 -D "costs=profile(\"$TMP/p1.json\")" --stats >"$TMP/out" 2>&1
rc=$?
check_rc "--stats names where the costs came from" 0 "predicted step .* from the costs measured in $TMP/p1.json"
"$PIPEC" "$MODEL" -D stages=2 -D "costs=profile(\"$TMP/p2.json\")" --list >"$TMP/out" 2>&1
rc=$?
check_rc "--list's header: measured costs, measured links" 0 "^predicted \(costs measured in .*p2.json, links measured\)"
"$PIPEC" "$MODEL" -D stages=3 -D partition=time -D "costs=profile(\"$TMP/p1.json\")" --stats >"$TMP/out" 2>&1
rc=$?
check_rc "partition = time with a profile: balanced on the measured times" 0 "partition time"
"$PIPEC" "$MODEL" -D stages=3 -D partition=time -D "costs=profile(\"$TMP/p1.json\")" -o "$TMP/time.bin" >"$TMP/out" 2>&1
"$PIPEC" "$TMP/time.bin" --list >"$TMP/out" 2>&1
rc=$?
check_rc "a plan with measured costs lists them from plan.bin" 0 "costs measured in"
"${MPI[@]}" 3 "$PIPERT" "$TMP/time.bin" --steps 2 >"$TMP/out" 2>&1
rc=$?
check_rc "and trains" 0 "^trained 2 steps"

# refusals, where the setting is
"$PIPEC" "$MODEL" -D micro_batch_size=8 -D "costs=profile(\"$TMP/p1.json\")" >"$TMP/out" 2>&1
rc=$?
check_rc "another micro-batch size refused at -D costs" 1 "^-D costs:1:1: error: .*micro_batch_size 4, this plan has 8"
sed 's/linear(8)/linear(9)/' "$MODEL" >"$TMP/other.pipe"
"$PIPEC" "$TMP/other.pipe" -D "costs=profile(\"$TMP/p1.json\")" >"$TMP/out" 2>&1
rc=$?
check_rc "another model refused" 1 "not on this model 'tied'"
cp "$TMP/p1.json" "$TMP/near.json"
sed "s|schedule = 1f1b }|schedule = 1f1b; costs = profile(\"near.json\") }|" "$MODEL" >"$TMP/in_file.pipe"
"$PIPEC" "$TMP/in_file.pipe" --stats >"$TMP/out" 2>&1
rc=$?
check_rc "a path in the file is relative to the file's folder" 0 "from the costs measured in near.json"
sed -i 's/micro_batch_size = 4/micro_batch_size = 2/' "$TMP/in_file.pipe"
"$PIPEC" "$TMP/in_file.pipe" >"$TMP/out" 2>&1
rc=$?
check_rc "a refusal names the file, line and column of the setting" 1 "in_file.pipe:19:[0-9]+: error: the profile was measured at micro_batch_size 4"
"$PIPEC" "$MODEL" -D "costs=profile(\"$TMP/none.json\")" >"$TMP/out" 2>&1
rc=$?
check_rc "a missing profile" 1 "cannot read profile '.*none.json'"
"${MPI[@]}" 1 "$PIPERT" "$TMP/one.bin" --steps 1 --profile "$TMP/p0.json" >"$TMP/out" 2>&1
rc=$?
check_rc "--profile with one step refused" 1 "needs at least 2 steps"
"${MPI[@]}" 1 "$PIPERT" "$TMP/one.bin" --steps 2 --profile "$TMP/nodir/p.json" >"$TMP/out" 2>&1
rc=$?
check_rc "--profile into a missing folder: exit 1, the path named" 1 "--profile .*nodir/p.json: cannot write"

# --device cuda's code over the host stand-in (where it is built)
FAKE=$(dirname "$PIPERT")/pipert-cuda-fake.so
if [ -f "$FAKE" ] && "$PIPERT" --version | grep -q 'devices: cpu, cuda'; then
    "${MPI[@]}" 2 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/two.bin" --steps 3 --device cuda --profile "$TMP/pc.json" \
        >"$TMP/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && $PY -c 'import json,sys; p=json.load(open(sys.argv[1])); assert p["backend"]=="cuda" and all(L["samples"]==16 for L in p["layers"]) and len(p["links"])==1' "$TMP/pc.json"; then
        ok "--device cuda (host stand-in): a profile of both stages"
    else
        not_ok "--device cuda (host stand-in): a profile"
    fi
fi
e2e_end
