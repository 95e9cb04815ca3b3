#!/usr/bin/env python3
"""Whole training runs of pipert against PyTorch.

    python3 tests/parity/test_train.py BUILD_DIR SOURCE_DIR

For each model below the script writes the .pipe text and the data files
into a temporary directory, so that pipert and torch read exactly the same
samples (IDX float32 or ubyte images with ubyte labels, or a uint16 tokens
file with a pad id), with `shuffle = false`: step s trains on samples
(s*B + pos) mod N, pos = 0 .. B-1, B = micro_batches x micro_batch_size
(data_parallel is 1: mpirun -np stages). Then:

  1. `pipec model.pipe --stats --json`: the layer types must be the ones the
     torch twin is built from, and every parameter tensor pipec lists must be
     a parameter of the torch model under the same name and shape (a tied
     linear owns only its bias; its weight is the owner's).
  2. `pipec model.pipe -o plan.bin`, `mpirun -np S pipert plan.bin --steps 0
     --save DIR`: the initial weights, DIR/latest/stage-*.safetensors, read here in
     pure Python; together they must hold every parameter of the torch model
     exactly once, and are loaded into it.
  3. `mpirun -np S pipert plan.bin --steps 5 --log-every 1 --metrics m.jsonl`
     (a fresh run with the same seed starts from the same weights): the
     per-step losses.
  4. torch trains the same 5 steps in fp32: the same optimizer and
     hyperparameters (torch.optim, single-tensor code), the same learning-rate
     schedule, the same gradient clipping (clip_grad_norm_), loss = the mean
     over the global batch (cross_entropy with ignore_index=-1: the mean over
     the non-ignored targets), one optimizer step per global batch.
     Every step's loss must agree within 1e-4 relative (the LLaMA and the
     ResNet within 1e-5).

The MLP, the CNN, the GPT and the LLaMA run again with `precision = bf16`
(pipert's own bf16 GEMM, kernels/cpu/k_gemm.c) against the torch twin's
forward under torch.autocast("cpu", dtype=torch.bfloat16) (the loss in
fp32): every step's loss within 2e-2 relative. On a CPU without
AVX512-BF16 pipert refuses them at start and they are reported as skipped.

The wide MLP's linears (256 features or more in and out) take the CPU's
packed fp32 product (kernels/cpu/k_gemm.c) where the CPU has AVX-512F.

The MLP, the wide MLP, the GPT, the LLaMA and the ResNet also run on 1 stage (np 1) and must print the same
losses, as text, as on 2 stages (the GPT's tie then stays on one stage). Dropout is 0 everywhere (torch cannot draw pipe's
masks). A model with transformer_block is reported as skipped when this
pipert refuses it at start-up ("transformer_block is not supported by the
CPU runtime yet"), and as a failure for any other error.

Prints one line per check (max relative loss difference per model), skips as
"skipped: ...", and a last line `N passed, M failed`; exits 1 on any failure.
Needs torch (Debian's python3-torch) and mpirun on PATH.
"""
import contextlib
import inspect
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import Block, Embedding, LlamaBlock, Residual, RMSNorm, Reshape, Transpose  # noqa: E402

torch.set_num_threads(1)
STEPS = 5
TOL = 1e-4
UNSUPPORTED_BLOCK = "transformer_block is not supported by the CPU runtime yet"

# ---- torch modules for the DSL layers (names as pipec and pipert give them)


class Net(nn.Module):
    """The model: layer i is layers[i], fed in order; blocks also get the mask."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask) if isinstance(layer, (Block, LlamaBlock)) else layer(x)
        return x


def tied_linear(in_features, out, owner, bias=True):
    """linear(out, tie = LABEL): the owner's weight (an embedding's tokens, or a linear's)."""
    m = nn.Linear(in_features, out, bias=bias)
    m.weight = owner.tokens.weight if isinstance(owner, Embedding) else owner.weight
    return m


def gelu():
    return nn.GELU(approximate="tanh")


# ---- data files


def write_idx_images(path, values, dims, ubyte):
    """IDX images: big-endian header and dims; ubyte pixels or big-endian float32."""
    n = len(values)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08 if ubyte else 0x0D, len(dims)))
        f.write(struct.pack(">%dI" % len(dims), *dims))
        f.write(struct.pack(">%d%s" % (n, "B" if ubyte else "f"), *values))


def write_idx_labels(path, labels):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, len(labels)))
        f.write(bytes(labels))


