#!/usr/bin/env python3
"""Weights in and out against PyTorch, and npy data (docs/weights.md, docs/dsl.md).

    python3 tests/parity/test_weights_io.py BUILD_DIR SOURCE_DIR

Each check writes its .pipe file and data into a temporary directory, with
`shuffle = false`, so that step s trains on samples s*B .. s*B+B-1:

  1. tied MLP from PyTorch: a torch model (its `layers` an nn.Sequential,
     one linear tied to another) saves its state_dict (both names of the
     tied weight) as safetensors; `pipert --init` starts from it on 2
     stages, on npy data (uint8 inputs, int64 labels with -100 ignored).
     pipe's first loss equals torch's on the first batch; after 3 steps
     `--export`, load_state_dict(strict=True) takes the file and torch's
     loss on the fourth batch equals pipe's fourth.
  2. GPT with a tied head: pipe's own initial weights `--export`ed
     (--steps 0) load strictly into the torch twin (embedding, 2
     transformer blocks, layernorm, head tied to the embedding; names
     layers.{i}...), and torch's loss on the first batch equals pipe's.
  3. F16 and BF16 exactly: a tensor holding all 65,536 bit patterns of each
     read by --init and saved back (--steps 0 --save): every float32 equals
     torch's conversion, bit for bit (NaNs included: torch makes F16's
     signalling NaNs quiet, and so does pipe).
  4. an mse model trained on npy float32 data: pipe's 4 losses against
     torch's (SGD with momentum), within 1e-5 relative.
  5. batchnorm2d's buffers: torch's state_dict (running statistics that
     are not the defaults, num_batches_tracked 7 as int64) goes in with
     --init and comes back out of --export bit for bit; 3 steps against
     torch run micro-batch by micro-batch; the evaluation at the end uses
     the running statistics (torch's eval mode) and adds nothing to the
     count; the export loads with strict=True; a missing running_var and
     a count stored as F32 are refused; --resume continues bit for bit;
     2 replicas export replica 0's buffers.
  6. residual blocks: a torch ResNet's state_dict (layers.{i}.body.{j}.*,
     layers.{i}.shortcut.{j}.*) starts pipe on 2 stages with the first loss
     torch's; after 3 steps its --export loads with strict=True and gives
     pipe's 4th loss; init = zeros on a layer inside a block, and the
     model's normal(std) on the rest, show in pipe's own --export.

Losses are compared within 1e-5 relative. Safetensors files are read and
written here in pure Python (Debian's torch has no safetensors module).
Prints "ok"/"not ok" per check and "N passed, M failed"; exits 1 on a failure.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import Block, Embedding, Residual  # noqa: E402

torch.set_num_threads(1)
TOL = 1e-5
BUILD, SRC = (os.path.abspath(a) for a in sys.argv[1:3])
TMP = tempfile.mkdtemp(prefix="pipe-weights-io.")
passed = failed = 0


def report(ok, name, why=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok - " + name)
    else:
        failed += 1
        print("not ok - " + name)
        for line in str(why).splitlines()[:8]:
            print("#   " + line)


def run(cmd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                       timeout=180)
    if p.returncode != 0:
        raise RuntimeError("%s: exit %d\n%s" % (" ".join(cmd), p.returncode, p.stdout[-1500:]))
    return p.stdout


def compile_(text, name):
    path = os.path.join(TMP, name + ".pipe")
    with open(path, "w") as f:
        f.write(text)
    plan = os.path.join(TMP, name + ".bin")
    run([os.path.join(BUILD, "pipec"), path, "-o", plan])
    return plan


def pipert(np_, plan, *args):
    return run(["mpirun", "--oversubscribe", "-np", str(np_), os.path.join(BUILD, "pipert"), plan] + list(args))


def losses(np_, plan, steps, *args):
    m = os.path.join(TMP, "m.jsonl")
    pipert(np_, plan, "--steps", str(steps), "--log-every", "1", "--metrics", m, *args)
    return [json.loads(l)["loss"] for l in open(m) if '"loss"' in l]


# ---- safetensors in pure Python

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def load_file(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8:8 + n])
    head.pop("__metadata__", None)
    out = {}
    for name, t in head.items():
        a, b = t["data_offsets"]
        raw = bytearray(blob[8 + n + a:8 + n + b])
        x = torch.frombuffer(raw, dtype=DTYPES[t["dtype"]]) if raw else torch.zeros(0, dtype=DTYPES[t["dtype"]])
        out[name] = x.reshape(t["shape"]).clone()
    return out


def save_file(tensors, path):
    names = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.int64": "I64"}
    head, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = t.numpy().tobytes() if t.dtype in (torch.float32, torch.int64) else t.view(torch.int16).numpy().tobytes()
        head[name] = {"dtype": names[str(t.dtype)], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


class Net(nn.Module):
    """layers: the nn.Sequential of the model's layers (pipe's names, layers.{i}...);
    blocks get the padding mask."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask) if isinstance(layer, Block) else layer(x)
        return x


