#!/usr/bin/env python3
"""The transformer_block kernel (kernels/cpu/k_block.c) against a PyTorch
GPT-2 block.

    python3 tests/parity/test_block.py PATH/TO/block_driver

For each case below: random float32 inputs, parameters and upstream
gradient (a fixed seed) go to block_driver as %.9g text (exact for
float32; the format is in the driver's top comment). The driver prints the
block's output, the input gradient and the 12 parameter gradients; torch
computes the same with nn.LayerNorm, nn.Linear, GELU(approximate='tanh')
and attention written out (scale 1/sqrt(D/H), causal and padding masks by
masked_fill(-inf), then nan_to_num for queries with no key left, where the
kernel gives zeros). Each tensor must agree to a relative error
||ours - torch|| / ||torch|| under 1e-5.

Prints one line per case with the largest error and the tensor it is in,
and ends with `N passed, M failed`; exits 1 on any failure. Needs torch.
"""
import math
import subprocess
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import Block  # noqa: E402

torch.set_num_threads(1)

TOL = 1e-5
PARAMS = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
          "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"]


def text(t):
    return " ".join("%.9g" % v for v in t.detach().reshape(-1).tolist())


def rel(a, b):
    nb = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / (nb if nb > 0 else 1.0)


def run_case(driver, name, B, T, D, H, F, causal, mask, seed):
    g = torch.Generator().manual_seed(seed)
    blk = Block(D, H, F, causal, mask=True)
    params = dict(blk.named_parameters())
    assert list(params) == PARAMS, list(params)
    with torch.no_grad():
        for n, p in params.items():
            if n.startswith("ln") and n.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif n.startswith("ln"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:  # about PyTorch's default scale, biases included
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1] if p.dim() > 1 else D))
    x = torch.randn(B, T, D, generator=g).requires_grad_()
    dout = torch.randn(B, T, D, generator=g)
    m = None if mask is None else torch.tensor(mask, dtype=torch.float32).reshape(B, T)

    out = blk(x, m)
    out.backward(dout)
    want = {"out": out, "din": x.grad}
    for n, p in params.items():
        want[n] = p.grad

    lines = ["%d %d %d %d %d %d %d" % (B, T, D, H, F, int(causal), int(m is not None)), text(x)]
    if m is not None:
        lines.append(text(m))
    lines += [text(p) for p in params.values()]
    lines.append(text(dout))
    r = subprocess.run([driver], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL %s: block_driver exited %d: %s" % (name, r.returncode, r.stderr.strip()))
        return False
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
    return ok


def main():
    if len(sys.argv) != 2:
        print("usage: test_block.py PATH/TO/block_driver", file=sys.stderr)
        return 2
    driver = sys.argv[1]
    B, T, D, H, F = 3, 16, 32, 4, 64
    # padding: sample 0 pads at the end, sample 1 at the start (with causal,
    # its first queries see no key: fully masked rows), sample 2 not at all
    pad = [1.0] * 12 + [0.0] * 4 + [0.0] * 3 + [1.0] * 13 + [1.0] * 16
    # one sample all padding: every one of its rows fully masked
    empty = [1.0] * 10 + [0.0] * 6 + [0.0] * 16 + [1.0] * 16
    cases = [
        ("causal", True, None),
        ("causal + padding", True, pad),
        ("causal + padded sample", True, empty),
        ("bidirectional", False, None),
        ("bidirectional + padding", False, pad),
    ]
    passed = failed = 0
    for i, (name, causal, mask) in enumerate(cases):
        if run_case(driver, name, B, T, D, H, F, causal, mask, 1000 + i):
            passed += 1
        else:
            failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