def image_data(tmp, n, shape, classes, ubyte, gen, scale=1.0):
    """Writes n images of shape (floats N(0, scale^2) or random bytes) and labels;
    returns the torch tensors pipert reads: images [n, *shape] float32, labels [n]."""
    count = n
    for d in shape:
        count *= d
    if ubyte:
        pix = torch.randint(0, 256, (count,), generator=gen, dtype=torch.int64)
        write_idx_images(os.path.join(tmp, "images.idx"), pix.tolist(), [n] + list(shape), True)
        x = (pix.to(torch.float32) / 255.0).reshape([n] + list(shape))  # p / 255.0f, as rt_data.c
    else:
        x = (torch.randn(count, generator=gen) * scale).to(torch.float32)
        write_idx_images(os.path.join(tmp, "images.idx"), x.tolist(), [n] + list(shape), False)
        x = x.reshape([n] + list(shape))
    y = torch.randint(0, classes, (n,), generator=gen)
    write_idx_labels(os.path.join(tmp, "labels.idx"), y.tolist())
    src = 'idx("%s", "%s")' % (os.path.join(tmp, "images.idx"), os.path.join(tmp, "labels.idx"))
    return src, dict(x=x, y=y, n=n)


def token_data(tmp, samples, T, vocab, pad, pad_runs, gen):
    """A uint16 token file of samples * T + 1 tokens; pad_runs: {sample: (start, stop)}
    positions of that sample's window set to pad (never position 0: a query with
    no key left would be all -inf in torch). Returns the tensors pipert derives:
    tokens [n, T], mask [n, T] (1 where not pad), targets [n, T] (-1 where pad)."""
    ids = torch.randint(0, vocab - 1, (samples * T + 1,), generator=gen)
    ids = ids + (ids >= pad).long()  # real tokens avoid the pad id
    for s, (a, b) in pad_runs.items():
        assert a >= 1
        ids[s * T + a: s * T + b] = pad
    path = os.path.join(tmp, "tokens.u16")
    with open(path, "wb") as f:
        f.write(struct.pack("<%dH" % len(ids), *ids.tolist()))
    n = (len(ids) - 1) // T
    tok = torch.stack([ids[i * T: i * T + T] for i in range(n)])
    nxt = torch.stack([ids[i * T + 1: i * T + T + 1] for i in range(n)])
    mask = (tok != pad).to(torch.float32)
    tgt = torch.where(nxt == pad, torch.full_like(nxt, -1), nxt)
    return 'tokens("%s", pad = %d)' % (path, pad), dict(x=tok, mask=mask, y=tgt, n=n)


# ---- safetensors


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in ("F32", "I64"):
            raise ValueError("%s: tensor %s is %s, not F32 (or I64)" % (path, name, info["dtype"]))
        dt = torch.float32 if info["dtype"] == "F32" else torch.int64
        a, b = info["data_offsets"]
        buf = bytearray(blob[base + a: base + b])
        t = torch.frombuffer(buf, dtype=dt) if buf else torch.zeros(0, dtype=dt)
        if sys.byteorder != "little":
            t = t.byteswap()
        out[name] = t.reshape(info["shape"]).clone()
    return out


# ---- the models

CASES = []


def case(name, text, build, data, optimizer, stages, extra=None, tol=TOL):
    """text: the .pipe file with @DATA@ for the data source; build(): the torch
    Net; data(tmp, gen): (source text, tensors); optimizer(params): torch.optim;
    extra: lr schedule (step -> lr) and grad_clip, as in the text; tol: the
    largest relative loss difference allowed (TOL, or tighter)."""
    CASES.append(dict(name=name, text=text, build=build, data=data, optimizer=optimizer, stages=stages,
                      extra=extra or {}, tol=tol))


def optim_kw(cls, **kw):
    """torch.optim's single-tensor code, the one pipert follows."""
    if "foreach" in inspect.signature(cls.__init__).parameters:
        kw = dict(kw, foreach=False)
    return lambda params: cls(params, **kw)


# MLP: every activation, 2 stages, 1f1b, adam; float32 IDX images [N, 2, 4, 4].
MLP = """model mlp {
    input  image: float32[2, 4, 4]
    target label: int32[]
    flatten
    linear(24)
    relu
    linear(20)
    tanh
    linear(16)
    gelu
    linear(12, bias = false)
    sigmoid
    linear(5)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 4; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adam(lr = 0.01, betas = (0.9, 0.99), eps = 1e-7, weight_decay = 0.01)
    steps = 5; seed = 11; shuffle = false
    data = @DATA@
}
"""
case("mlp", MLP,
     lambda: Net([nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 20), nn.Tanh(), nn.Linear(20, 16),
                  gelu(), nn.Linear(16, 12, bias=False), nn.Sigmoid(), nn.Linear(12, 5)]),
     lambda tmp, gen: image_data(tmp, 60, [2, 4, 4], 5, False, gen),
     optim_kw(torch.optim.Adam, lr=0.01, betas=(0.9, 0.99), eps=1e-7, weight_decay=0.01), 2)

