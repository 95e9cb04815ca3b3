#!/usr/bin/env python3
"""Shapes and parameters of pipec against PyTorch's own modules.

    python3 tests/parity/test_shapes.py PATH/TO/pipec SOURCE_DIR

For each model below, the DSL text goes through `pipec FILE --stats --json`,
and the same model is built in torch.nn, one module per DSL layer, in a
container whose layer i is `layers[i]` (so `named_parameters()` yields the
names pipec prints: layers.{i}.weight, ...). A forward pass on a batch of 2
(ones, or zeros for token ids) gives each layer's input and output shape;
PyTorch, not a table of numbers, is the reference. Compared for every layer:
type, input and output shape (batch dimension dropped), dtype, parameter
count, parameter tensor names and shapes, and the tie; for the model: the
layer count and total_params against the unique parameters of the torch
model (a tied linear shares the embedding's weight, counted once). A few
models that PyTorch rejects must be rejected by pipec too (exit 1).

Prints one line per model and a last line `N passed, M failed`; exits 1 on
any failure. Needs torch (Debian's python3-torch is enough; no torchvision).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_layers import Block, Embedding, LlamaBlock, Residual, RMSNorm, Reshape, Transpose  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
BATCH = 2

# ---- torch modules for the DSL layers that torch.nn has no single module for


class Layers(nn.Module):
    """The model: layer i is layers[i], fed in order."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList()


# ---- the layers of a case: (type, DSL line, factory)
#
# A factory gets the input batch of the layer (a real tensor, batch first) and
# the modules built so far, and returns the torch module; shapes of inputs
# come from torch itself, never from pipec's JSON.


def channels(x):
    return x.shape[1]


def last(x):
    return x.shape[-1]


def lin(out, bias=True):
    return lambda x, prev: nn.Linear(last(x), out, bias=bias)


def conv(out, k, s=1, p=0, bias=True):
    return lambda x, prev: nn.Conv2d(channels(x), out, k, stride=s, padding=p, bias=bias)


def fixed(module_fn):
    return lambda x, prev: module_fn()


def tied(out, owner, bias=True):
    """A linear whose weight is layer `owner`'s (an embedding's tokens, or a linear's)."""

    def make(x, prev):
        m = nn.Linear(last(x), out, bias=bias)
        src = prev[owner]
        m.weight = src.tokens.weight if isinstance(src, Embedding) else src.weight
        m.tied_to = owner
        return m

    return make


def ln(eps=1e-5):
    return lambda x, prev: nn.LayerNorm(last(x), eps=eps)


def block(heads, mlp=None, causal=False, mask=None, dropout=0.0):
    return lambda x, prev: Block(last(x), heads, mlp, causal, mask, dropout)


def llama(heads, kv=None, mlp=None, theta=10000.0, eps=1e-5, causal=True, mask=None):
    return lambda x, prev: LlamaBlock(last(x), heads, kv, mlp, theta, eps, causal, mask)


def rms(eps=1e-5):
    return lambda x, prev: RMSNorm(last(x), eps)


RELU = ("relu", "relu", fixed(nn.ReLU))
GELU = ("gelu", "gelu", fixed(lambda: nn.GELU(approximate="tanh")))
TANH = ("tanh", "tanh", fixed(nn.Tanh))
SIGMOID = ("sigmoid", "sigmoid", fixed(nn.Sigmoid))
FLATTEN = ("flatten", "flatten", fixed(nn.Flatten))


def dropout(p, text=None):
    return ("dropout", text or "dropout(%s)" % p, fixed(lambda: nn.Dropout(p)))


# ---- the models

CASES = []


def case(name, inputs, target, layers, loss="cross_entropy"):
    """inputs: [(name, dtype, shape)], the first is the main one; target:
    (name, dtype, shape); layers: [(type, DSL line, factory)]."""
    body = ["model %s {" % name]
    for n, dt, shape in inputs:
        body.append("    input %s: %s[%s]" % (n, dt, ", ".join(map(str, shape))))
    body.append("    target %s: %s[%s]" % (target[0], target[1], ", ".join(map(str, target[2]))))
    for _, line, _ in layers:
        body.append("    " + line)
    body.append("    loss " + loss)
    body.append("}")
    CASES.append(dict(name=name, text="\n".join(body) + "\n", inputs=inputs,
                      types=[t for t, _, _ in layers], factories=[f for _, _, f in layers]))


