#!/usr/bin/env python3
"""tests/parity/test_resize.py: the cifar10 loader's bilinear resize against
PyTorch's F.interpolate(mode='bilinear', align_corners=False, antialias=False).

Usage: test_resize.py RESIZE_TOOL   (tests/parity/resize_tool.c, built by CMake)

Random CIFAR records go through the real loader (rt_data_open with
cifar10(DIR, resize = S)) for S = 224 (AlexNet's size), 20 (a downscale) and
0 (as stored); random float images of odd shapes go through the resize
alone. PyTorch's side is what torchvision does: bytes / 255 as float32, then
interpolate. The loader follows the arithmetic of torch 1.13's CPU kernel
for NCHW float tensors (float ratio; source position and weights in double,
weights rounded to float; fused multiply-adds where its x86-64 build has
them), so with torch 1.13 the results must be bit-identical; other releases
and builds may differ by an ulp or so, so with them the test allows 1e-5.
Every case has at least 2 channels: with 1 channel PyTorch takes its
channels-last kernel, whose arithmetic differs again (an ulp)."""
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

TOL = 0.0 if torch.__version__.startswith("1.13") else 1e-5


def torch_resize(x, oh, ow):
    return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=False)


def compare(name, ours, want):
    diff = (ours - want).abs()
    worst = diff.max().item()
    differ = int((diff != 0).sum().item())
    ok = worst <= TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name} (torch {torch.__version__}, tolerance {TOL:g}): max |diff| {worst:.3g}, {differ} of {want.numel()} elements not bit-identical")
    return ok


def read_floats(path, shape):
    with open(path, "rb") as f:
        data = f.read()
    t = torch.frombuffer(bytearray(data), dtype=torch.float32)
    return t.reshape(shape)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    g = torch.Generator().manual_seed(1234)
    ok = True
    with tempfile.TemporaryDirectory(prefix="pipe_parity_resize.") as tmp:
        # CIFAR records: label byte, then 3 x 32 x 32 bytes
        n = 6
        pixels = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        pixels[0].fill_(0)
        pixels[1].fill_(255)
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        with open(os.path.join(tmp, "data_batch_1.bin"), "wb") as f:
            for i in range(n):
                f.write(bytes([int(labels[i])]))
                f.write(bytes(pixels[i].flatten().tolist()))
        images = pixels.float().div(255)
        for s in (224, 20, 0):
            side = s if s > 0 else 32
            out = os.path.join(tmp, f"cifar_{s}.bin")
            subprocess.run([tool, "cifar", tmp, str(s), out], check=True)
            ours = read_floats(out, (n, 3, side, side))
            want = torch_resize(images, side, side) if s > 0 else images
            ok &= compare(f"cifar10 resize = {s}", ours, want)

        # the resize alone, on float images of other shapes
        for c, ih, iw, oh, ow in ((3, 32, 32, 224, 224), (3, 32, 32, 20, 20), (2, 5, 7, 3, 11), (2, 17, 9, 4, 30),
                                  (3, 1, 1, 3, 2), (2, 6, 4, 6, 9), (3, 32, 32, 32, 64)):
            x = torch.randn(1, c, ih, iw, generator=g)
            src, dst = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
            with open(src, "wb") as f:
                f.write(struct.pack(f"<{x.numel()}f", *x.flatten().tolist()))
            subprocess.run([tool, "raw", src, dst, str(c), str(ih), str(iw), str(oh), str(ow)], check=True)
            ours = read_floats(dst, (1, c, oh, ow))
            ok &= compare(f"[{c}, {ih}, {iw}] -> [{oh}, {ow}]", ours, torch_resize(x, oh, ow))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
