#!/bin/bash
# tests/e2e/test_zero.sh: ZeRO stage 1 (zero = 1, docs/parallelism.md).
# On the GPT and LLaMA blocks, 1 and 2 stages x 2 replicas, 1f1b and
# zb-h1, with gradient clipping: 10 steps' losses against zero = 0 within
# 1e-6 relative; every rank's allocated memory (pipert --metrics) equal to
# pipec's prediction and its optimizer state halved; checkpoints whole and
# by name: saved under zero = 1 on 2 replicas, resumed under zero = 0 on 1,
# and the other way, each ending as the straight run does; the refusals.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-zero "$@"
PY=python3

e2e_tokens "$TMP/tokens.u16" || exit 2
for m in tied_gpt llama_gqa; do sed "s|TOKENS|$TMP/tokens.u16|" "$SRC/tests/e2e/$m.pipe" >"$TMP/$m.pipe"; done


for model in tied_gpt llama_gqa; do
    for st in 1 2; do
        for sched in 1f1b zb-h1; do
            [ "$st" = 1 ] && [ "$sched" = zb-h1 ] && continue
            tag=$model-s$st-$sched
            for z in 0 1; do
                "$PIPEC" "$TMP/$model.pipe" -D stages=$st -D data_parallel=2 -D schedule=$sched -D zero=$z \
                    -D grad_clip=0.5 -o "$TMP/$tag-z$z.bin" >"$TMP/out" 2>&1 || exit 2
                "$PIPEC" "$TMP/$tag-z$z.bin" --stats --json >"$TMP/$tag-z$z.stats" 2>"$TMP/out" || exit 2
            done
            if run_metrics "$tag-z0" $((2 * st)) "$TMP/$tag-z0.bin" --steps 10 && run_metrics "$tag-z1" $((2 * st)) "$TMP/$tag-z1.bin" --steps 10 &&
                why=$(close "$TMP/$tag-z1.l" "$TMP/$tag-z0.l" 1e-6); then
                ok "$tag, 2 replicas: zero = 1 against zero = 0, 10 steps with clipping ($why)"
            else
                not_ok "$tag: zero = 1 against zero = 0" "${why:-$(tail -5 "$TMP/out")}"
            fi
            if $PY - "$TMP/$tag-z1.m" "$TMP/$tag-z1.stats" "$TMP/$tag-z0.m" <<'EOF'
import json, sys
def records(p): return [json.loads(l) for l in open(p) if '"memory_bytes"' in l]
z1, stats, z0 = records(sys.argv[1]), json.load(open(sys.argv[2])), records(sys.argv[3])
assert len(z1) == len(z0) > 0
for r in z1:
    want = stats["stages"][r["stage"]]["memory_bytes"]
    assert abs(r["memory_bytes"] - want) <= 0.02 * want, (r, want)
for s in stats["stages"]:
    opt = s["memory"]["optimizer_state"]
    assert opt > 0
for a, b in zip(sorted(z1, key=lambda r: r["rank"]), sorted(z0, key=lambda r: r["rank"])):
    assert a["memory_bytes"] < b["memory_bytes"], (a, b)
EOF
            then ok "$tag: each rank allocates what pipec predicts, less than without ZeRO"
            else not_ok "$tag: memory with zero = 1"; fi
        done
    done
done

# the optimizer state per rank is half of zero = 0's (Adam's two moments)
if $PY - "$TMP/tied_gpt-s2-1f1b-z1.stats" "$TMP/tied_gpt-s2-1f1b-z0.stats" <<'EOF'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for s, t in zip(a["stages"], b["stages"]):
    x, y = s["memory"]["optimizer_state"], t["memory"]["optimizer_state"]
    assert y // 2 <= x <= y // 2 + 8 * 4, (x, y)
EOF
then ok "pipec --stats: optimizer state per rank / 2 with 2 replicas"
else not_ok "pipec --stats: optimizer state / 2"; fi

# checkpoints: whole and by name, across zero and dp
P=$TMP/tied_gpt.pipe
"$PIPEC" "$P" -D data_parallel=2 -D zero=1 -D grad_clip=0.5 -o "$TMP/a.bin" >/dev/null 2>&1 || exit 2
"$PIPEC" "$P" -D data_parallel=1 -D micro_batches=16 -D zero=0 -D grad_clip=0.5 -o "$TMP/b.bin" >/dev/null 2>&1 || exit 2
"$PIPEC" "$P" -D data_parallel=2 -D zero=0 -D grad_clip=0.5 -o "$TMP/c.bin" >/dev/null 2>&1 || exit 2
run_metrics straight 2 "$TMP/a.bin" --steps 10 || exit 2
tail -n 5 "$TMP/straight.l" >"$TMP/straight5.l"
if run_metrics first 2 "$TMP/a.bin" --steps 5 --save "$TMP/ck" && run_metrics then 1 "$TMP/b.bin" --steps 10 --resume "$TMP/ck" &&
    why=$(close "$TMP/then.l" "$TMP/straight5.l" 1e-6); then
    ok "saved under zero = 1 on 2 replicas, resumed under zero = 0 on 1: as the straight run ($why)"
else
    not_ok "zero = 1 -> zero = 0 resume" "${why:-$(tail -5 "$TMP/out")}"
fi
if run_metrics first0 2 "$TMP/c.bin" --steps 5 --save "$TMP/ck0" && run_metrics then1 2 "$TMP/a.bin" --steps 10 --resume "$TMP/ck0" &&
    why=$(close "$TMP/then1.l" "$TMP/straight5.l" 1e-6); then
    ok "saved under zero = 0, resumed under zero = 1 ($why)"
else
    not_ok "zero = 0 -> zero = 1 resume" "${why:-$(tail -5 "$TMP/out")}"
fi
# the optimizer file of a zero = 1 save is the zero = 0 save's, tensor for tensor
run_metrics c10 2 "$TMP/c.bin" --steps 5 --save "$TMP/ck-c" >/dev/null 2>&1
if $PY - "$TMP/ck/latest/optim-0.safetensors" "$TMP/ck-c/latest/optim-0.safetensors" <<'EOF'
import json, struct, sys
def load(p):
    d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
    return {k: d[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and len(a) > 0, (sorted(a)[:3], sorted(b)[:3])
import array
worst = 0
for k in a:
    x, y = array.array("f", a[k]), array.array("f", b[k])
    assert len(x) == len(y), k
    for u, v in zip(x, y):
        worst = max(worst, abs(u - v) / max(abs(v), 1e-12))
assert worst <= 1e-5, worst
EOF
then ok "a zero = 1 checkpoint holds the whole optimizer state, by name (as zero = 0's within 1e-5)"
else not_ok "a zero = 1 checkpoint's optimizer file"; fi

# refusals
"$PIPEC" "$P" -D zero=2 >"$TMP/out" 2>&1
rc=$?
check_rc "zero = 2 refused" 1 "zero must be between 0 and 1, not 2"
FAKE=$(dirname "$PIPERT")/pipert-cuda-fake.so
if [ -f "$FAKE" ] && "$PIPERT" --version | grep -q 'devices: cpu, cuda'; then
    "${MPI[@]}" 2 -x PIPERT_CUDA_MODULE="$FAKE" "$PIPERT" "$TMP/a.bin" --device cuda --steps 1 >"$TMP/out" 2>&1
    rc=$?
    check_rc "zero = 1 with --device cuda refused" 1 "zero = 1 runs on the CPU backend only"
fi
e2e_end
