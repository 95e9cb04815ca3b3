"""torch modules for the DSL layers that torch.nn has no single module for,
named as pipec and pipert name their parameters (layers.{i}.tokens.weight,
layers.{i}.attn.qkv.weight, ...). Shared by the parity scripts.

Attention follows pipe's kernel exactly: scale 1/sqrt(head width), causal
and padding masks over keys, and a query whose keys are all masked gets
zeros (softmax alone would give NaN).

Block's dropouts are GPT-2's (nanoGPT's): on the attention probabilities,
on attn.proj's output and on mlp.proj's output, each before what follows
it. nn.Dropout draws torch's own masks; a caller that must reproduce pipe's
(Philox, kernels/cpu/k_random.c) passes noise = the three factor tensors
(0 or 1/(1-p)), which replace the nn.Dropout calls the way nn.Dropout
applies its own: input * noise.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Embedding(nn.Module):
    """embedding(vocab, dim, positions): tokens, plus learned positions."""

    def __init__(self, vocab, dim, positions=0):
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(positions, dim) if positions > 0 else None

    def forward(self, ids):
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1]))
        return x


class Attention(nn.Module):
    def __init__(self, dim, heads, causal, dropout=0.0):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads
        self.causal = causal
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, noise=None):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if self.causal:
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        if mask is not None:
            s = s.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        a = s.softmax(-1).nan_to_num(0.0)
        a = self.drop(a) if noise is None else a * noise
        y = (a @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """transformer_block: the pre-LayerNorm GPT-2 block. mask: the name of
    the input it reads as its padding mask (or True), or None; forward
    ignores a mask the block does not use, as pipe does."""

    def __init__(self, dim, heads, mlp=None, causal=False, mask=None, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, heads, causal, dropout)
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, 4 * dim if mlp is None else mlp)
        self.drop = nn.Dropout(dropout)
        self.uses_mask = mask

    def forward(self, x, mask=None, noise=None):
        """noise: None (nn.Dropout), or the factors of the three sites:
        (B, H, T, T) for the probabilities, (B, T, D) for attn.proj's
        output, (B, T, D) for mlp.proj's."""
        n1, n2, n3 = noise if noise is not None else (None, None, None)
        a = self.attn(self.ln1(x), mask if self.uses_mask else None, n1)
        x = x + (self.drop(a) if n2 is None else a * n2)
        m = self.mlp(self.ln2(x))
        return x + (self.drop(m) if n3 is None else m * n3)
