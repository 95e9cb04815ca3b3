#!/bin/bash
# tests/e2e/test_tensor_parallel.sh: tensor parallelism (tensor_parallel = T,
# docs/parallelism.md). On the GPT (dropout inside every block, tied
# embeddings), LLaMA (grouped-query), split-linear MLP (column and row,
# dropout between) and vocabulary-parallel GPT (split = vocab embedding,
# column-split head, untied and tied) test models: 10 steps' losses with
# T = 2 against T = 1 within 1e-5 relative, on 1 and 2 stages (1f1b and
# zb-h1) and with 2 replicas, with gradient clipping (and at T = 2 the
# same bits on 1 stage and on 2 under either schedule), and T = 4 on one
# stage, and T = 2 with zero = 1; every rank's allocated memory (pipert --metrics) within 2% of
# pipec's prediction and below T = 1's; checkpoints whole and by name
# (saved with T = 2, resumed with T = 1, and the other way, each ending as
# the straight run); --export with T = 2 the tensors of T = 1's within
# 1e-4; --init with T = 2 from a T = 1 export, bit for bit; the refusals.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-tp "$@"
PY=python3

e2e_tokens "$TMP/tokens.u16" || exit 2
for m in tied_gpt llama_gqa split_mlp vocab_gpt; do sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/$m.pipe" >"$TMP/$m.pipe"; done
# the vocabulary-parallel GPT with its head tied to the split table
sed 's/positions = 16, split = vocab)/positions = 16, split = vocab) as wte/; s/linear(64, bias = false, split = column)/linear(64, bias = false, tie = wte, split = column)/' \
    "$TMP/vocab_gpt.pipe" >"$TMP/vocab_tied.pipe"
grep -q 'tie = wte, split = column' "$TMP/vocab_tied.pipe" || { echo "vocab_tied.pipe: the sed missed"; exit 2; }

# memory T1_METRICS T2_METRICS T2_STATS: every T = 2 rank allocates what
# pipec predicts for its stage (within 2%), and less than the T = 1 ranks
memory() {
    $PY - "$@" <<'EOF'
import json, sys
def records(p): return [json.loads(l) for l in open(p) if '"memory_bytes"' in l]
t1, t2, stats = records(sys.argv[1]), records(sys.argv[2]), json.load(open(sys.argv[3]))
assert len(t2) == 2 * len(t1) > 0, (len(t1), len(t2))
assert sorted({r["tp"] for r in t2}) == [0, 1], t2
for r in t2:
    want = stats["stages"][r["stage"]]["memory_bytes"]
    assert abs(r["memory_bytes"] - want) <= 0.02 * want, (r, want)
    same = [x for x in t1 if x["stage"] == r["stage"] and x["replica"] == r["replica"]]
    assert same and r["memory_bytes"] < same[0]["memory_bytes"], (r, same)
print(f"{len(t2)} ranks, largest {max(r['memory_bytes'] for r in t2)} bytes against {max(r['memory_bytes'] for r in t1)}")
EOF
}

