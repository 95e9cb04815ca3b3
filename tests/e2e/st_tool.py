#!/usr/bin/env python3
"""Small safetensors tool for the end-to-end tests (standard library only).

    st_tool.py digest FILE_OR_CKPT      "name dtype shape sha256" per tensor, sorted: of one
                                        file, or of a checkpoint's DIR/latest/stage-*.safetensors
    st_tool.py rename FILE OUT FROM=TO  a copy with every name starting FROM starting TO
    st_tool.py drop FILE OUT NAME       a copy without tensor NAME
    st_tool.py add FILE OUT NAME        a copy with one more F32 tensor NAME of shape [2]
    st_tool.py dtype FILE OUT NAME DT   a copy with NAME's F32 values as DT (F16, BF16 by truncation
                                        of exactly representable values, or F64, I64)
    st_tool.py meta FILE                the metadata, as JSON
"""
import glob
import hashlib
import json
import os
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = head.pop("__metadata__", None)
    out = {}
    for name, t in head.items():
        a, b = t["data_offsets"]
        out[name] = (t["dtype"], list(t["shape"]), body[a:b])
    return out, meta


def write(path, tensors, meta=None):
    head, off, blobs = {}, 0, []
    if meta is not None:
        head["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def digest(arg):
    files = [arg] if os.path.isfile(arg) else sorted(glob.glob(os.path.join(arg, "latest", "stage-*.safetensors")))
    lines = set()
    for f in files:
        for name, (dtype, shape, raw) in read(f)[0].items():
            lines.add("%s %s %s %s" % (name, dtype, "x".join(map(str, shape)), hashlib.sha256(raw).hexdigest()))
    sys.stdout.write("".join(l + "\n" for l in sorted(lines)))


def main(a):
    cmd = a[0]
    if cmd == "digest":
        return digest(a[1])
    if cmd == "meta":
        print(json.dumps(read(a[1])[1]))
        return
    t, meta = read(a[1])
    if cmd == "rename":
        src, dst = a[3].split("=", 1)
        t = {(dst + k[len(src):] if k.startswith(src) else k): v for k, v in t.items()}
    elif cmd == "drop":
        del t[a[3]]
    elif cmd == "add":
        t[a[3]] = ("F32", [2], struct.pack("<2f", 1.0, 2.0))
    elif cmd == "dtype":
        dtype, shape, raw = t[a[3]]
        v = struct.unpack("<%df" % (len(raw) // 4), raw)
        if a[4] == "F16":
            raw = struct.pack("<%de" % len(v), *v)
        elif a[4] == "BF16":
            raw = b"".join(struct.pack("<f", x)[2:] for x in v)
        elif a[4] == "F64":
            raw = struct.pack("<%dd" % len(v), *v)
        elif a[4] == "I64":
            raw = struct.pack("<%dq" % len(v), *[int(x) for x in v])
        t[a[3]] = (a[4], shape, raw)
    write(a[2], t, meta)


main(sys.argv[1:])
