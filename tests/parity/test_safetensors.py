#!/usr/bin/env python3
"""safetensors files of runtime/rt_safetensors.c against PyTorch, both ways.

    python3 tests/parity/test_safetensors.py PATH/TO/safetensors_driver

PyTorch 1.13 cannot load safetensors by itself and the `safetensors`
package is not a dependency, so the script carries a minimal reader and
writer of the format (json + struct + torch.frombuffer), written from the
spec, not from the C code:

  1. C writes, Python reads: random tensors of PyTorch's layouts (Linear
     [out, in], Conv2d [out, in, kh, kw], a bias, a 0-d scalar, an empty
     one) go through `safetensors_driver write`; the Python reader must
     find the same names, shapes, bit patterns and metadata, the header
     length a multiple of 8 and the tensors contiguous in the order given.
  2. Python writes, C reads: the same tensors written by the Python writer
     (the reference's layout: compact JSON, metadata first, space padding)
     and by a sloppier one (fields reordered, white space, no padding,
     data in another order than the header) through `safetensors_driver
     read`, which must print them back exactly.

Prints one line per check; exits 1 on any failure. Needs torch.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch

torch.set_num_threads(1)


def py_load(path):
    """The format's reader in 20 lines: u64 LE header length, JSON, data."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        shape = info["shape"]
        if e > b:
            t = torch.frombuffer(bytearray(data[base + b:base + e]), dtype=torch.float32).reshape(shape)
        else:
            t = torch.zeros(shape, dtype=torch.float32)
        out[name] = (t, b, e)
    return out, meta, n, len(data) - base


def py_save(path, tensors, meta, sloppy=False):
    """The reference's layout; sloppy: what a valid but different writer may do."""
    header = {}
    if meta and not sloppy:
        header["__metadata__"] = meta
    blobs = []
    names = list(tensors)
    order = list(reversed(names)) if sloppy else names  # data order
    off = 0
    where = {}
    for name in order:
        raw = tensors[name].contiguous().numpy().astype("<f4").tobytes()
        where[name] = (off, off + len(raw))
        blobs.append(raw)
        off += len(raw)
    for name in names:
        t = tensors[name]
        if sloppy:
            header[name] = {"data_offsets": list(where[name]), "shape": list(t.shape), "dtype": "F32"}
        else:
            header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": list(where[name])}
    if meta and sloppy:
        header["__metadata__"] = meta
    if sloppy:
        text = json.dumps(header, indent=1).encode("utf-8") + b"\n "  # no padding to 8
    else:
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def sample():
    g = torch.Generator().manual_seed(7)
    t = {
        "layers.0.weight": torch.randn(16, 8, generator=g),          # Linear [out, in]
        "layers.0.bias": torch.randn(16, generator=g),
        "layers.1.weight": torch.randn(4, 3, 3, 3, generator=g),     # Conv2d [out, in, kh, kw]
        "layers.2.scale": torch.tensor(0.5),                          # 0-d
        "layers.3.empty": torch.zeros(0, 5),
        "layers.4.special": torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-40, 3.4e38, -1.17549435e-38]),
    }
    meta = {"format": "pt", "step": "120", "model": "pipe-mlp"}
    return t, meta


def drv_write(driver, path, tensors, meta):
    lines = ["%d %d" % (len(tensors), len(meta))]
    lines += ["%s %s" % kv for kv in meta.items()]
    for name, t in tensors.items():
        vals = " ".join("%.9g" % x for x in t.flatten().tolist())
        lines.append("%s %d %s %s" % (name, t.dim(), " ".join(str(d) for d in t.shape), vals))
    r = subprocess.run([driver, "write", path], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("safetensors_driver write: " + r.stderr)


def drv_read(driver, path):
    r = subprocess.run([driver, "read", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("safetensors_driver read: " + r.stderr)
    lines = r.stdout.split("\n")
    nt, nm = (int(x) for x in lines[0].split())
    meta = dict(tuple(lines[1 + i].split(" ", 1)) for i in range(nm))
    out = {}
    for line in lines[1 + nm:1 + nm + nt]:
        w = line.split()
        name, ndim = w[0], int(w[1])
        shape = [int(x) for x in w[2:2 + ndim]]
        vals = [float(x) for x in w[2 + ndim:]]
        out[name] = torch.tensor(vals, dtype=torch.float32).reshape(shape)
    return list(out), out, meta


def same(a, b):
    """Shapes and bit patterns equal (NaN-safe, -0 distinct from 0)."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    driver = sys.argv[1]
    tensors, meta = sample()
    failed = 0

    def check(ok, what):
        nonlocal failed
        failed += not ok
        print("%s  %s" % ("ok  " if ok else "FAIL", what))

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.safetensors")
        drv_write(driver, path, tensors, meta)
        got, gmeta, hlen, dlen = py_load(path)
        check(list(got) == list(tensors), "C -> Python: names in the order written")
        check(all(same(got[k][0], tensors[k]) for k in tensors), "C -> Python: shapes and bit patterns")
        check(gmeta == meta, "C -> Python: metadata")
        check(hlen % 8 == 0, "C -> Python: header padded to a multiple of 8")
        ends = [0] + [got[k][2] for k in tensors]
        check(all(got[k][1] == ends[i] for i, k in enumerate(tensors)) and ends[-1] == dlen,
              "C -> Python: tensors contiguous, in order, filling the data")
        # and PyTorch can use them as a state dict
        lin = torch.nn.Linear(8, 16)
        lin.load_state_dict({"weight": got["layers.0.weight"][0], "bias": got["layers.0.bias"][0]})
        check(torch.equal(lin.weight.detach(), tensors["layers.0.weight"]), "C -> Python: loads into nn.Linear")

        for sloppy in (False, True):
            path = os.path.join(d, "py%d.safetensors" % sloppy)
            py_save(path, tensors, meta, sloppy)
            names, back, bmeta = drv_read(driver, path)
            kind = "sloppy writer" if sloppy else "reference layout"
            want_order = list(reversed(list(tensors))) if sloppy else list(tensors)
            check(names == want_order, "Python (%s) -> C: names, in file order" % kind)
            check(all(same(back[k], tensors[k]) for k in tensors), "Python (%s) -> C: shapes and bit patterns" % kind)
            check(bmeta == meta, "Python (%s) -> C: metadata" % kind)

        # the reference layout from Python and the C writer agree byte for byte
        a, b = os.path.join(d, "c.safetensors"), os.path.join(d, "py0.safetensors")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            check(fa.read() == fb.read(), "C writer and the reference layout: identical bytes")

    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