# ---- 1. a tied MLP from PyTorch, on npy data

TIED = """model tied_mlp {
    input  x: float32[16]
    target label: int32[]
    linear(12) as a
    layernorm
    gelu
    linear(12, bias = false) as sq
    tanh
    linear(12, tie = sq)
    relu
    linear(5)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 4; schedule = 1f1b }
train { optimizer = adam(lr = 0.01); steps = 4; seed = 3; shuffle = false; data = npy("@X@", "@Y@") }
"""


def tied_mlp():
    torch.manual_seed(7)
    a, sq = nn.Linear(16, 12), nn.Linear(12, 12, bias=False)
    tied = nn.Linear(12, 12)
    tied.weight = sq.weight
    return Net([a, nn.LayerNorm(12), nn.GELU(approximate="tanh"), sq, nn.Tanh(), tied, nn.ReLU(), nn.Linear(12, 5)])


def check_tied_mlp():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 16), dtype=np.uint8)
    y = rng.integers(0, 5, (40,)).astype(np.int64)
    y[[2, 9, 17]] = -100
    xp, yp = os.path.join(TMP, "x.npy"), os.path.join(TMP, "y.npy")
    np.save(xp, x)
    np.save(yp, y)
    plan = compile_(TIED.replace("@X@", xp).replace("@Y@", yp), "tied")
    model = tied_mlp()
    sd = model.state_dict()
    report(sorted(sd) == sorted(set(sd)) and "layers.5.weight" in sd and "layers.3.weight" in sd,
           "torch's state_dict names the tied weight twice (layers.3.weight, layers.5.weight)")
    init = os.path.join(TMP, "torch_init.safetensors")
    save_file(sd, init)
    got = losses(2, plan, 4, "--init", init)
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def loss_on(m, step):
        with torch.no_grad():
            s = slice(step * 8, step * 8 + 8)
            return F.cross_entropy(m(X[s]), Y[s], ignore_index=-100).item()

    want = loss_on(model, 0)
    report(rel(got[0], want) < TOL, "tied MLP: --init from torch's state_dict, first loss %.7f vs torch %.7f"
           % (got[0], want), "rel %.2e" % rel(got[0], want))
    out = os.path.join(TMP, "tied3.safetensors")
    pipert(2, plan, "--init", init, "--steps", "3", "--export", out)
    back = tied_mlp()
    try:
        back.load_state_dict(load_file(out), strict=True)
        want = loss_on(back, 3)
        report(rel(got[3], want) < TOL, "tied MLP: --export after 3 steps, load_state_dict(strict=True), loss on the "
               "4th batch %.7f vs pipe's 4th %.7f" % (want, got[3]), "rel %.2e" % rel(got[3], want))
    except Exception as e:  # noqa: BLE001
        report(False, "tied MLP: --export after 3 steps loads with strict=True", e)


