#!/usr/bin/env python3
"""PyTorch's side of scripts/gpu-check.sh's benchmark (issue 5): the models
pipert trains there, in PyTorch on one GPU, the same batch per step and the
same optimizer; prints "torch NAME N samples/s" (after 2 warm-up steps).

    gpu_bench_torch.py mlp|alexnet|gpt2
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DEV = "cuda"


def samples_per_s(model, batch, loss_of, opt, steps, per_step):
    for i in range(steps + 2):
        if i == 2:
            torch.cuda.synchronize()
            t0 = time.time()
        opt.zero_grad(set_to_none=True)
        loss_of(model, batch).backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * per_step / (time.time() - t0)


def xent(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def mlp():  # examples/mlp.pipe: 4 micro-batches of 16
    m = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)).to(DEV)
    b = (torch.randn(64, 784, device=DEV), torch.randint(0, 10, (64,), device=DEV))
    return samples_per_s(m, b, xent, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), 50, 64)


def alexnet():  # examples/alexnet.pipe with 8 micro-batches of 8
    m = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 10)).to(DEV)
    b = (torch.randn(64, 3, 224, 224, device=DEV), torch.randint(0, 10, (64,), device=DEV))
    return samples_per_s(m, b, xent, torch.optim.Adam(m.parameters(), lr=1e-3), 6, 64)


class Block(nn.Module):
    def __init__(self, d=768, h=12):
        super().__init__()
        self.h = h
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):  # bench/gpt2_small.pipe
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(50257, 768), nn.Embedding(1024, 768)
        self.blocks = nn.ModuleList(Block() for _ in range(12))
        self.ln = nn.LayerNorm(768)

    def forward(self, t):
        x = self.wte(t) + self.wpe(torch.arange(t.shape[1], device=t.device))
        for b in self.blocks:
            x = b(x)
        return self.ln(x) @ self.wte.weight.t()


def gpt2():  # 4 micro-batches of 4 sequences of 1024, bf16 autocast
    m = GPT2().to(DEV)
    t = torch.randint(0, 50257, (16, 1025), device=DEV)

    def loss_of(m, b):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(b[:, :-1])
        return F.cross_entropy(logits.float().view(-1, 50257), b[:, 1:].reshape(-1))

    return samples_per_s(m, t, loss_of, torch.optim.AdamW(m.parameters(), lr=3e-4), 6, 16)


if __name__ == "__main__":
    name = sys.argv[1]
    sps = {"mlp": mlp, "alexnet": alexnet, "gpt2": gpt2}[name]()
    print("torch %s %.1f samples/s (%s)" % (name, sps, torch.cuda.get_device_name()))