# CNN: conv2d with stride and padding, maxpool2d (with padding), adaptive_avgpool2d
# growing [4, 4] to [6, 5] and shrinking [3, 2] to [2, 2], avgpool2d, flatten,
# linear; 2 stages, sgd with momentum; ubyte IDX images [N, 3, 13, 13] scaled by
# 1/255, 37 samples for 40 a run (the stream wraps around).
CNN = """model cnn {
    input  image: float32[3, 13, 13]
    target label: int32[]
    conv2d(4, kernel = 3, stride = 2, padding = 1)
    maxpool2d(kernel = 3, stride = 2, padding = 1)
    relu
    adaptive_avgpool2d(6, 5)
    conv2d(6, kernel = (3, 2), padding = (1, 0), bias = false)
    tanh
    avgpool2d(kernel = 2)
    adaptive_avgpool2d(2)
    flatten
    linear(7)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 4; schedule = 1f1b }
train {
    optimizer = sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.001)
    steps = 5; seed = 5; shuffle = false
    data = @DATA@
}
"""
case("cnn", CNN,
     lambda: Net([nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.MaxPool2d(3, 2, padding=1), nn.ReLU(),
                  nn.AdaptiveAvgPool2d((6, 5)), nn.Conv2d(4, 6, (3, 2), padding=(1, 0), bias=False), nn.Tanh(),
                  nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 7)]),
     lambda tmp, gen: image_data(tmp, 37, [3, 13, 13], 7, True, gen),
     optim_kw(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.001), 2)


# An MLP with layernorms and a tied linear (layer 6 uses layer 3's weight,
# across stages), 3 stages, adamw with weight decay, grad_clip, a cosine
# schedule with warm-up.
TIED = """model tied_mlp {
    input  x: float32[16]
    target label: int32[]
    linear(12) as a
    layernorm
    gelu
    linear(12, bias = false) as sq
    tanh
    layernorm(eps = 1e-3)
    linear(12, tie = sq)
    relu
    linear(6)
    loss cross_entropy
}
pipeline { stages = 3; micro_batches = 3; micro_batch_size = 4; schedule = 1f1b }
train {
    optimizer = adamw(lr = 0.02, betas = (0.9, 0.95), weight_decay = 0.1)
    lr_schedule = cosine(warmup = 1, min_lr = 0.002)
    grad_clip = 1.0
    steps = 5; seed = 3; shuffle = false
    data = @DATA@
}
"""


def build_tied():
    a = nn.Linear(16, 12)
    sq = nn.Linear(12, 12, bias=False)
    return Net([a, nn.LayerNorm(12), gelu(), sq, nn.Tanh(), nn.LayerNorm(12, eps=1e-3),
                tied_linear(12, 12, sq), nn.ReLU(), nn.Linear(12, 6)])


def cosine(lr, warmup, min_lr, steps):
    """rt_lr_at: linear warm-up, then a cosine to min_lr over the remaining steps."""
    def at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        span = steps - warmup
        progress = min((step - warmup) / span if span > 0 else 1.0, 1.0)
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2
    return at


case("tied_mlp", TIED, build_tied,
     lambda tmp, gen: image_data(tmp, 60, [16], 6, False, gen, scale=3.0),
     optim_kw(torch.optim.AdamW, lr=0.02, betas=(0.9, 0.95), weight_decay=0.1), 3,
     dict(lr=cosine(0.02, 1, 0.002, STEPS), grad_clip=1.0))

# The GPT: embedding with positions as wte, 2 causal blocks reading a padding
# mask, layernorm, an LM head tied to wte (across stages); tokens with pad id 0,
# padding inside some windows.
GPT = """model gpt {
    input  tokens: int32[8]
    input  mask: float32[8]
    target next: int32[8]
    embedding(vocab = 24, dim = 16, positions = 8) as wte
    transformer_block(heads = 2, causal = true, mask = mask)
    transformer_block(heads = 2, causal = true, mask = mask)
    layernorm
    linear(24, bias = false, tie = wte)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adam(lr = 0.005)
    steps = 5; seed = 9; shuffle = false
    data = @DATA@
}
"""


def build_gpt():
    wte = Embedding(24, 16, 8)
    return Net([wte, Block(16, 2, causal=True, mask=True), Block(16, 2, causal=True, mask=True),
                nn.LayerNorm(16), tied_linear(16, 24, wte, bias=False)])