# ---- 2. a GPT with a tied head: pipe's weights into torch

GPT = """model gpt {
    input  tokens: int32[8]
    input  mask: float32[8]
    target next: int32[8]
    init = gpt2(std = 0.02)
    embedding(vocab = 24, dim = 16, positions = 8) as wte
    transformer_block(heads = 2, causal = true, mask = mask)
    transformer_block(heads = 2, causal = true, mask = mask)
    layernorm
    linear(24, bias = false, tie = wte)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 3; schedule = 1f1b }
train { optimizer = adam(lr = 0.005); steps = 1; seed = 9; shuffle = false; data = tokens("@T@", pad = 0) }
"""


def check_gpt():
    g = torch.Generator().manual_seed(5)
    T, n = 8, 12
    ids = torch.randint(1, 24, (n * T + 1,), generator=g)
    ids[5:8] = 0  # padding inside the first window
    tp = os.path.join(TMP, "tokens.u16")
    with open(tp, "wb") as f:
        f.write(struct.pack("<%dH" % len(ids), *ids.tolist()))
    plan = compile_(GPT.replace("@T@", tp), "gpt")
    out = os.path.join(TMP, "gpt0.safetensors")
    pipert(2, plan, "--steps", "0", "--export", out)
    got = losses(2, plan, 1)
    wte = Embedding(24, 16, 8)
    head = nn.Linear(16, 24, bias=False)
    head.weight = wte.tokens.weight
    model = Net([wte, Block(16, 2, causal=True, mask=True), Block(16, 2, causal=True, mask=True), nn.LayerNorm(16),
                 head])
    sd = load_file(out)
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:  # noqa: BLE001
        report(False, "GPT: pipe's --export loads with strict=True", e)
        return
    same = torch.equal(sd["layers.4.weight"], sd["layers.0.tokens.weight"])
    tok = torch.stack([ids[i * T:i * T + T] for i in range(6)])
    nxt = torch.stack([ids[i * T + 1:i * T + T + 1] for i in range(6)])
    mask = (tok != 0).to(torch.float32)
    tgt = torch.where(nxt == 0, torch.full_like(nxt, -1), nxt)
    with torch.no_grad():
        want = F.cross_entropy(model(tok, mask).reshape(-1, 24), tgt.reshape(-1), ignore_index=-1).item()
    report(same and rel(got[0], want) < TOL, "GPT with tied head: --export (%d tensors) loads with strict=True, the "
           "head's weight = the embedding's; torch's loss %.7f vs pipe's first %.7f" % (len(sd), want, got[0]),
           "rel %.2e, tied equal %s" % (rel(got[0], want), same))


# ---- 3. F16 and BF16, every bit pattern

WIDE = """model wide {
    input  x: float32[256]
    target y: float32[256]
    linear(256, bias = false)
    loss mse
}
train { data = synthetic(samples = 4) }
"""


def check_halves():
    plan = compile_(WIDE, "wide")
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).reshape(256, 256)
    for dt in (torch.float16, torch.bfloat16):
        name = str(dt).split(".")[1]
        path = os.path.join(TMP, name + ".safetensors")
        save_file({"layers.0.weight": bits.view(dt)}, path)
        ck = os.path.join(TMP, "ck-" + name)
        pipert(1, plan, "--init", path, "--steps", "0", "--save", ck)
        st = [f for f in os.listdir(os.path.join(ck, "latest")) if f.startswith("stage-")][0]
        got = load_file(os.path.join(ck, "latest", st))["layers.0.weight"]
        want = bits.view(dt).to(torch.float32)
        diff = (got.view(torch.int32) != want.view(torch.int32)).sum().item()
        report(diff == 0, "%s: all 65536 bit patterns read as torch converts them, bit for bit" % name.upper(),
               "%d differ" % diff)