for model in tied_gpt llama_gqa split_mlp vocab_gpt vocab_tied; do
    for shape in "1 1 1f1b" "2 1 1f1b" "2 1 zb-h1" "1 2 1f1b"; do
        set -- $shape
        st=$1 dp=$2 sched=$3
        tag=$model-s$st-d$dp-$sched
        for t in 1 2; do
            "$PIPEC" "$TMP/$model.pipe" -D stages=$st -D data_parallel=$dp -D schedule=$sched -D tensor_parallel=$t \
                -D grad_clip=0.5 -o "$TMP/$tag-t$t.bin" >"$TMP/out" 2>&1 || { cat "$TMP/out"; exit 2; }
            "$PIPEC" "$TMP/$tag-t$t.bin" --stats --json >"$TMP/$tag-t$t.stats" 2>"$TMP/out" || exit 2
        done
        if run_metrics "$tag-t1" $((st * dp)) "$TMP/$tag-t1.bin" --steps 10 &&
            run_metrics "$tag-t2" $((st * dp * 2)) "$TMP/$tag-t2.bin" --steps 10 --export "$TMP/$tag-t2.st" &&
            why=$(close "$TMP/$tag-t2.l" "$TMP/$tag-t1.l" 1e-5); then
            ok "$tag: tensor_parallel = 2 against 1, 10 steps with clipping ($why)"
        else
            not_ok "$tag: tensor_parallel = 2 against 1" "${why:-$(tail -5 "$TMP/out")}"
        fi
        if why=$(memory "$TMP/$tag-t1.m" "$TMP/$tag-t2.m" "$TMP/$tag-t2.stats" 2>&1); then
            ok "$tag: each of the tp ranks allocates what pipec predicts, less than with T = 1 ($why)"
        else
            not_ok "$tag: memory with tensor_parallel = 2" "$why"
        fi
    done
done

# the bitwise contract holds at a fixed T: with T = 2, 1 stage, 2 stages
# under 1f1b and under zb-h1 give the same losses and the same weights,
# bit for bit (the tp sums are the same sums wherever the block runs)
for model in tied_gpt llama_gqa split_mlp vocab_gpt vocab_tied; do
    a=$TMP/$model-s1-d1-1f1b-t2
    same=yes
    for other in "$TMP/$model-s2-d1-1f1b-t2" "$TMP/$model-s2-d1-zb-h1-t2"; do
        cmp -s "$a.l" "$other.l" && cmp -s "$a.st" "$other.st" || same=no
    done
    if [ "$same" = yes ] && [ -s "$a.st" ]; then
        ok "$model, tensor_parallel = 2: 1 stage, 2 stages 1f1b and zb-h1 give the same losses and weights, bit for bit"
    else
        not_ok "$model, tensor_parallel = 2: bitwise across stages and schedules" "$(ls -l "$a".* 2>&1)"
    fi
done

# activation checkpointing recomputes the split linears' forwards, sums
# and gathers included, on every tp rank alike: the same bits
"$PIPEC" "$TMP/split_mlp.pipe" -D stages=2 -D tensor_parallel=2 -D grad_clip=0.5 -D activation_checkpoint=2 \
    -o "$TMP/sac.bin" >"$TMP/out" 2>&1 || exit 2
if run_metrics sac 4 "$TMP/sac.bin" --steps 10 && cmp -s "$TMP/sac.l" "$TMP/split_mlp-s2-d1-1f1b-t2.l"; then
    ok "split_mlp, tensor_parallel = 2 with activation_checkpoint = 2: the same losses, bit for bit"
else
    not_ok "split_mlp, tensor_parallel = 2 with activation_checkpoint = 2" "$(tail -5 "$TMP/out")"
fi

# T = 4 (the GPT's 4 heads, one a rank)
G=$TMP/tied_gpt.pipe
"$PIPEC" "$G" -D tensor_parallel=4 -o "$TMP/g4.bin" >"$TMP/out" 2>&1 || exit 2
"$PIPEC" "$G" -o "$TMP/g1.bin" >"$TMP/out" 2>&1 || exit 2
if run_metrics g4 4 "$TMP/g4.bin" --steps 10 && run_metrics g1 1 "$TMP/g1.bin" --steps 10 && why=$(close "$TMP/g4.l" "$TMP/g1.l" 1e-5); then
    ok "tied_gpt: tensor_parallel = 4 against 1 ($why)"
else
    not_ok "tied_gpt: tensor_parallel = 4" "${why:-$(tail -5 "$TMP/out")}"
fi