case("gpt", GPT, build_gpt,
     lambda tmp, gen: token_data(tmp, 30, 8, 24, 0, {0: (5, 8), 1: (2, 6), 2: (3, 5), 4: (4, 8), 7: (1, 8),
                                                      8: (3, 8), 11: (6, 7), 13: (1, 5), 16: (2, 8), 20: (4, 8),
                                                      22: (1, 3), 25: (3, 8), 26: (2, 4), 29: (5, 8)}, gen),
     optim_kw(torch.optim.Adam, lr=0.005), 2)

# The LLaMA: token embedding (no positions: RoPE), 2 llama_blocks with
# grouped-query attention (4 heads, 2 kv heads) reading a padding mask, the
# second with another rope_theta and eps, rmsnorm, an untied LM head (as
# LLaMA); 2 stages, adamw; the GPT's tokens. Losses within 1e-5 (issue 13).
LLAMA = """model llama {
    input  tokens: int32[8]
    input  mask: float32[8]
    target next: int32[8]
    embedding(vocab = 24, dim = 16)
    llama_block(heads = 4, kv_heads = 2, mlp = 40, mask = mask)
    llama_block(heads = 4, kv_heads = 2, mlp = 40, rope_theta = 500, eps = 1e-6, mask = mask)
    rmsnorm
    linear(24, bias = false)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adamw(lr = 0.01, betas = (0.9, 0.95), weight_decay = 0.1)
    steps = 5; seed = 13; shuffle = false
    data = @DATA@
}
"""


def build_llama():
    return Net([Embedding(24, 16), LlamaBlock(16, 4, 2, 40, mask=True),
                LlamaBlock(16, 4, 2, 40, rope_theta=500.0, eps=1e-6, mask=True), RMSNorm(16),
                nn.Linear(16, 24, bias=False)])


case("llama", LLAMA, build_llama,
     lambda tmp, gen: token_data(tmp, 30, 8, 24, 0, {0: (5, 8), 1: (2, 6), 2: (3, 5), 4: (4, 8), 7: (1, 8),
                                                      8: (3, 8), 11: (6, 7), 13: (1, 5), 16: (2, 8), 20: (4, 8),
                                                      22: (1, 3), 25: (3, 8), 26: (2, 4), 29: (5, 8)}, gen),
     optim_kw(torch.optim.AdamW, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1), 2, tol=1e-5)

# batchnorm2d: a CNN with two, the second with its own eps and momentum, on 2
# stages with 3 micro-batches of 4. pipe normalises with each micro-batch's
# statistics and updates the running ones once per micro-batch, in order:
# torch does the same when it runs the micro-batches one at a time and
# accumulates their gradients (micro = 3 below). Weight decay (adamw) reaches
# the batchnorms' weight and bias, never their buffers. Losses within 1e-5;
# after the 5 steps the running statistics and num_batches_tracked pipert
# saves must be torch's (within 1e-5; the count exactly). The convolutions
# before the batchnorms have no bias, as usual: a bias there has no effect
# on the loss, so its gradient is rounding noise, which Adam's normalisation
# turns into full-size steps that differ between any two implementations
# and move the running means (not the losses) apart.
BN = """model bn {
    input  image: float32[3, 6, 6]
    target label: int32[]
    conv2d(4, kernel = 3, padding = 1, bias = false)
    batchnorm2d
    relu
    conv2d(5, kernel = 3, stride = 2, bias = false)
    batchnorm2d(eps = 1e-3, momentum = 0.3)
    tanh
    flatten
    linear(6)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 3; micro_batch_size = 4; schedule = 1f1b }
train {
    optimizer = adamw(lr = 0.01, betas = (0.9, 0.95), weight_decay = 0.1)
    steps = 5; seed = 7; shuffle = false
    data = @DATA@
}
"""
case("bn", BN,
     lambda: Net([nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                  nn.Conv2d(4, 5, 3, stride=2, bias=False), nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), nn.Tanh(),
                  nn.Flatten(), nn.Linear(20, 6)]),
     lambda tmp, gen: image_data(tmp, 50, [3, 6, 6], 6, False, gen, scale=2.0),
     optim_kw(torch.optim.AdamW, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1), 2,
     dict(micro=3, buffers=True), tol=1e-5)