case("linear_1d", [("x", "float32", [20])], ("y", "int32", []), [
    ("linear", "linear(16)", lin(16)),
    RELU,
    ("linear", "linear(12, bias = false)", lin(12, bias=False)),
    TANH,
    ("linear", "linear(out = 9, bias = true)", lin(9)),
    SIGMOID,
    ("linear", "linear(5, false)", lin(5, bias=False)),
])

case("linear_2d", [("x", "float32", [5, 12])], ("y", "int32", [5]), [
    ("linear", "linear(7)", lin(7)),
    GELU,
    dropout(0.1),
    ("linear", "linear(3, bias = false)", lin(3, bias=False)),
])

case("linear_3d", [("x", "float32", [2, 3, 5])], ("y", "float32", [2, 3, 4]), [
    ("linear", "linear(6, bias = false)", lin(6, bias=False)),
    ("linear", "linear(4)", lin(4)),
], loss="mse")

case("conv_pool", [("img", "float32", [3, 17, 19])], ("label", "int32", []), [
    ("conv2d", "conv2d(8, kernel = 3)", conv(8, 3)),
    RELU,
    ("conv2d", "conv2d(6, kernel = (3, 5), stride = (2, 1), padding = (1, 2), bias = false)",
     conv(6, (3, 5), (2, 1), (1, 2), bias=False)),
    ("conv2d", "conv2d(5, 3, 1, 1)", conv(5, 3, 1, 1)),
    ("conv2d", "conv2d(7, kernel = 2, stride = 2, bias = false)", conv(7, 2, 2, bias=False)),
    ("maxpool2d", "maxpool2d(kernel = 2)", fixed(lambda: nn.MaxPool2d(2))),
    ("conv2d", "conv2d(4, kernel = (1, 2), padding = (2, 0))", conv(4, (1, 2), p=(2, 0))),
    ("maxpool2d", "maxpool2d(kernel = 3, stride = 2, padding = 1)", fixed(lambda: nn.MaxPool2d(3, 2, padding=1))),
    ("avgpool2d", "avgpool2d(kernel = 2)", fixed(lambda: nn.AvgPool2d(2))),
    FLATTEN,
    dropout(0.25),
    ("linear", "linear(10)", lin(10)),
])

case("pool_variants", [("img", "float32", [2, 31, 61])], ("label", "int32", []), [
    ("maxpool2d", "maxpool2d(kernel = (3, 2), stride = (1, 2))", fixed(lambda: nn.MaxPool2d((3, 2), (1, 2)))),
    ("maxpool2d", "maxpool2d(3, 2)", fixed(lambda: nn.MaxPool2d(3, 2))),
    ("maxpool2d", "maxpool2d(kernel = (2, 4), padding = (1, 2))",
     fixed(lambda: nn.MaxPool2d((2, 4), padding=(1, 2)))),
    ("avgpool2d", "avgpool2d(kernel = (2, 1), stride = 1)", fixed(lambda: nn.AvgPool2d((2, 1), 1))),
    ("avgpool2d", "avgpool2d(3, (1, 2))", fixed(lambda: nn.AvgPool2d(3, (1, 2)))),
    FLATTEN,
    ("linear", "linear(3)", lin(3)),
])

case("small_inputs", [("img", "float32", [1, 2, 1])], ("label", "int32", []), [
    ("maxpool2d", "maxpool2d(kernel = 3, stride = 1, padding = 1)", fixed(lambda: nn.MaxPool2d(3, 1, padding=1))),
    ("conv2d", "conv2d(3, kernel = 5, padding = 2)", conv(3, 5, p=2)),
    ("conv2d", "conv2d(2, kernel = (3, 1), stride = 7, padding = (1, 0))", conv(2, (3, 1), 7, (1, 0))),
    ("maxpool2d", "maxpool2d(kernel = 1, stride = 5)", fixed(lambda: nn.MaxPool2d(1, 5))),
    ("avgpool2d", "avgpool2d(1)", fixed(lambda: nn.AvgPool2d(1))),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(2, 3)", fixed(lambda: nn.AdaptiveAvgPool2d((2, 3)))),
    ("avgpool2d", "avgpool2d(kernel = (2, 3), stride = 4)", fixed(lambda: nn.AvgPool2d((2, 3), 4))),
    FLATTEN,
    ("linear", "linear(1)", lin(1)),
])