# with ZeRO-1 over 2 replicas (each tp rank's shares sharded over them)
"$PIPEC" "$G" -D data_parallel=2 -D tensor_parallel=2 -D zero=1 -D grad_clip=0.5 -o "$TMP/gz.bin" >"$TMP/out" 2>&1 || exit 2
if run_metrics gz 4 "$TMP/gz.bin" --steps 10 && why=$(close "$TMP/gz.l" "$TMP/tied_gpt-s1-d2-1f1b-t1.l" 1e-5); then
    ok "tied_gpt: tensor_parallel = 2 with zero = 1 on 2 replicas against T = 1, zero = 0 ($why)"
else
    not_ok "tied_gpt: tensor_parallel = 2 with zero = 1" "${why:-$(tail -5 "$TMP/out")}"
fi

# checkpoints: whole, by name, across T
"$PIPEC" "$G" -D stages=2 -D tensor_parallel=2 -o "$TMP/a.bin" >/dev/null 2>&1 || exit 2
"$PIPEC" "$G" -D stages=2 -o "$TMP/b.bin" >/dev/null 2>&1 || exit 2
run_metrics straight 4 "$TMP/a.bin" --steps 10 || exit 2
tail -n 5 "$TMP/straight.l" >"$TMP/straight5.l"
if run_metrics first 4 "$TMP/a.bin" --steps 5 --save "$TMP/ck" && run_metrics then 2 "$TMP/b.bin" --steps 10 --resume "$TMP/ck" &&
    why=$(close "$TMP/then.l" "$TMP/straight5.l" 1e-5); then
    ok "saved with tensor_parallel = 2, resumed with 1: as the straight run ($why)"
else
    not_ok "T = 2 -> T = 1 resume" "${why:-$(tail -5 "$TMP/out")}"
fi
if run_metrics first1 2 "$TMP/b.bin" --steps 5 --save "$TMP/ck1" && run_metrics then2 4 "$TMP/a.bin" --steps 10 --resume "$TMP/ck1" &&
    why=$(close "$TMP/then2.l" "$TMP/straight5.l" 1e-5); then
    ok "saved with tensor_parallel = 1, resumed with 2 ($why)"
else
    not_ok "T = 1 -> T = 2 resume" "${why:-$(tail -5 "$TMP/out")}"
fi

