#!/usr/bin/env python3
"""Prints one line per tensor of a pipert checkpoint, sorted by name:
"name dtype shape sha256-of-the-bytes", over every stage-*.safetensors file
of DIR/latest (weights only, not the optimizer state), so that two runs on
different stage counts or schedules can be compared with cmp. A tensor
saved by two stages (a tied weight's owner and copy) must have the same
bytes in both, else it is printed twice and the comparison fails.

    weights_digest.py CHECKPOINT_DIR
"""
import glob
import hashlib
import json
import os
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8:8 + n])
    body = data[8 + n:]
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        yield name, t["dtype"], tuple(t["shape"]), body[a:b]


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "latest", "stage-*.safetensors")))
    if not files:
        sys.exit("weights_digest: no stage-*.safetensors in %s/latest" % sys.argv[1])
    seen = {}
    lines = []
    for f in files:
        for name, dtype, shape, raw in tensors(f):
            line = "%s %s %s %s" % (name, dtype, "x".join(map(str, shape)), hashlib.sha256(raw).hexdigest())
            if seen.get(name) == line:
                continue
            seen[name] = line
            lines.append(line)
    sys.stdout.write("".join(l + "\n" for l in sorted(lines)))


main()