case("adaptive_shrink", [("img", "float32", [4, 7, 7])], ("label", "int32", []), [
    ("adaptive_avgpool2d", "adaptive_avgpool2d(3)", fixed(lambda: nn.AdaptiveAvgPool2d(3))),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(h = 2, w = 3)", fixed(lambda: nn.AdaptiveAvgPool2d((2, 3)))),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(1, 1)", fixed(lambda: nn.AdaptiveAvgPool2d((1, 1)))),
    FLATTEN,
    ("linear", "linear(2)", lin(2)),
])

case("adaptive_grow", [("img", "float32", [3, 5, 6])], ("label", "int32", []), [
    ("adaptive_avgpool2d", "adaptive_avgpool2d(8)", fixed(lambda: nn.AdaptiveAvgPool2d(8))),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(5, 13)", fixed(lambda: nn.AdaptiveAvgPool2d((5, 13)))),
    ("conv2d", "conv2d(2, kernel = 3)", conv(2, 3)),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(w = 4, h = 7)", fixed(lambda: nn.AdaptiveAvgPool2d((7, 4)))),
    ("adaptive_avgpool2d", "adaptive_avgpool2d(7)", fixed(lambda: nn.AdaptiveAvgPool2d(7))),
    FLATTEN,
    ("linear", "linear(6)", lin(6)),
])

case("layernorm", [("x", "float32", [6, 10])], ("y", "float32", [6, 10]), [
    ("layernorm", "layernorm", ln()),
    ("linear", "linear(14)", lin(14)),
    ("layernorm", "layernorm(eps = 1e-6)", ln(1e-6)),
    ("layernorm", "layernorm(1e-3)", ln(1e-3)),
    ("linear", "linear(10, bias = false)", lin(10, bias=False)),
], loss="mse")

def bn(eps=1e-5, momentum=0.1):
    return lambda x, prev: nn.BatchNorm2d(channels(x), eps=eps, momentum=momentum)


# batchnorm2d: weight and bias [C] are its parameters (running_mean,
# running_var and num_batches_tracked are buffers: no parameter count)
case("batchnorm", [("img", "float32", [3, 9, 7])], ("label", "int32", []), [
    ("batchnorm2d", "batchnorm2d", bn()),
    ("conv2d", "conv2d(5, kernel = 3)", conv(5, 3)),
    ("batchnorm2d", "batchnorm2d(eps = 1e-3, momentum = 0.3)", bn(1e-3, 0.3)),
    RELU,
    ("batchnorm2d", "batchnorm2d(1e-4)", bn(1e-4)),
    FLATTEN,
    ("linear", "linear(4)", lin(4)),
])

# reshape and transpose: per sample (no batch dimension), dimensions from 0,
# negative ones from the end, one reshape dimension -1
case("reshape_transpose", [("x", "float32", [3, 4, 10])], ("y", "int32", []), [
    ("transpose", "transpose(0, 2)", fixed(lambda: Transpose(0, 2))),
    ("reshape", "reshape(5, -1, 4)", fixed(lambda: Reshape(5, -1, 4))),
    ("transpose", "transpose(-1, 1)", fixed(lambda: Transpose(-1, 1))),
    ("linear", "linear(7)", lin(7)),
    ("reshape", "reshape(d1 = 2, d2 = 2, d3 = 5, d4 = 7)", fixed(lambda: Reshape(2, 2, 5, 7))),
    ("transpose", "transpose(b = 3, a = 1)", fixed(lambda: Transpose(1, 3))),
    ("reshape", "reshape(-1)", fixed(lambda: Reshape(-1))),
    ("linear", "linear(3)", lin(3)),
])

case("embedding_plain", [("tokens", "int32", [9])], ("next", "int32", [9]), [
    ("embedding", "embedding(vocab = 50, dim = 12)", fixed(lambda: Embedding(50, 12))),
    ("layernorm", "layernorm", ln()),
    ("linear", "linear(50)", lin(50)),
])

