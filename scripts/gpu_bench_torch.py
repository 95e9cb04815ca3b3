#!/usr/bin/env python3
"""PyTorch's side of scripts/gpu-check.sh's benchmark (issue 5, issue 17):
the models pipert trains there, in PyTorch on one device, the same batch per
step and the same optimizer; one line per model,

    torch NAME N samples/s (DEVICE, STEPS steps after 2 warm-up steps)

or "torch NAME FAIL: why" (one model's failure does not stop the others).
"matmul" is PyTorch's own bf16 8192^3 matrix product in TFLOP/s, a
cross-check of bench/cuda_gemm.c's peak.

    gpu_bench_torch.py [--device cuda|cpu] [--tiny] [matmul|mlp|alexnet|gpt2 ...]

Default: every model, on cuda. --tiny: sizes for a CPU in seconds (the dry
run of gpu-check.sh; GPT-2 is then a 2-block stand-in, not GPT-2 small).
fp32 models run without TF32 (pipert's fp32 uses none: CUBLAS_COMPUTE_32F,
cuDNN FMA math); GPT-2 runs under bf16 autocast with fp32 weights (pipert's
bf16 rounds the operands of each product, accumulates and keeps weights in
fp32). Works with torch 1.13 (no scaled_dot_product_attention: the plain
causal softmax) to 2.x.
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DEV = "cuda"
TINY = False


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def samples_per_s(model, batch, loss_of, opt, steps, per_step):
    for i in range(steps + 2):
        if i == 2:
            sync()
            t0 = time.time()
        opt.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        opt.step()
    sync()
    return steps * per_step / (time.time() - t0), steps


def xent(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def matmul():  # TFLOP/s, not samples/s
    n, dt = (256, torch.float32) if TINY else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=DEV).to(dt)
    b = torch.randn(n, n, device=DEV).to(dt)
    for _ in range(3):
        a @ b
    sync()
    reps = 3 if TINY else 20
    t0 = time.time()
    for _ in range(reps):
        a @ b
    sync()
    tf = 2.0 * n ** 3 * reps / (time.time() - t0) / 1e12
    return "torch matmul %.1f TFLOP/s (%s %d^3, %s)" % (tf, str(dt).replace("torch.", ""), n, DEV)


def mlp():  # examples/mlp.pipe: 4 micro-batches of 16
    m = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).to(DEV)
    b = (torch.randn(64, 784, device=DEV), torch.randint(0, 10, (64,), device=DEV))
    return samples_per_s(m, b, xent, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), 5 if TINY else 50, 64)


def alexnet():  # examples/alexnet.pipe with 8 micro-batches of 8
    m = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 10)).to(DEV)
    n = 2 if TINY else 64
    b = (torch.randn(n, 3, 224, 224, device=DEV), torch.randint(0, 10, (n,), device=DEV))
    return samples_per_s(m, b, xent, torch.optim.Adam(m.parameters(), lr=1e-3), 2 if TINY else 6, n)


def attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    s = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return s.softmax(-1) @ v


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        a = attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):  # bench/gpt2_small.pipe
    def __init__(self, vocab, d, h, layers, t):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, t):
        x = self.wte(t) + self.wpe(torch.arange(t.shape[1], device=t.device))
        for b in self.blocks:
            x = b(x)
        return self.ln(x) @ self.wte.weight.t()


def gpt2():  # 4 micro-batches of 4 sequences of 1024, bf16 autocast
    vocab, d, h, layers, t, n = (512, 64, 4, 2, 64, 4) if TINY else (50257, 768, 12, 12, 1024, 16)
    m = GPT2(vocab, d, h, layers, t).to(DEV)
    tok = torch.randint(0, vocab, (n, t + 1), device=DEV)

    def loss_of(m, b):
        with torch.autocast(DEV, dtype=torch.bfloat16):
            logits = m(b[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, vocab), b[:, 1:].reshape(-1))

    return samples_per_s(m, tok, loss_of, torch.optim.AdamW(m.parameters(), lr=3e-4), 3 if TINY else 6, n)


def main(argv):
    global DEV, TINY
    names = []
    i = 0
    while i < len(argv):
        if argv[i] == "--device" and i + 1 < len(argv):
            DEV = argv[i + 1]
            i += 1
        elif argv[i] == "--tiny":
            TINY = True
        else:
            names.append(argv[i])
        i += 1
    names = names or ["matmul", "mlp", "alexnet", "gpt2"]
    table = {"matmul": matmul, "mlp": mlp, "alexnet": alexnet, "gpt2": gpt2}
    where = torch.cuda.get_device_name() if DEV == "cuda" and torch.cuda.is_available() else DEV
    print("torch %s on %s%s" % (torch.__version__, where, ", tiny sizes" if TINY else ""), flush=True)
    if DEV == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    failed = 0
    for name in names:
        try:
            if name not in table:
                raise ValueError("unknown model (matmul, mlp, alexnet, gpt2)")
            r = table[name]()
            if isinstance(r, str):
                print(r, flush=True)
            else:
                print("torch %s %.1f samples/s (%s, %d steps after 2 warm-up steps)" % (name, r[0], where, r[1]),
                      flush=True)
        except Exception as e:  # one model's failure is its line, not the end
            failed += 1
            print("torch %s FAIL: %s: %s" % (name, type(e).__name__, str(e).splitlines()[0] if str(e) else ""),
                  flush=True)
        if DEV == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