# reshape and transpose: a sample [2, 4, 6] turned into rows of a sequence
# and back, linears between them, on 3 stages (the layers cross stage
# boundaries), adam; losses within 1e-5.
MOVES = """model moves {
    input  image: float32[2, 4, 6]
    target label: int32[]
    transpose(1, 2)
    reshape(6, -1)
    linear(5)
    tanh
    transpose(0, -1)
    reshape(-1, 2, 3)
    flatten
    linear(4)
    loss cross_entropy
}
pipeline { stages = 3; micro_batches = 2; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adam(lr = 0.02)
    steps = 5; seed = 17; shuffle = false
    data = @DATA@
}
"""
case("moves", MOVES,
     lambda: Net([Transpose(1, 2), Reshape(6, -1), nn.Linear(8, 5), nn.Tanh(), Transpose(0, -1), Reshape(-1, 2, 3),
                  nn.Flatten(), nn.Linear(30, 4)]),
     lambda tmp, gen: image_data(tmp, 40, [2, 4, 6], 4, False, gen),
     optim_kw(torch.optim.Adam, lr=0.02), 3, tol=1e-5)


# A small ResNet: residual blocks without a shortcut (conv2d, relu, conv2d;
# layernorm and linears over the last dimension; linears after flatten,
# with a dropout of p = 0) and with a projection shortcut (a strided conv2d
# body, a 1x1 strided conv2d shortcut, a batchnorm2d in each branch, torch
# run micro-batch by micro-batch as for "bn"); 2 stages, adam; float32 IDX
# images [N, 3, 8, 8]. Losses within 1e-5, and the running statistics of the
# batchnorms inside the block (layers.3.body.1.running_mean...) after the 5
# steps (issue 13).
RESNET = """model resnet {
    input  image: float32[3, 8, 8]
    target label: int32[]
    conv2d(4, kernel = 3, padding = 1)
    residual {
        conv2d(4, kernel = 3, padding = 1)
        relu
        conv2d(4, kernel = 3, padding = 1, bias = false)
    }
    relu
    residual {
        conv2d(6, kernel = 3, stride = 2, padding = 1, bias = false)
        batchnorm2d
        tanh
        conv2d(6, kernel = 3, padding = 1)
    } shortcut {
        conv2d(6, kernel = 1, stride = 2, bias = false)
        batchnorm2d(momentum = 0.3)
    }
    relu
    residual { layernorm; linear(5); gelu; linear(4) }
    maxpool2d(kernel = 2)
    flatten
    residual {
        linear(12)
        sigmoid
        dropout(p = 0)
        linear(24, bias = false)
    }
    residual { linear(10) }
    shortcut { linear(10, bias = false) }
    linear(5)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adam(lr = 0.01, betas = (0.9, 0.99), weight_decay = 0.01)
    steps = 5; seed = 7; shuffle = false
    data = @DATA@
}
"""


def build_resnet():
    return Net([nn.Conv2d(3, 4, 3, padding=1),
                Residual([nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False)]),
                nn.ReLU(),
                Residual([nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.Tanh(),
                          nn.Conv2d(6, 6, 3, padding=1)],
                         [nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6, momentum=0.3)]),
                nn.ReLU(),
                Residual([nn.LayerNorm(4), nn.Linear(4, 5), gelu(), nn.Linear(5, 4)]),
                nn.MaxPool2d(2), nn.Flatten(),
                Residual([nn.Linear(24, 12), nn.Sigmoid(), nn.Dropout(0.0), nn.Linear(12, 24, bias=False)]),
                Residual([nn.Linear(24, 10)], [nn.Linear(24, 10, bias=False)]),
                nn.Linear(10, 5)])


case("resnet", RESNET, build_resnet,
     lambda tmp, gen: image_data(tmp, 40, [3, 8, 8], 5, False, gen),
     optim_kw(torch.optim.Adam, lr=0.01, betas=(0.9, 0.99), weight_decay=0.01), 2,
     dict(micro=2, buffers=True), tol=1e-5)

# WIDE: linears of 256 features or more in and out on a few rows, which the
# CPU runtime computes in fp32 from packed copies of their weights
# (kernels/cpu/k_gemm.c, on AVX-512F; plan_layer_pack_floats): 300 inputs
# (k crosses a 256 block), 260 outputs (a part panel), on 2 stages and 1.
WIDE = """model wide {
    input  image: float32[3, 10, 10]
    target label: int32[]
    flatten
    linear(288)
    relu
    linear(260, bias = false)
    tanh
    linear(5)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 4; micro_batch_size = 3; schedule = 1f1b }
train {
    optimizer = adamw(lr = 0.003, weight_decay = 0.01)
    steps = 5; seed = 13; shuffle = false
    data = @DATA@
}
"""
case("wide", WIDE,
     lambda: Net([nn.Flatten(), nn.Linear(300, 288), nn.ReLU(), nn.Linear(288, 260, bias=False), nn.Tanh(),
                  nn.Linear(260, 5)]),
     lambda tmp, gen: image_data(tmp, 40, [3, 10, 10], 5, False, gen),
     optim_kw(torch.optim.AdamW, lr=0.003, weight_decay=0.01), 2)