case("embedding_tied", [("tokens", "int32", [10]), ("pad", "float32", [10])], ("next", "int32", [10]), [
    ("embedding", "embedding(40, 16, 12) as emb", fixed(lambda: Embedding(40, 16, 12))),
    ("transformer_block", "transformer_block(heads = 2)", block(2)),
    ("transformer_block", "transformer_block(4, 24, true, pad, 0.1)", block(4, 24, True, "pad", 0.1)),
    ("transformer_block", "transformer_block(heads = 8, causal = true, mask = pad)", block(8, None, True, "pad")),
    ("layernorm", "layernorm", ln()),
    ("linear", "linear(40, tie = emb)", tied(40, 0)),
])

case("llama", [("tokens", "int32", [10]), ("pad", "float32", [10])], ("next", "int32", [10]), [
    ("embedding", "embedding(40, 48)", fixed(lambda: Embedding(40, 48))),
    ("llama_block", "llama_block(heads = 6, kv_heads = 2, mask = pad)", llama(6, 2, mask="pad")),
    ("llama_block", "llama_block(4, 1, 100, 500000, 1e-6, false)", llama(4, 1, 100, 500000.0, 1e-6, False)),
    ("llama_block", "llama_block(heads = 8)", llama(8)),
    ("rmsnorm", "rmsnorm", rms()),
    ("rmsnorm", "rmsnorm(eps = 1e-6)", rms(1e-6)),
    ("linear", "linear(40, bias = false)", lin(40, bias=False)),
])

case("tied_linear", [("x", "float32", [7])], ("y", "float32", [7]), [
    ("linear", "linear(7, bias = false) as sq", lin(7, bias=False)),
    RELU,
    ("linear", "linear(7, tie = sq)", tied(7, 0)),
], loss="mse")

# residual blocks: the body's statements numbered from 0 with the
# parameter-free ones (body.2 is the second conv2d), a projection shortcut,
# one on a single line; shapes and the names body.j.* / shortcut.j.* from torch
case("residual", [("img", "float32", [3, 9, 9])], ("label", "int32", []), [
    ("conv2d", "conv2d(4, kernel = 3, padding = 1)", conv(4, 3, p=1)),
    ("residual", "residual {\n        conv2d(4, kernel = 3, padding = 1)\n        relu\n"
     "        conv2d(4, kernel = 3, padding = 1, bias = false)\n    }",
     lambda x, prev: Residual([nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False)])),
    ("residual", "residual {\n        conv2d(8, kernel = 3, stride = 2, padding = 1)\n        tanh\n"
     "        avgpool2d(kernel = 1)\n        conv2d(8, kernel = 3, padding = 1)\n    }\n"
     "    shortcut {\n        conv2d(8, kernel = 1, stride = 2, bias = false)\n    }",
     lambda x, prev: Residual([nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(1),
                               nn.Conv2d(8, 8, 3, padding=1)], [nn.Conv2d(4, 8, 1, stride=2, bias=False)])),
    ("residual", "residual { layernorm; linear(7); gelu; linear(5) } shortcut { linear(5, bias = false) }",
     lambda x, prev: Residual([nn.LayerNorm(5), nn.Linear(5, 7), nn.GELU(approximate="tanh"), nn.Linear(7, 5)],
                              [nn.Linear(5, 5, bias=False)])),
    FLATTEN,
    ("linear", "linear(3)", lin(3)),
])

# ---- the examples, with their torch twins built by hand