# ---- 4. mse on npy float32 data, against torch

MSE = """model reg {
    input  x: float32[3, 4]
    target y: float32[2]
    flatten
    linear(10)
    tanh
    linear(2)
    loss mse
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 5; schedule = 1f1b }
train { optimizer = sgd(lr = 0.05, momentum = 0.9); steps = 4; seed = 2; shuffle = false; data = npy("@X@", "@Y@") }
"""


def check_mse():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 3, 4)).astype(np.float32)
    y = np.ascontiguousarray(np.stack([x.reshape(30, -1).sum(1), x[:, 0, 0] * 2]).T.astype(np.float32))
    xp, yp = os.path.join(TMP, "rx.npy"), os.path.join(TMP, "ry.npy")
    np.save(xp, x)
    np.save(yp, y)
    plan = compile_(MSE.replace("@X@", xp).replace("@Y@", yp), "mse")
    w = os.path.join(TMP, "mse0.safetensors")
    pipert(2, plan, "--steps", "0", "--export", w)
    got = losses(2, plan, 4)
    model = Net([nn.Flatten(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 2)])
    model.load_state_dict(load_file(w), strict=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    X, Y = torch.tensor(x), torch.tensor(y)
    want = []
    for s in range(4):
        b = slice(s * 10, s * 10 + 10)
        opt.zero_grad()
        loss = F.mse_loss(model(X[b]), Y[b])
        loss.backward()
        opt.step()
        want.append(loss.item())
    worst = max(rel(a, b) for a, b in zip(got, want))
    report(worst < TOL and got[-1] < got[0], "mse on npy float32 data: 4 steps, largest relative loss difference "
           "%.1e" % worst, "pipe %s\ntorch %s" % (got, want))


# ---- 5. batchnorm2d: buffers in and out (running statistics, num_batches_tracked)

BN = """model bn {
    input  x: float32[3, 6, 6]
    target label: int32[]
    conv2d(4, kernel = 3, padding = 1, bias = false)
    batchnorm2d
    relu
    conv2d(5, kernel = 3, stride = 2, bias = false)
    batchnorm2d(eps = 1e-3, momentum = 0.3)
    flatten
    linear(3)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 4; schedule = 1f1b }
train {
    optimizer = adamw(lr = 0.01, weight_decay = 0.1); steps = 3; seed = 4; shuffle = false
    data = npy("@X@", "@Y@"); eval_data = npy("@X@", "@Y@"); eval_every = 3
}
"""


def bn_model():
    torch.manual_seed(11)
    m = Net([nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
             nn.Conv2d(4, 5, 3, stride=2, bias=False), nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), nn.Flatten(),
             nn.Linear(20, 3)])
    with torch.no_grad():  # running statistics that are not the defaults, and a count
        for i in (1, 4):
            bn = m.layers[i]
            bn.running_mean.copy_(torch.randn(bn.num_features) * 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features) + 0.5)
            bn.num_batches_tracked.fill_(7)
    return m


