#!/usr/bin/env bash
# Initialisation (docs/dsl.md, "Initialisation"): what init = ... gives the
# weights pipert starts from, read back from `pipert --steps 0 --save`:
#   - gpt_tiny's init = gpt2(std = 0.02): every matrix N(0, 0.02^2) but the
#     blocks' output projections, N(0, (0.02 / sqrt(12))^2), biases 0,
#     layernorm scales 1; and its first loss within 10% of ln(256);
#   - a layer's own init = zeros and init = normal(std = 0.5) in an MLP;
#   - the same weights on 1 and 2 stages (a function of the seed, the layer
#     and the tensor's name only).
#   test_init.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-init "$@"

python3 "$SRC/scripts/text_to_tokens.py" "$SRC/README.md" "$TMP/tok.u16" >/dev/null || exit 2
"$PIPEC" "$SRC/examples/gpt_tiny.pipe" -D stages=1 -D schedule=1f1b -o "$TMP/g1.bin" || exit 2
"$PIPEC" "$SRC/examples/gpt_tiny.pipe" -D stages=2 -D schedule=1f1b -o "$TMP/g2.bin" || exit 2

"${MPI[@]}" 1 "$PIPERT" "$TMP/g1.bin" --data "$TMP/tok.u16" --steps 0 --save "$TMP/c1" >"$TMP/out" 2>&1 &&
    "${MPI[@]}" 2 "$PIPERT" "$TMP/g2.bin" --data "$TMP/tok.u16" --steps 0 --save "$TMP/c2" >>"$TMP/out" 2>&1 ||
    { not_ok "gpt_tiny: --steps 0 --save on 1 and 2 stages"; e2e_end; }
python3 "$SRC/tests/e2e/weights_digest.py" "$TMP/c1" >"$TMP/w1" && python3 "$SRC/tests/e2e/weights_digest.py" "$TMP/c2" >"$TMP/w2"
if cmp -s "$TMP/w1" "$TMP/w2"; then
    ok "gpt2 init: the same weights on 1 and 2 stages"
else
    not_ok "gpt2 init: the same weights on 1 and 2 stages" "$(diff "$TMP/w1" "$TMP/w2" | head -4)"
fi

# statistics of each tensor: "name count mean std min max"
stats() {
    python3 - "$1" <<'PY'
import glob, json, math, os, struct, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "latest", "stage-*.safetensors"))):
    data = open(f, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8:8 + n])
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        v = struct.unpack("<%df" % ((b - a) // 4), data[8 + n + a:8 + n + b])
        m = sum(v) / len(v)
        s = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
        print(name, len(v), repr(m), repr(s), repr(min(v)), repr(max(v)))
PY
}
stats "$TMP/c1" >"$TMP/s1"
if python3 - "$TMP/s1" <<'PY'
import math, sys
bad = []
resid = 0.02 / math.sqrt(12)
for line in open(sys.argv[1]):
    name, n, mean, std, lo, hi = line.split()
    n, mean, std, lo, hi = int(n), float(mean), float(std), float(lo), float(hi)
    if name.endswith("bias"):
        ok = lo == 0 and hi == 0
    elif name.endswith(("ln1.weight", "ln2.weight")) or name == "layers.7.weight":
        ok = lo == 1 and hi == 1
    elif name.endswith(("attn.proj.weight", "mlp.proj.weight")):
        ok = abs(std / resid - 1) < 0.05 and abs(mean) < 3 * resid / math.sqrt(n)
    else:
        ok = abs(std / 0.02 - 1) < 0.05 and abs(mean) < 3 * 0.02 / math.sqrt(n)
    if not ok:
        bad.append(line.strip())
print("#   %d tensors checked" % sum(1 for _ in open(sys.argv[1])))
for b in bad[:5]:
    print("#   off:", b)
sys.exit(1 if bad else 0)
PY
then
    ok "gpt2 init: matrices N(0, 0.02^2), output projections N(0, (0.02/sqrt(12))^2), biases 0, norm scales 1"
else
    not_ok "gpt2 init: matrices N(0, 0.02^2), output projections N(0, (0.02/sqrt(12))^2), biases 0, norm scales 1" \
        "$(cat "$TMP/s1" | head -3)"
fi

"${MPI[@]}" 1 "$PIPERT" "$TMP/g1.bin" --data "$TMP/tok.u16" --steps 1 --log-every 1 --metrics "$TMP/m.jsonl" \
    >"$TMP/out" 2>&1
if python3 - "$TMP/m.jsonl" <<'PY'
import json, math, sys
first = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][0]["loss"]
print("#   first loss %.4f, ln(256) = %.4f" % (first, math.log(256)))
sys.exit(0 if abs(first / math.log(256) - 1) < 0.10 else 1)
PY
then
    ok "gpt_tiny's first loss is within 10% of ln(vocab)"
else
    not_ok "gpt_tiny's first loss is within 10% of ln(vocab)"
fi

# a layer's own init in a model without a scheme
cat >"$TMP/mlp.pipe" <<'EOF'
model m {
    input  x: float32[16]
    target y: int32[]
    linear(64, init = normal(std = 0.5))
    relu
    linear(10, init = zeros)
    loss cross_entropy
}
train { data = synthetic(samples = 64) }
EOF
"$PIPEC" "$TMP/mlp.pipe" -o "$TMP/m.bin" >"$TMP/out" 2>&1 &&
    "${MPI[@]}" 1 "$PIPERT" "$TMP/m.bin" --steps 0 --save "$TMP/c3" >>"$TMP/out" 2>&1 ||
    { not_ok "an MLP with init per layer trains 0 steps"; e2e_end; }
stats "$TMP/c3" >"$TMP/s3"
if python3 - "$TMP/s3" <<'PY'
import sys
t = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1])}
n, mean, std, lo, hi = t["layers.0.weight"]
ok = abs(std / 0.5 - 1) < 0.05 and t["layers.0.bias"][3] == 0 and t["layers.0.bias"][4] == 0
ok = ok and all(t[k][3] == 0 and t[k][4] == 0 for k in ("layers.2.weight", "layers.2.bias"))
print("#   layers.0.weight std %.4f" % std)
sys.exit(0 if ok else 1)
PY
then
    ok "init = normal(std = 0.5) and init = zeros on single layers"
else
    not_ok "init = normal(std = 0.5) and init = zeros on single layers" "$(cat "$TMP/s3")"
fi
e2e_end