def alexnet_layers():
    """torchvision's AlexNet(num_classes=10), flattened to the DSL's layers."""
    return [
        ("conv2d", fixed(lambda: nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2))),
        ("relu", fixed(nn.ReLU)),
        ("maxpool2d", fixed(lambda: nn.MaxPool2d(kernel_size=3, stride=2))),
        ("conv2d", fixed(lambda: nn.Conv2d(64, 192, kernel_size=5, padding=2))),
        ("relu", fixed(nn.ReLU)),
        ("maxpool2d", fixed(lambda: nn.MaxPool2d(kernel_size=3, stride=2))),
        ("conv2d", fixed(lambda: nn.Conv2d(192, 384, kernel_size=3, padding=1))),
        ("relu", fixed(nn.ReLU)),
        ("conv2d", fixed(lambda: nn.Conv2d(384, 256, kernel_size=3, padding=1))),
        ("relu", fixed(nn.ReLU)),
        ("conv2d", fixed(lambda: nn.Conv2d(256, 256, kernel_size=3, padding=1))),
        ("relu", fixed(nn.ReLU)),
        ("maxpool2d", fixed(lambda: nn.MaxPool2d(kernel_size=3, stride=2))),
        ("adaptive_avgpool2d", fixed(lambda: nn.AdaptiveAvgPool2d((6, 6)))),
        ("flatten", fixed(lambda: nn.Flatten(1))),
        ("dropout", fixed(lambda: nn.Dropout(p=0.5))),
        ("linear", fixed(lambda: nn.Linear(256 * 6 * 6, 4096))),
        ("relu", fixed(nn.ReLU)),
        ("dropout", fixed(lambda: nn.Dropout(p=0.5))),
        ("linear", fixed(lambda: nn.Linear(4096, 4096))),
        ("relu", fixed(nn.ReLU)),
        ("linear", fixed(lambda: nn.Linear(4096, 10))),
    ]


def llama_tiny_layers():
    return ([("embedding", fixed(lambda: Embedding(256, 128)))] +
            [("llama_block", fixed(lambda: LlamaBlock(128, 8, 2, mask="mask")))] * 6 +
            [("rmsnorm", fixed(lambda: RMSNorm(128))),
             ("linear", fixed(lambda: nn.Linear(128, 256, bias=False)))])


def gpt_tiny_layers():
    return ([("embedding", fixed(lambda: Embedding(256, 128, 128)))] +
            [("transformer_block", fixed(lambda: Block(128, 4, 512, True, "mask")))] * 6 +
            [("layernorm", fixed(lambda: nn.LayerNorm(128))),
             ("linear", tied(256, 0, bias=False))])


def example(name, path, inputs, layers, total=None):
    CASES.append(dict(name=name, path=path, inputs=inputs, types=[t for t, _ in layers],
                      factories=[f for _, f in layers], total=total))


# ---- models PyTorch itself rejects: pipec must reject them too (exit 1)

REJECTS = [
    ("reject_conv_kernel", "model m {\n input x: float32[3, 4, 4]\n target y: int32[]\n"
     " conv2d(2, kernel = 5)\n flatten\n loss cross_entropy\n}\n",
     lambda: nn.Conv2d(3, 2, 5)(torch.ones(BATCH, 3, 4, 4))),
    ("reject_maxpool_padding", "model m {\n input x: float32[1, 8, 8]\n target y: int32[]\n"
     " maxpool2d(kernel = 3, padding = 2)\n flatten\n loss cross_entropy\n}\n",
     lambda: nn.MaxPool2d(3, padding=2)(torch.ones(BATCH, 1, 8, 8))),
    ("reject_avgpool_window", "model m {\n input x: float32[1, 8, 2]\n target y: int32[]\n"
     " avgpool2d(kernel = 3)\n flatten\n loss cross_entropy\n}\n",
     lambda: nn.AvgPool2d(3)(torch.ones(BATCH, 1, 8, 2))),
    ("reject_llama_kv_heads", "model m {\n input x: float32[5, 24]\n target y: int32[5]\n"
     " llama_block(heads = 4, kv_heads = 3)\n linear(2)\n loss cross_entropy\n}\n",
     lambda: LlamaBlock(24, 4, 3, 32)(torch.ones(BATCH, 5, 24))),
    ("reject_llama_odd_head_width", "model m {\n input x: float32[5, 20]\n target y: int32[5]\n"
     " llama_block(heads = 4)\n linear(2)\n loss cross_entropy\n}\n",
     lambda: LlamaBlock(20, 4, 4, 32)(torch.ones(BATCH, 5, 20))),
    ("reject_batchnorm_rows", "model m {\n input x: float32[6, 10]\n target y: int32[6]\n"
     " batchnorm2d\n loss cross_entropy\n}\n",
     lambda: nn.BatchNorm2d(6)(torch.ones(BATCH, 6, 10))),
    ("reject_reshape_size", "model m {\n input x: float32[3, 4]\n target y: int32[]\n"
     " reshape(5, -1)\n flatten\n loss cross_entropy\n}\n",
     lambda: Reshape(5, -1)(torch.ones(BATCH, 3, 4))),
    ("reject_transpose_dim", "model m {\n input x: float32[3, 4]\n target y: int32[]\n"
     " transpose(0, 2)\n flatten\n loss cross_entropy\n}\n",
     lambda: torch.ones(BATCH, 3, 4).transpose(1, 3)),
    ("reject_residual_shape", "model m {\n input x: float32[3, 4, 4]\n target y: int32[]\n"
     " residual { conv2d(2, kernel = 1) }\n flatten\n loss cross_entropy\n}\n",
     lambda: Residual([nn.Conv2d(3, 2, 1)])(torch.ones(BATCH, 3, 4, 4))),
    ("reject_residual_shortcut_shape", "model m {\n input x: float32[3, 4, 4]\n target y: int32[]\n"
     " residual { conv2d(2, kernel = 1) } shortcut { conv2d(2, kernel = 1, stride = 2) }\n flatten\n"
     " loss cross_entropy\n}\n",
     lambda: Residual([nn.Conv2d(3, 2, 1)], [nn.Conv2d(3, 2, 1, stride=2)])(torch.ones(BATCH, 3, 4, 4))),
    ("reject_positions", "model m {\n input t: int32[9]\n target y: int32[9]\n"
     " embedding(vocab = 5, dim = 4, positions = 8)\n loss cross_entropy\n}\n",
     lambda: Embedding(5, 4, 8)(torch.zeros(BATCH, 9, dtype=torch.long))),
]

