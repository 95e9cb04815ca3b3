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

Dropout cases (p = 0.1, training): torch cannot draw pipe's random
numbers, so this file draws them itself, with Philox4x32-10 written from
kernels/cpu/k_random.c's recipe (the key is the seed; the counter is
{e / 4, sample, layer | site << 24, step}; element e keeps unless
(word e % 4 >> 8) * 2^-24 < p), and gives torch's Block the three factor
tensors (0 or 1/(1-p)) in place of nn.Dropout. The driver gets only the
keys. A mask that differed in one element would show far above 1e-5. One
more case evaluates (torch's eval(), the driver's TRAINING 0): dropout is
the identity there.

Prints one line per case with the largest error and the tensor it is in,
and ends with `N passed, M failed`; exits 1 on any failure. Needs torch.
"""
import math
import subprocess
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import Block  # noqa: E402

torch.set_num_threads(1)

TOL = 1e-5
PARAMS = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
          "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"]


# ---- pipe's random numbers (kernels/cpu/k_random.c) -------------------------------------

U32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(ctr, key):
    """Philox4x32-10 (Random123) on arrays: ctr four uint64 arrays holding
    32-bit words, key two ints. Returns the four output words."""
    x0, x1, x2, x3 = (np.asarray(c, dtype=np.uint64) & U32 for c in ctr)
    k0, k1 = key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF
    for r in range(10):
        if r > 0:  # the key is bumped between rounds, not before the first
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0 = np.uint64(0xD2511F53) * x0  # < 2^64: exact in uint64
        p1 = np.uint64(0xCD9E8D57) * x2
        x0, x1, x2, x3 = ((p1 >> np.uint64(32)) ^ x1 ^ np.uint64(k0), p1 & U32,
                          (p0 >> np.uint64(32)) ^ x3 ^ np.uint64(k1), p0 & U32)
    return x0, x1, x2, x3


def dropout_keep(n, p, seed, step, sample, stream):
    """k_dropout_mask: n booleans, True where element e is kept."""
    e = np.arange(n, dtype=np.uint64)
    zeros = np.zeros(n, dtype=np.uint64)
    words = philox4x32_10((e // np.uint64(4), zeros + np.uint64(sample & 0xFFFFFFFF),
                           zeros + np.uint64(stream), zeros + np.uint64(step & 0xFFFFFFFF)),
                          (seed & 0xFFFFFFFF, seed >> 32))
    w = np.choose((e % np.uint64(4)).astype(np.int64), words)
    u = (w >> np.uint64(8)).astype(np.float32) * np.float32(2.0 ** -24)  # exact
    return ~(u < np.float32(p))


def block_noise(B, T, D, H, p, seed, step, sample0, layer):
    """The factors of transformer_block's three sites (k_block.h): site 1
    the probabilities, element (h T + i) T + j of a sample; sites 2 and 3
    attn.proj's and mlp.proj's outputs, element i D + c; sample b is
    sample0 + b. keep = 1 / (1 - p) in float, as k_dropout_forward."""
    one = np.float32(1.0)
    keep = one / (one - np.float32(p))
    out = []
    for site, shape in ((1, (H, T, T)), (2, (T, D)), (3, (T, D))):
        n = int(np.prod(shape))
        m = np.stack([dropout_keep(n, p, seed, step, sample0 + b, layer | site << 24) for b in range(B)])
        out.append(torch.from_numpy(np.where(m, keep, np.float32(0.0)).astype(np.float32).reshape((B,) + shape)))
    return out


def text(t):
    return " ".join("%.9g" % v for v in t.detach().reshape(-1).tolist())


def rel(a, b):
    nb = b.double().norm().item()
    return (a.double() - b.double()).norm().item() / (nb if nb > 0 else 1.0)


def run_case(driver, name, B, T, D, H, F, causal, mask, seed, drop=None):
    """drop: None (no dropout), or (p, training, keys) with keys = (seed,
    step, sample0, layer) as the driver takes them"""
    g = torch.Generator().manual_seed(seed)
    p_drop, training, keys = drop if drop is not None else (0.0, 0, (0, 0, 0, 0))
    blk = Block(D, H, F, causal, mask=True, dropout=p_drop)
    blk.train(bool(training))
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

    noise = block_noise(B, T, D, H, p_drop, *keys) if training and p_drop > 0 else None
    out = blk(x, m, noise)
    out.backward(dout)
    want = {"out": out, "din": x.grad}
    for n, p in params.items():
        want[n] = p.grad

    lines = ["%d %d %d %d %d %d %d %.9g %d %d %d %d %d" % ((B, T, D, H, F, int(causal), int(m is not None),
                                                          np.float32(p_drop), training) + tuple(keys)), text(x)]
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
    dropped = ""
    if noise is not None:
        dropped = " [dropped: %s]" % ", ".join("%d/%d" % (int((z == 0).sum()), z.numel()) for z in noise)
    print("%s %s: max relative error %.3e (%s)%s" % ("ok  " if ok else "FAIL", name, worst[1], worst[0], dropped))
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
    # dropout 0.1 while training, keys as the runtime gives them (seed,
    # step, global index of sample 0, layer index); and in evaluation
    keys = (1138, 3, 40, 2)
    train = (0.1, 1, keys)
    cases = [
        ("causal", True, None, None),
        ("causal + padding", True, pad, None),
        ("causal + padded sample", True, empty, None),
        ("bidirectional", False, None, None),
        ("bidirectional + padding", False, pad, None),
        ("causal, dropout 0.1", True, None, train),
        ("causal + padding, dropout 0.1", True, pad, train),
        ("causal + padded sample, dropout 0.1", True, empty, train),
        ("bidirectional + padding, dropout 0.1", False, pad, train),
        ("causal + padding, dropout 0.1, seed 2^32 + 7, step 2^32 + 9, layer 70000", True, pad,
         (0.1, 1, ((1 << 32) + 7, (1 << 32) + 9, 123456, 70000))),
        ("causal + padding, dropout 0.1, evaluation", True, pad, (0.1, 0, keys)),
    ]
    passed = failed = 0
    for i, (name, causal, mask, drop) in enumerate(cases):
        if run_case(driver, name, B, T, D, H, F, causal, mask, 1000 + i, drop):
            passed += 1
        else:
            failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