# --export: the same tensors, by name and shape, as T = 1's run after 3
# AdamW steps (within 1e-4 of each tensor's largest value: Adam divides by
# the root of the second moment, so where a gradient is near 0 the 1e-8
# differences of reordered sums move a weight by more than they move a loss)
# st_close A B TOL: the same names and shapes, every value within TOL of the largest
st_close() {
    $PY - "$@" <<'EOF'
import array, json, struct, sys
def load(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
    return {k: (v["shape"], array.array("f", d[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]]))
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert a.keys() == b.keys() and len(a) > 0
worst = 0
for k in a:
    assert a[k][0] == b[k][0], (k, a[k][0], b[k][0])
    m = max(abs(v) for v in b[k][1]) or 1
    worst = max(worst, max(abs(x - y) for x, y in zip(a[k][1], b[k][1])) / m)
print(f"{len(a)} tensors, worst difference {worst:.2e} of the largest")
sys.exit(0 if worst <= tol else 1)
EOF
}
if run_metrics e2 4 "$TMP/a.bin" --steps 3 --export "$TMP/e2.safetensors" && run_metrics e1 2 "$TMP/b.bin" --steps 3 --export "$TMP/e1.safetensors" &&
    why=$(st_close "$TMP/e2.safetensors" "$TMP/e1.safetensors" 1e-4); then
    ok "--export with tensor_parallel = 2: T = 1's tensors ($why)"
else
    not_ok "--export with T = 2" "${why:-$(tail -5 "$TMP/out")}"
fi
# --init with T = 2 from T = 1's export, then exported again: the same tensors
if run_metrics i2 4 "$TMP/a.bin" --steps 0 --init "$TMP/e1.safetensors" --export "$TMP/i2.safetensors" &&
    why=$(st_close "$TMP/i2.safetensors" "$TMP/e1.safetensors" 0); then
    ok "--init with tensor_parallel = 2 from a T = 1 export: every tensor back, bit for bit ($why)"
else
    not_ok "--init with T = 2" "${why:-$(tail -5 "$TMP/out")}"
fi

# the split linears: exported whole, T = 1's tensors after 3 SGD steps
# (within 1e-6 of each tensor's largest value; under AdamW this model's
# first layer has gradients near eps, where Adam's division turns the 1e-9
# differences of reordered sums into 3e-4 of a weight); --init from them back
for model in split_mlp vocab_gpt vocab_tied; do
    S=$TMP/$model-sgd
    for t in 1 2; do
        "$PIPEC" "$TMP/$model.pipe" -D stages=2 -D tensor_parallel=$t -D 'optimizer = sgd(lr = 0.1)' -o "$S-t$t.bin" \
            >"$TMP/out" 2>&1 || { cat "$TMP/out"; exit 2; }
    done
    if run_metrics se2 4 "$S-t2.bin" --steps 3 --export "$TMP/se2.safetensors" &&
        run_metrics se1 2 "$S-t1.bin" --steps 3 --export "$TMP/se1.safetensors" &&
        why=$(st_close "$TMP/se2.safetensors" "$TMP/se1.safetensors" 1e-6) &&
        run_metrics si2 4 "$S-t2.bin" --steps 0 --init "$TMP/se1.safetensors" --export "$TMP/si2.safetensors" &&
        why="$why; back: $(st_close "$TMP/si2.safetensors" "$TMP/se1.safetensors" 0)"; then
        ok "$model: --export with tensor_parallel = 2 gives T = 1's tensors, --init gives them back ($why)"
    else
        not_ok "$model: --export / --init with T = 2" "${why:-$(tail -5 "$TMP/out")}"
    fi
done

# --trace names each rank's stage, replica and tp index
if run_metrics tr 4 "$TMP/a.bin" --steps 2 --trace "$TMP/t.json" &&
    grep -q '"rank 3: stage 1, replica 0, tensor-parallel 1"' "$TMP/t.json" && grep -q "rank 3, stage 1:" "$TMP/out"; then
    ok "--trace with tensor_parallel = 2: ranks 2 and 3 are stage 1's"
else
    not_ok "--trace with T = 2"
fi

# pipec --tune keeps T and enumerates stages x replicas over world / T
"$PIPEC" "$G" -D tensor_parallel=2 --tune --world 4 >"$TMP/out" 2>&1
rc=$?
check_rc "--tune --world 4 with tensor_parallel = 2" 0 "^tune tgpt for 4 ranks \(tensor_parallel as given"
"$PIPEC" "$G" -D tensor_parallel=2 --tune --world 3 >"$TMP/out" 2>&1
rc=$?
check_rc "--tune --world 3 with tensor_parallel = 2 refused" 1 "the world is not a multiple of tensor_parallel = 2"

# refusals
"${MPI[@]}" 4 "$PIPERT" "$TMP/a.bin" --steps 1 --profile "$TMP/p.json" >"$TMP/out" 2>&1
rc=$?
check_rc "--profile with tensor_parallel = 2 refused" 1 "profile measures a plan with tensor_parallel = 1"
"$PIPEC" "$G" -D tensor_parallel=3 >"$TMP/out" 2>&1
rc=$?
check_rc "tensor_parallel = 3 against 4 heads: refused with the layer" 1 "tensor_parallel = 3 does not divide layer 1's heads = 4"
"$PIPEC" "$TMP/llama_gqa.pipe" -D tensor_parallel=4 >"$TMP/out" 2>&1
rc=$?
check_rc "tensor_parallel = 4 against 2 kv heads: refused" 1 "does not divide layer 1's kv_heads = 2"
# --stats shows which linears are split, in the table and in the JSON
"$PIPEC" "$TMP/split_mlp.pipe" -D tensor_parallel=2 --stats >"$TMP/out" 2>&1
if grep -Eq "^ +0  linear .*\(split = column\)$" "$TMP/out" && grep -Eq "^ +3  linear .*\(split = row\)$" "$TMP/out" &&
    "$PIPEC" "$TMP/split_mlp.pipe" --stats --json | $PY -c '
import json, sys
s = [l.get("split") for l in json.load(sys.stdin)["layers"]]
assert s == ["column", None, None, "row", None, "column", None, None], s'; then
    ok "--stats names the split linears (table and JSON)"
else
    not_ok "--stats and split linears" "$(grep linear "$TMP/out")"
fi
"$PIPEC" "$TMP/vocab_gpt.pipe" -D tensor_parallel=2 --stats >"$TMP/out" 2>&1
rc=$?
check_rc "--stats names the vocabulary-split embedding" 0 "^ +0  embedding .*\(split = vocab\)$"
"$PIPEC" "$TMP/vocab_gpt.pipe" -D tensor_parallel=8 >"$TMP/out" 2>&1
rc=$?
check_rc "tensor_parallel = 8 against 4 heads and a vocabulary of 64: refused, heads named" 1 \
    "tensor_parallel = 8 does not divide layer 1's heads = 4"
sed 's/vocab = 64, dim = 32/vocab = 66, dim = 32/; s/linear(64, bias = false, split = column)/linear(66, bias = false)/' \
    "$TMP/vocab_gpt.pipe" >"$TMP/v66.pipe"
"$PIPEC" "$TMP/v66.pipe" -D tensor_parallel=4 >"$TMP/out" 2>&1
rc=$?
check_rc "tensor_parallel = 4 against a vocabulary of 66: refused with the layer" 1 \
    "tensor_parallel = 4 does not divide layer 0's vocabulary = 66"
sed 's/positions = 16, split = vocab)/positions = 16, split = vocab) as wte/; s/linear(64, bias = false, split = column)/linear(64, bias = false, tie = wte)/' \
    "$TMP/vocab_gpt.pipe" >"$TMP/vtie.pipe"
"$PIPEC" "$TMP/vtie.pipe" >"$TMP/out" 2>&1
rc=$?
check_rc "a linear tied to a vocabulary-split embedding but not split by column: refused, with the way out" 1 \
    "tie = wte: layer 0 is split \(split = vocab\): a linear tied to it must be split = column"
sed 's/split = vocab)/split = rows)/' "$TMP/vocab_gpt.pipe" >"$TMP/vbad.pipe"
"$PIPEC" "$TMP/vbad.pipe" >"$TMP/out" 2>&1
rc=$?
check_rc "split = rows on an embedding: refused, naming the word it takes" 1 \
    "split = rows: an embedding splits by 'vocab'"
"$PIPEC" "$TMP/split_mlp.pipe" -D tensor_parallel=3 >"$TMP/out" 2>&1
rc=$?
check_rc "tensor_parallel = 3 against a column-split linear of 256: refused" 1 \
    "tensor_parallel = 3 does not divide layer 0's output features = 256"
"${MPI[@]}" 3 "$PIPERT" "$TMP/a.bin" --steps 1 >"$TMP/out" 2>&1
rc=$?
check_rc "a world that is not stages x tensor_parallel: refused" 1 "not a multiple of the plan's 2 stages x tensor_parallel 2"
FAKE=$(dirname "$PIPERT")/pipert-cuda-fake.so
if [ -f "$FAKE" ] && "$PIPERT" --version | grep -q 'devices: cpu, cuda'; then
    "${MPI[@]}" 4 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/a.bin" --device cuda --steps 1 >"$TMP/out" 2>&1
    rc=$?
    check_rc "tensor_parallel = 2 with --device cuda refused" 1 "tensor_parallel > 1 runs on the CPU backend only"
fi
e2e_end