# ---- running and comparing


def run_pipec(pipec, path):
    p = subprocess.run([pipec, path, "--stats", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def batch_for(dtype, shape):
    if dtype == "int32":
        return torch.zeros([BATCH] + list(shape), dtype=torch.long)
    return torch.ones([BATCH] + list(shape))


TORCH_DTYPE = {torch.float32: "float32", torch.int64: "int32", torch.int32: "int32"}


def check_model(pipec, tmp, c):
    """Returns (problems, summary)."""
    if "text" in c:
        path = os.path.join(tmp, c["name"] + ".pipe")
        with open(path, "w") as f:
            f.write(c["text"])
    else:
        path = c["path"]
    rc, out, err = run_pipec(pipec, path)
    if rc != 0:
        return ["pipec exited %d: %s" % (rc, err.strip())], ""
    try:
        j = json.loads(out)
    except ValueError as e:
        return ["stdout is not JSON: %s" % e], ""
    probs = []

    # torch, layer by layer
    model = Layers()
    feeds = {n: batch_for(dt, shape) for n, dt, shape in c["inputs"]}
    x = feeds[c["inputs"][0][0]]
    torch_in, torch_out = [], []
    with torch.no_grad():
        for i, make in enumerate(c["factories"]):
            m = make(x, model.layers)
            model.layers.append(m)
            m.eval()
            torch_in.append(list(x.shape[1:]))
            mask = getattr(m, "uses_mask", None)
            x = m(x, feeds[mask]) if mask else m(x)
            torch_out.append((list(x.shape[1:]), x.dtype))
    # unique parameters (shared ones once, under their first owner's name)
    named = list(model.named_parameters())
    torch_total = sum(p.numel() for _, p in named)

    layers = j.get("layers", [])
    if len(layers) != len(c["factories"]):
        probs.append("pipec has %d layers, torch %d" % (len(layers), len(c["factories"])))
    for i, L in enumerate(layers[:len(c["factories"])]):
        where = "layer %d (%s)" % (i, c["types"][i])
        tm = model.layers[i]
        if L.get("index") != i:
            probs.append("%s: index %r" % (where, L.get("index")))
        if L.get("type") != c["types"][i]:
            probs.append("%s: pipec says type %r" % (where, L.get("type")))
        if L.get("input_shape") != torch_in[i]:
            probs.append("%s: input shape pipec %s, torch %s" % (where, L.get("input_shape"), torch_in[i]))
        shape, dtype = torch_out[i]
        if L.get("output_shape") != shape:
            probs.append("%s: output shape pipec %s, torch %s" % (where, L.get("output_shape"), shape))
        if L.get("dtype") != TORCH_DTYPE.get(dtype):
            probs.append("%s: dtype pipec %s, torch %s" % (where, L.get("dtype"), dtype))
        prefix = "layers.%d." % i
        mine = {n: list(p.shape) for n, p in named if n.startswith(prefix)}
        count = sum(p.numel() for n, p in named if n.startswith(prefix))
        if L.get("params") != count:
            probs.append("%s: params pipec %s, torch %d" % (where, L.get("params"), count))
        theirs = {}
        for t in L.get("param_tensors", []):
            if t["name"] in theirs:
                probs.append("%s: tensor %s listed twice" % (where, t["name"]))
            theirs[t["name"]] = t["shape"]
        if theirs != mine:
            for n in sorted(set(theirs) | set(mine)):
                if theirs.get(n) != mine.get(n):
                    probs.append("%s: tensor %s pipec %s, torch %s" % (where, n, theirs.get(n), mine.get(n)))
        if sum(math.prod(s) for s in theirs.values()) != L.get("params"):
            probs.append("%s: params %s is not the sum of its tensors" % (where, L.get("params")))
        # buffers (batchnorm2d's running statistics): what torch's state_dict
        # holds beyond the parameters, names, shapes and dtypes
        state = model.state_dict()
        bufs = {n: (list(b.shape), str(b.dtype).replace("torch.", "")) for n, b in model.named_buffers()
                if n.startswith(prefix) and n in state}
        listed = {t["name"]: (t["shape"], t["dtype"]) for t in L.get("buffer_tensors", [])}
        if listed != bufs:
            probs.append("%s: buffers pipec %s, torch %s" % (where, sorted(listed.items()), sorted(bufs.items())))
        tie = getattr(tm, "tied_to", None)
        if L.get("tied_to") != tie:
            probs.append("%s: tied_to pipec %s, torch %s" % (where, L.get("tied_to"), tie))
    if j.get("total_params") != torch_total:
        probs.append("total_params pipec %s, torch %d" % (j.get("total_params"), torch_total))
    if c.get("total") is not None and torch_total != c["total"]:
        probs.append("torch model has %d params, expected %d" % (torch_total, c["total"]))
    return probs, "%d layers, %d params" % (len(layers), j.get("total_params", -1))


def check_reject(pipec, tmp, name, text, torch_fn):
    path = os.path.join(tmp, name + ".pipe")
    with open(path, "w") as f:
        f.write(text)
    probs = []
    try:
        torch_fn()
        probs.append("torch accepts the model (the case is wrong)")
    except (RuntimeError, IndexError, ValueError):
        pass
    rc, out, err = run_pipec(pipec, path)
    if rc != 1:
        probs.append("pipec exited %d, not 1" % rc)
    if out:
        probs.append("pipec wrote to stdout on error")
    if "error:" not in err:
        probs.append("no error message: %r" % err)
    return probs, "rejected like torch: " + (err.strip().splitlines() or [""])[0]


def main():
    if len(sys.argv) != 3:
        print("usage: %s PATH/TO/pipec SOURCE_DIR" % sys.argv[0], file=sys.stderr)
        return 2
    pipec, src = os.path.abspath(sys.argv[1]), sys.argv[2]
    example("alexnet", os.path.join(src, "examples", "alexnet.pipe"), [("image", "float32", [3, 224, 224])],
            alexnet_layers(), total=57044810)
    example("gpt_tiny", os.path.join(src, "examples", "gpt_tiny.pipe"),
            [("tokens", "int32", [128]), ("mask", "float32", [128])], gpt_tiny_layers())
    example("llama_tiny", os.path.join(src, "examples", "llama_tiny.pipe"),
            [("tokens", "int32", [128]), ("mask", "float32", [128])], llama_tiny_layers())
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="pipe-parity-") as tmp:
        jobs = [(c["name"], lambda c=c: check_model(pipec, tmp, c)) for c in CASES]
        jobs += [(r[0], lambda r=r: check_reject(pipec, tmp, *r)) for r in REJECTS]
        for name, job in jobs:
            try:
                probs, summary = job()
            except Exception as e:  # a crash in one case is that case's failure
                probs, summary = ["%s: %s" % (type(e).__name__, e)], ""
            if probs:
                failed += 1
                print("FAIL %s" % name)
                for p in probs:
                    print("    " + p)
            else:
                passed += 1
                print("ok %s: %s" % (name, summary))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