TYPES = {
    "mlp": ["flatten", "linear", "relu", "linear", "tanh", "linear", "gelu", "linear", "sigmoid", "linear"],
    "wide": ["flatten", "linear", "relu", "linear", "tanh", "linear"],
    "cnn": ["conv2d", "maxpool2d", "relu", "adaptive_avgpool2d", "conv2d", "tanh", "avgpool2d",
            "adaptive_avgpool2d", "flatten", "linear"],
    "tied_mlp": ["linear", "layernorm", "gelu", "linear", "tanh", "layernorm", "linear", "relu", "linear"],
    "gpt": ["embedding", "transformer_block", "transformer_block", "layernorm", "linear"],
    "llama": ["embedding", "llama_block", "llama_block", "rmsnorm", "linear"],
    "bn": ["conv2d", "batchnorm2d", "relu", "conv2d", "batchnorm2d", "tanh", "flatten", "linear"],
    "moves": ["transpose", "reshape", "linear", "tanh", "transpose", "reshape", "flatten", "linear"],
    "resnet": ["conv2d", "residual", "relu", "residual", "relu", "residual", "maxpool2d", "flatten", "residual",
               "residual", "linear"],
}

# the models that also run on 1 stage, where their losses must be the same text
ONE_STAGE = ["mlp", "wide", "gpt", "llama", "bn", "moves", "resnet"]

# precision = bf16 against torch's autocast: the same models, 2e-2 (bf16
# keeps 8 bits of a product's operands; the two sides round different
# tensors: pipert the products' operands only, autocast every op's output)
BF16_TOL = 2e-2
NO_BF16 = "needs AVX512-BF16"
for name in ["mlp", "cnn", "gpt", "llama"]:
    base = [c for c in CASES if c["name"] == name][0]
    CASES.append(dict(base, name=name + "-bf16", base=name, bf16=True, tol=BF16_TOL,
                      text=base["text"].replace("train {", "train {\n    precision = bf16", 1)))

# ---- running


class Skip(Exception):
    pass


def env():
    e = dict(os.environ)
    e["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    e.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    e.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    return e


def run(cmd, timeout=120):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                       timeout=timeout, env=env())
    return p.returncode, p.stdout


def tail(text, n=6):
    """What went wrong: pipert's own messages when there are any (mpirun's
    banner after them says little), else the last lines."""
    lines = text.strip().splitlines()
    own = [l for l in lines if l.startswith(("[rank", "pipert:", "pipec:")) or ": error:" in l]
    return " | ".join(own[:4] if own else lines[-n:])


def pipert(build, np_, plan, *args):
    return run(["mpirun", "--oversubscribe", "-np", str(np_), os.path.join(build, "pipert"), plan] + list(args))


def losses_of(path):
    """The per-step losses of a metrics file: (floats, their text)."""
    vals, texts = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "loss" in rec and "step" in rec:
                vals.append(float(rec["loss"]))
                # the number as pipert printed it (%.9g), for text equality
                texts.append(line.split('"loss":', 1)[1].split(",", 1)[0].strip())
    return vals, texts


def check_json(pipec, pipe, c, model):
    """pipec's layer types and parameter tensors against the torch twin."""
    rc, out = run([pipec, pipe, "--stats", "--json"], timeout=60)
    if rc != 0:
        raise AssertionError("pipec --stats --json exited %d: %s" % (rc, tail(out)))
    j = json.loads(out)
    types = [l["type"] for l in j["layers"]]
    want = TYPES[c.get("base", c["name"])]
    if types != want:
        raise AssertionError("pipec's layers %s are not the torch twin's %s" % (types, want))
    params = dict((n, list(p.shape)) for n, p in model.named_parameters())
    listed = {}
    for l in j["layers"]:
        for t in l["param_tensors"]:
            listed[t["name"]] = list(t["shape"])
    if listed != params:
        raise AssertionError("pipec's parameter tensors %s differ from torch's %s" % (sorted(listed.items()),
                                                                                         sorted(params.items())))
    B = j["pipeline"]["micro_batches"] * j["pipeline"]["micro_batch_size"]
    return B