def check_bn():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((24, 3, 6, 6)) * 2 + 0.5).astype(np.float32)
    y = rng.integers(0, 3, (24,)).astype(np.int64)
    xp, yp = os.path.join(TMP, "bx.npy"), os.path.join(TMP, "by.npy")
    np.save(xp, x)
    np.save(yp, y)
    text = BN.replace("@X@", xp).replace("@Y@", yp)
    plan = compile_(text, "bn")
    model = bn_model()
    sd = model.state_dict()
    report(sd["layers.1.num_batches_tracked"].dtype == torch.int64 and "layers.4.running_var" in sd,
           "torch's BatchNorm2d state_dict: running_mean, running_var, num_batches_tracked (int64)")
    init = os.path.join(TMP, "bn_init.safetensors")
    save_file(sd, init)
    # --init takes the buffers, --export gives them back, bit for bit
    out0 = os.path.join(TMP, "bn0.safetensors")
    pipert(2, plan, "--init", init, "--steps", "0", "--export", out0)
    back = load_file(out0)
    same = sorted(back) == sorted(sd) and all(torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype
                                              for k in sd)
    report(same, "batchnorm2d: --init from torch's state_dict, --export (--steps 0) gives every tensor back bit for "
           "bit, num_batches_tracked as I64", sorted(back))
    # 3 steps with an evaluation at the end: torch, micro-batch by micro-batch
    m = os.path.join(TMP, "bn.jsonl")
    out = os.path.join(TMP, "bn3.safetensors")
    pipert(2, plan, "--init", init, "--steps", "3", "--log-every", "1", "--metrics", m, "--export", out)
    recs = [json.loads(l) for l in open(m)]
    got = [r["loss"] for r in recs if "loss" in r and "step" in r]
    ev = [r["eval_loss"] for r in recs if "eval_loss" in r]
    X, Y = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, foreach=False)
    want = []
    for s in range(3):
        opt.zero_grad()
        total = 0.0
        for k in range(2):
            b = slice(s * 8 + k * 4, s * 8 + k * 4 + 4)
            loss = F.cross_entropy(model(X[b]), Y[b], reduction="sum") / 8
            loss.backward()
            total += loss.item()
        opt.step()
        want.append(total)
    model.eval()
    with torch.no_grad():
        want_eval = F.cross_entropy(model(X), Y).item()
    worst = max(rel(a, b) for a, b in zip(got, want))
    report(len(got) == 3 and worst < TOL, "batchnorm2d: 3 steps from torch's weights and buffers, largest relative "
           "loss difference %.1e" % worst, "pipe %s\ntorch %s" % (got, want))
    report(len(ev) == 1 and rel(ev[0], want_eval) < TOL, "batchnorm2d: evaluation uses the running statistics: "
           "pipe's eval loss %s, torch's in eval mode %.7f" % (ev, want_eval))
    back = Net([nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                nn.Conv2d(4, 5, 3, stride=2, bias=False), nn.BatchNorm2d(5, eps=1e-3, momentum=0.3), nn.Flatten(),
                nn.Linear(20, 3)])
    try:
        back.load_state_dict(load_file(out), strict=True)
        tsd, bsd = model.state_dict(), back.state_dict()
        nbt = int(bsd["layers.4.num_batches_tracked"])
        bw = max(float(((bsd[k] - tsd[k]).abs() / tsd[k].abs().clamp_min(1e-3)).max())
                 for k in tsd if "running" in k)
        report(nbt == 7 + 3 * 2 and bw < TOL,
               "batchnorm2d: --export after 3 steps loads with strict=True; num_batches_tracked %d (7 + 3 steps x 2 "
               "micro-batches: the evaluation added none), running statistics within %.1e of torch's" % (nbt, bw))
    except Exception as e:  # noqa: BLE001
        report(False, "batchnorm2d: --export after 3 steps loads with strict=True", e)
    # a missing buffer, and a count that is not I64, are refused
    bad = dict(sd)
    del bad["layers.4.running_var"]
    save_file(bad, os.path.join(TMP, "bn_missing.safetensors"))
    try:
        pipert(2, plan, "--init", os.path.join(TMP, "bn_missing.safetensors"), "--steps", "0")
        report(False, "batchnorm2d: --init without running_var is refused")
    except RuntimeError as e:
        report("no tensor layers.4.running_var [5], which this model needs" in str(e),
               "batchnorm2d: --init without running_var is refused as a missing tensor", e)
    bad = dict(sd)
    bad["layers.1.num_batches_tracked"] = torch.tensor(7.0)
    save_file(bad, os.path.join(TMP, "bn_f32.safetensors"))
    try:
        pipert(2, plan, "--init", os.path.join(TMP, "bn_f32.safetensors"), "--steps", "0")
        report(False, "batchnorm2d: --init with num_batches_tracked as F32 is refused")
    except RuntimeError as e:
        report("num_batches_tracked is F32" in str(e), "batchnorm2d: --init with num_batches_tracked as F32 is refused",
               e)
    # --resume: 2 steps saved, then the third, exports what 3 steps straight do
    ck = os.path.join(TMP, "bn_ck")
    pipert(2, plan, "--init", init, "--steps", "2", "--save", ck)
    # the optimizer state holds the parameters' only: no buffer has any
    optim = {}
    for st in (0, 1):
        optim.update(load_file(os.path.join(ck, "latest", "optim-%d.safetensors" % st)))
    weights = load_file(os.path.join(ck, "latest", "stage-1.safetensors"))
    report(optim and not [k for k in optim if "running" in k or "num_batches" in k] and
           "layers.4.running_var" in weights and "layers.4.weight.exp_avg" in optim,
           "batchnorm2d: checkpoints hold the buffers with the weights (stage-S) and no optimizer state for them",
           sorted(optim))
    out_r = os.path.join(TMP, "bn3r.safetensors")
    pipert(2, plan, "--steps", "3", "--resume", ck, "--export", out_r)
    a, b = load_file(out), load_file(out_r)
    report(sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a),
           "batchnorm2d: --resume after 2 steps, then the 3rd: the export equals 3 steps straight, bit for bit "
           "(running statistics and num_batches_tracked included)")
    # 2 replicas of each stage: replica 0's buffers are the ones exported
    plan2 = compile_(text.replace("micro_batches = 2;", "micro_batches = 1; data_parallel = 2;"), "bn_dp2")
    out_d = os.path.join(TMP, "bn_dp2.safetensors")
    m2 = os.path.join(TMP, "bn_dp2.jsonl")
    pipert(4, plan2, "--init", init, "--steps", "3", "--log-every", "1", "--metrics", m2, "--export", out_d)
    recs = [json.loads(l) for l in open(m2)]
    got2 = [r["loss"] for r in recs if "loss" in r and "step" in r]
    ev2 = [r["eval_loss"] for r in recs if "eval_loss" in r]
    d = load_file(out_d)
    worst2 = max(rel(p, q) for p, q in zip(got2, want))
    report(int(d["layers.1.num_batches_tracked"]) == 7 + 3 and worst2 < TOL,
           "batchnorm2d: 2 stages x 2 replicas, 1 micro-batch each: the losses within %.1e of 1 replica, "
           "num_batches_tracked %d (replica 0's: 7 + 3 steps x 1)" % (worst2, int(d["layers.1.num_batches_tracked"])))
    # both replicas evaluate with replica 0's buffers (the exported ones)
    back.load_state_dict(d, strict=True)
    back.eval()
    with torch.no_grad():
        want_eval2 = F.cross_entropy(back(X), Y).item()
    report(len(ev2) == 1 and rel(ev2[0], want_eval2) < TOL,
           "batchnorm2d: 2 replicas evaluate with replica 0's running statistics: eval loss %s, torch's with the "
           "export %.7f" % (ev2, want_eval2))


