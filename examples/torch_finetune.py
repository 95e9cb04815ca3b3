#!/usr/bin/env python3
"""Fine-tuning a PyTorch model with pipe, the PyTorch side (docs/tutorial.md,
section 8). The model is examples/mlp.pipe's: a torch module whose `layers`
is the nn.Sequential Linear(784, 512), ReLU, Linear(512, 10), so its
state_dict names are pipe's (layers.0.weight, ...).

    torch_finetune.py prepare DIR   the model's weights as DIR/model.safetensors,
                                    data as DIR/x.npy (float32) and DIR/y.npy (int64),
                                    and the model's loss and accuracy on them
    torch_finetune.py check DIR     loads DIR/tuned.safetensors (written by
                                    pipert --export) with strict=True and
                                    measures the same

Uses the safetensors package when it is installed, else the few lines of
the format below (Debian's python3-torch comes without it).
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from safetensors.torch import load_file, save_file
except ImportError:
    def save_file(tensors, path, metadata=None):
        head, off, blobs = {"__metadata__": metadata or {}}, 0, []
        for name, t in tensors.items():
            raw = t.detach().contiguous().to(torch.float32).numpy().tobytes()
            head[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
            off += len(raw)
            blobs.append(raw)
        h = json.dumps(head).encode()
        h += b" " * (-len(h) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

    def load_file(path):
        blob = open(path, "rb").read()
        (n,) = struct.unpack("<Q", blob[:8])
        head = json.loads(blob[8:8 + n])
        head.pop("__metadata__", None)
        out = {}
        for name, t in head.items():
            assert t["dtype"] == "F32", t["dtype"]
            a, b = t["data_offsets"]
            out[name] = torch.frombuffer(bytearray(blob[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(t["shape"])
        return out


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x):
        return self.layers(x)


def data():
    """4096 samples: inputs N(0, 1), the label of each the largest of 10 fixed linear scores."""
    rng = np.random.default_rng(2024)
    w = rng.standard_normal((784, 10)).astype(np.float32)
    x = rng.standard_normal((4096, 784)).astype(np.float32)
    return x, np.argmax(x @ w, axis=1).astype(np.int64)


def measure(model, x, y, what):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        loss = F.cross_entropy(out, torch.from_numpy(y)).item()
        acc = (out.argmax(1).numpy() == y).mean()
    print("torch: %s: loss %.4f, accuracy %.2f%% on the %d samples" % (what, loss, 100 * acc, len(y)))


def main(cmd, folder):
    torch.set_num_threads(1)
    x, y = data()
    if cmd == "prepare":
        os.makedirs(folder, exist_ok=True)
        torch.manual_seed(0)
        model = MLP()
        save_file(model.state_dict(), os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        np.save(os.path.join(folder, "x.npy"), x)
        np.save(os.path.join(folder, "y.npy"), y)
        print("wrote model.safetensors (%s), x.npy %s %s, y.npy %s %s" % (
            ", ".join(model.state_dict()), x.dtype, x.shape, y.dtype, y.shape))
        measure(model, x, y, "model.safetensors")
    else:
        model = MLP()
        model.load_state_dict(load_file(os.path.join(folder, "tuned.safetensors")), strict=True)
        measure(model, x, y, "tuned.safetensors, loaded with strict=True")


main(*sys.argv[1:3])