def torch_losses(c, model, data, B):
    """Trains the torch twin STEPS steps; returns the per-step losses."""
    opt = c["optimizer"](model.parameters())
    lr_at = c["extra"].get("lr")
    clip = c["extra"].get("grad_clip")
    out, norms = [], []
    for step in range(STEPS):
        idx = torch.tensor([(step * B + pos) % data["n"] for pos in range(B)])
        x, y = data["x"][idx], data["y"][idx]
        mask = data["mask"][idx] if "mask" in data else None
        opt.zero_grad()
        micro = c["extra"].get("micro")
        if micro:
            # one forward per micro-batch (batchnorm's statistics), the
            # gradients accumulated, the loss the mean over the global batch
            count = int((y != -1).sum())
            loss = 0.0
            for part in range(micro):
                sel = slice(part * B // micro, (part + 1) * B // micro)
                logits = model(x[sel], mask[sel] if mask is not None else None)
                part_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[sel].reshape(-1),
                                            ignore_index=-1, reduction="sum") / count
                part_loss.backward()
                loss = loss + part_loss.detach()
        else:
            bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if c.get("bf16") else contextlib.nullcontext()
            with bf16:
                logits = model(x, mask)
            logits = logits.float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)
            loss.backward()
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        if lr_at:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
        opt.step()
        out.append(float(loss))
    return out, norms


def run_case(build, c, tmp):
    """Returns (max relative difference, pipert's loss texts, note)."""
    pipec = os.path.join(build, "pipec")
    gen = torch.Generator().manual_seed(1234)
    src, data = c["data"](tmp, gen)
    pipe = os.path.join(tmp, c["name"] + ".pipe")
    with open(pipe, "w") as f:
        f.write(c["text"].replace("@DATA@", src))
    torch.manual_seed(0)
    model = c["build"]()
    B = check_json(pipec, pipe, c, model)

    plan = os.path.join(tmp, "plan.bin")
    rc, out = run([pipec, pipe, "-o", plan], timeout=60)
    if rc != 0:
        raise AssertionError("pipec -o exited %d: %s" % (rc, tail(out)))
    init = os.path.join(tmp, "init")
    rc, out = pipert(build, c["stages"], plan, "--steps", "0", "--save", init)
    if rc != 0:
        if UNSUPPORTED_BLOCK in out:
            raise Skip("transformer_block not supported by this pipert")
        if c.get("bf16") and NO_BF16 in out:
            raise Skip("no AVX512-BF16 on this CPU: precision = bf16")
        raise AssertionError("pipert --steps 0 --save exited %d: %s" % (rc, tail(out)))

    # the initial weights: every torch parameter exactly once
    saved = {}
    for s in range(c["stages"]):
        path = os.path.join(init, "latest", "stage-%d.safetensors" % s)
        if not os.path.exists(path):
            raise AssertionError("pipert --save wrote no %s" % path)
        for name, t in read_safetensors(path).items():
            if name in saved:
                raise AssertionError("%s saved by two stages" % name)
            saved[name] = t
    params = dict(model.named_parameters())
    # and its buffers (batchnorm's running statistics), which state_dict holds
    state = model.state_dict()
    buffers = dict((n, b) for n, b in model.named_buffers() if n in state)
    if set(saved) != set(params) | set(buffers):
        raise AssertionError("saved tensors %s are not the model's parameters and buffers %s" %
                             (sorted(saved), sorted(set(params) | set(buffers))))
    with torch.no_grad():
        for name, b in buffers.items():
            if list(saved[name].shape) != list(b.shape) or saved[name].dtype != b.dtype:
                raise AssertionError("buffer %s saved as %s %s, torch has %s %s" % (
                    name, saved[name].dtype, list(saved[name].shape), b.dtype, list(b.shape)))
            b.copy_(saved[name])
        for name, p in params.items():
            if list(saved[name].shape) != list(p.shape):
                raise AssertionError("%s saved as %s, torch has %s" % (name, list(saved[name].shape), list(p.shape)))
            p.copy_(saved[name])

    metrics = os.path.join(tmp, "m.jsonl")
    after = os.path.join(tmp, "after")
    rc, out = pipert(build, c["stages"], plan, "--steps", str(STEPS), "--log-every", "1", "--metrics", metrics,
                     "--save", after)
    if rc != 0:
        raise AssertionError("pipert --steps %d exited %d: %s" % (STEPS, rc, tail(out)))
    got, texts = losses_of(metrics)
    if len(got) != STEPS:
        raise AssertionError("pipert logged %d losses, not %d" % (len(got), STEPS))

    want, norms = torch_losses(c, model, data, B)
    worst, bad, tol = 0.0, [], c["tol"]
    for s, (a, b) in enumerate(zip(got, want)):
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel) if rel == rel else float("inf")
        if not rel < tol:
            bad.append("step %d: pipert %.9g, torch %.9g (rel %.3g)" % (s + 1, a, b, rel))
    note = ""
    if norms:
        note = ", grad norms %s (clipped at %g)" % (" ".join("%.3g" % n for n in norms), c["extra"]["grad_clip"])
    if bad:
        raise AssertionError("losses differ beyond %g: %s" % (tol, "; ".join(bad)))
    if c["extra"].get("buffers"):
        # the running statistics after the 5 steps: pipert's saved ones are torch's
        final = {}
        for s in range(c["stages"]):
            final.update(read_safetensors(os.path.join(after, "latest", "stage-%d.safetensors" % s)))
        if not buffers:
            raise AssertionError("the torch model has no buffers to compare")
        bworst = 0.0
        for name, b in model.named_buffers():
            if name not in state:
                continue
            got_b = final[name]
            if b.dtype == torch.int64:
                if not torch.equal(got_b, b):
                    raise AssertionError("%s: pipert %s, torch %s" % (name, got_b.tolist(), b.tolist()))
                continue
            rel = float(((got_b - b).abs() / b.abs().clamp_min(1e-6)).max())
            bworst = max(bworst, rel)
            if not rel < tol:
                raise AssertionError("%s differs by %.3g relative: pipert %s, torch %s" %
                                     (name, rel, got_b.tolist(), b.tolist()))
        note += ", running statistics within %.3g, num_batches_tracked %d" % (
            bworst, int(state[[n for n in state if n.endswith("num_batches_tracked")][0]]))
    return worst, texts, note, plan