# ---- 6. residual blocks: names body.j / shortcut.j both ways

RESNET = """model resnet {
    input  x: float32[2, 6, 6]
    target label: int32[]
    @INIT@
    conv2d(4, kernel = 3, padding = 1)
    residual {
        conv2d(4, kernel = 3, padding = 1)
        relu
        conv2d(4, kernel = 3, padding = 1@ZEROS@)
    }
    residual {
        conv2d(6, kernel = 3, stride = 2, padding = 1)
        tanh
    } shortcut {
        conv2d(6, kernel = 1, stride = 2, bias = false)
    }
    flatten
    residual { layernorm; linear(10); gelu; linear(54) }
    linear(5)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 4; schedule = zb-h1 }
train { optimizer = adam(lr = 0.01); steps = 4; seed = 3; shuffle = false; data = npy("@X@", "@Y@") }
"""


def resnet():
    torch.manual_seed(11)
    return Net([nn.Conv2d(2, 4, 3, padding=1),
                Residual([nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)]),
                Residual([nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Tanh()], [nn.Conv2d(4, 6, 1, stride=2, bias=False)]),
                nn.Flatten(),
                Residual([nn.LayerNorm(54), nn.Linear(54, 10), nn.GELU(approximate="tanh"), nn.Linear(10, 54)]),
                nn.Linear(54, 5)])


