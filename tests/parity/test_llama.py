#!/usr/bin/env python3
"""The llama_block kernel (kernels/cpu/k_llama.c) against Hugging Face's
LlamaDecoderLayer, written out in torch_layers.py (LlamaBlock: RMSNorm,
rotate_half RoPE, repeat_kv, eager attention, SiLU-gated MLP; transformers
is not imported).

    python3 tests/parity/test_llama.py PATH/TO/llama_driver

For each case below: random float32 inputs, parameters and upstream
gradient (a fixed seed) go to llama_driver as %.9g text (exact for
float32; the format is in the driver's top comment). The driver prints the
block's output, the input gradient and the 9 parameter gradients; torch
computes the same with autograd. Each tensor must agree to a relative error
||ours - torch|| / ||torch|| under 1e-5. The cases cover grouped-query
attention (K < H, and K = 1), plain multi-head (K = H), causal and not,
no mask, a padding mask (with causal, sample 1's first queries see no key:
pipe and the twin give zeros there, where HF's additive mask would not) and
a sample that is all padding, another rope_theta and eps, an odd sequence
length, and a head width of 2.

Prints one line per case with the largest error and the tensor it is in,
and ends with `N passed, M failed`; exits 1 on any failure. Needs torch.
"""
import math
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import LlamaBlock  # noqa: E402

torch.set_num_threads(1)

TOL = 1e-5
PARAMS = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
          "input_layernorm.weight", "post_attention_layernorm.weight"]


def text(t):
    return " ".join("%.9g" % v for v in t.detach().reshape(-1).tolist())


def rel(a, b):
    nb = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / (nb if nb > 0 else 1.0)


def run_case(driver, name, B, T, D, H, K, F, causal, mask, seed, theta=10000.0, eps=1e-5):
    g = torch.Generator().manual_seed(seed)
    blk = LlamaBlock(D, H, K, F, rope_theta=theta, eps=eps, causal=causal, mask=True)
    params = dict(blk.named_parameters())
    assert list(params) == PARAMS, list(params)
    with torch.no_grad():
        for n, p in params.items():
            if n.endswith("layernorm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:  # about nn.Linear's scale
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    x = torch.randn(B, T, D, generator=g).requires_grad_()
    dout = torch.randn(B, T, D, generator=g)
    m = None if mask is None else torch.tensor(mask, dtype=torch.float32).reshape(B, T)

    out = blk(x, m)
    out.backward(dout)
    want = {"out": out, "din": x.grad}
    for n, p in params.items():
        want[n] = p.grad

    lines = ["%d %d %d %d %d %d %d %d %.9g %.9g" % (B, T, D, H, K, F, int(causal), int(m is not None),
                                                    np.float32(theta), np.float32(eps)), text(x)]
    if m is not None:
        lines.append(text(m))
    lines += [text(p) for p in params.values()]
    lines.append(text(dout))
    r = subprocess.run([driver], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL %s: llama_driver exited %d: %s" % (name, r.returncode, r.stderr.strip()))
        return False, 0.0
    got = {}
    for line in r.stdout.splitlines():
        key, *vals = line.split()
        got[key] = torch.tensor([float(v) for v in vals], dtype=torch.float32)

    ok, worst, errs = True, ("", 0.0), []
    for key, w in want.items():
        if key not in got or got[key].numel() != w.numel():
            print("FAIL %s: %s missing or of the wrong size" % (name, key))
            ok = False
            continue
        e = rel(got[key], w.detach().reshape(-1))
        errs.append("%s %.2e" % (key, e))
        if not e < TOL:  # NaN fails too
            print("FAIL %s: %s relative error %.3e >= %g" % (name, key, e, TOL))
            ok = False
        if e > worst[1] or e != e:
            worst = (key, e)
    print("%s %s: max relative error %.3e (%s)" % ("ok  " if ok else "FAIL", name, worst[1], worst[0]))
    print("      " + ", ".join(errs))
    return ok, worst[1]


def main():
    if len(sys.argv) != 2:
        print("usage: test_llama.py PATH/TO/llama_driver", file=sys.stderr)
        return 2
    driver = sys.argv[1]
    B, T, D, H, F = 3, 16, 64, 8, 96  # head width 8
    # padding: sample 0 pads at the end, sample 1 at the start (with causal,
    # its first queries see no key: fully masked rows), sample 2 not at all
    pad = [1.0] * 12 + [0.0] * 4 + [0.0] * 3 + [1.0] * 13 + [1.0] * 16
    # one sample all padding: every one of its rows fully masked
    empty = [1.0] * 10 + [0.0] * 6 + [0.0] * 16 + [1.0] * 16
    cases = [
        # name, T, D, H, K, F, causal, mask, extra
        ("causal, GQA 8/2", T, D, H, 2, F, True, None, {}),
        ("causal + padding, GQA 8/2", T, D, H, 2, F, True, pad, {}),
        ("causal + padded sample, GQA 8/4", T, D, H, 4, F, True, empty, {}),
        ("bidirectional + padding, GQA 8/2", T, D, H, 2, F, False, pad, {}),
        ("causal + padding, multi-head 8/8", T, D, H, 8, F, True, pad, {}),
        ("causal + padding, multi-query 8/1", T, D, H, 1, F, True, pad, {}),
        ("causal + padding, GQA 8/2, rope_theta 500000, eps 1e-6", T, D, H, 2, F, True, pad,
         dict(theta=500000.0, eps=1e-6)),
        ("causal, T 37, D 48, 4/2 heads (width 12), mlp 256 (the LLaMA rule)", 37, 48, 4, 2, 256, True, None, {}),
        ("causal + padding, head width 2 (D 16, 8/4)", T, 16, 8, 4, 40, True, pad, {}),
    ]
    passed = failed = 0
    worst = 0.0
    for i, (name, t, d, h, k, f, causal, mask, extra) in enumerate(cases):
        m = mask if mask is None or t == T else None
        ok, e = run_case(driver, name, B, t, d, h, k, f, causal, m, 3000 + i, **extra)
        worst = max(worst, e)
        if ok:
            passed += 1
        else:
            failed += 1
    print("# largest relative error over all cases: %.3e" % worst)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