def main():
    if len(sys.argv) != 3:
        print("usage: test_train.py BUILD_DIR SOURCE_DIR", file=sys.stderr)
        return 2
    build = os.path.abspath(sys.argv[1])
    for tool in ("pipec", "pipert"):
        if not os.access(os.path.join(build, tool), os.X_OK):
            print("no %s in %s" % (tool, build), file=sys.stderr)
            return 2
    if not shutil.which("mpirun"):
        print("no mpirun on PATH", file=sys.stderr)
        return 2
    passed = failed = 0
    root = tempfile.mkdtemp(prefix="pipe-parity-train.")
    try:
        texts_of, skipped = {}, {}
        stages_of = dict((c["name"], c["stages"]) for c in CASES)
        for c in CASES:
            tmp = os.path.join(root, c["name"])
            os.mkdir(tmp)
            try:
                worst, texts, note, _ = run_case(build, c, tmp)
            except Skip as e:
                print("skipped: %s (%s)" % (e, c["name"]))
                skipped[c["name"]] = str(e)
                continue
            except (AssertionError, ValueError, OSError, subprocess.TimeoutExpired) as e:
                print("FAIL %s: %s" % (c["name"], e))
                failed += 1
                continue
            texts_of[c["name"]] = (texts, tmp)
            print("ok   %s: %d stages, %d steps, losses %s, max relative difference %.3g%s" %
                  (c["name"], c["stages"], STEPS, " ".join(texts), worst, note))
            passed += 1

        # the same runs on 1 stage: the same losses, as text
        for name in ONE_STAGE:
            if name in skipped:
                print("skipped: %s (%s on 1 stage)" % (skipped[name], name))
                continue
            if name not in texts_of:
                print("FAIL %s on 1 stage: the run on %d stages failed" % (name, stages_of[name]))
                failed += 1
                continue
            texts, tmp = texts_of[name]
            pipe = os.path.join(tmp, name + ".pipe")
            plan1 = os.path.join(tmp, "plan1.bin")
            metrics = os.path.join(tmp, "m1.jsonl")
            try:
                rc, out = run([os.path.join(build, "pipec"), pipe, "-D", "stages=1", "-o", plan1], timeout=60)
                if rc == 0:
                    rc, out = pipert(build, 1, plan1, "--steps", str(STEPS), "--log-every", "1", "--metrics",
                                     metrics)
                texts1 = losses_of(metrics)[1] if rc == 0 else None
            except (ValueError, OSError, subprocess.TimeoutExpired) as e:
                rc, out, texts1 = -1, str(e), None
            if rc != 0:
                print("FAIL %s on 1 stage: exited %d: %s" % (name, rc, tail(out)))
                failed += 1
            elif texts1 == texts:
                print("ok   %s on 1 stage: the same losses as on %d stages, as text" % (name, stages_of[name]))
                passed += 1
            else:
                print("FAIL %s on 1 stage: losses %s, on %d stages %s" %
                      (name, " ".join(texts1), stages_of[name], " ".join(texts)))
                failed += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