def check_residual():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, (40,)).astype(np.int64)
    xp, yp = os.path.join(TMP, "resx.npy"), os.path.join(TMP, "resy.npy")
    np.save(xp, x)
    np.save(yp, y)
    text = RESNET.replace("@X@", xp).replace("@Y@", yp)
    plan = compile_(text.replace("@INIT@", "").replace("@ZEROS@", ""), "resnet")
    model = resnet()
    sd = model.state_dict()
    report("layers.1.body.2.weight" in sd and "layers.2.shortcut.0.weight" in sd and "layers.4.body.3.bias" in sd,
           "torch's state_dict names a block's layers layers.{i}.body.{j} / shortcut.{j}")
    init = os.path.join(TMP, "res_init.safetensors")
    save_file(sd, init)
    got = losses(2, plan, 4, "--init", init)
    X, Y = torch.tensor(x), torch.tensor(y)

    def loss_on(m, step):
        with torch.no_grad():
            s = slice(step * 8, step * 8 + 8)
            return F.cross_entropy(m(X[s]), Y[s]).item()

    want = loss_on(model, 0)
    report(rel(got[0], want) < TOL, "ResNet: --init from torch's state_dict (zb-h1, 2 stages), first loss %.7f vs "
           "torch %.7f" % (got[0], want), "rel %.2e" % rel(got[0], want))
    out = os.path.join(TMP, "res3.safetensors")
    pipert(2, plan, "--init", init, "--steps", "3", "--export", out)
    back = resnet()
    try:
        back.load_state_dict(load_file(out), strict=True)
        want = loss_on(back, 3)
        report(rel(got[3], want) < TOL, "ResNet: --export after 3 steps, load_state_dict(strict=True), loss on the "
               "4th batch %.7f vs pipe's 4th %.7f" % (want, got[3]), "rel %.2e" % rel(got[3], want))
    except Exception as e:  # noqa: BLE001
        report(False, "ResNet: --export after 3 steps loads with strict=True", e)
    # init inside a block: a layer's own, and the model's for the rest
    plan = compile_(text.replace("@INIT@", "init = normal(std = 0.5)").replace("@ZEROS@", ", init = zeros"), "resz")
    w = os.path.join(TMP, "res0.safetensors")
    pipert(2, plan, "--steps", "0", "--export", w)
    t = load_file(w)
    z = t["layers.1.body.2.weight"], t["layers.1.body.2.bias"]
    o = t["layers.1.body.0.weight"], t["layers.2.shortcut.0.weight"], t["layers.4.body.1.weight"]
    report(all(float(a.abs().max()) == 0 for a in z) and all(0.4 < float(a.std()) < 0.6 for a in o)
           and float(t["layers.4.body.0.weight"].min()) == 1.0 and float(t["layers.1.body.0.bias"].abs().max()) == 0
           and not torch.equal(t["layers.1.body.0.weight"][0], t["layers.0.weight"][0]),
           "init inside a block: body.2's own zeros, the model's normal(std = 0.5) on the other weights (norm "
           "scales 1, biases 0), each drawn apart",
           "stds %s" % [float(a.std()) for a in o])


def main():
    for check in (check_tied_mlp, check_gpt, check_halves, check_mse, check_bn, check_residual):
        try:
            check()
        except Exception as e:  # noqa: BLE001
            report(False, check.__name__, e)
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


sys.exit(main())
