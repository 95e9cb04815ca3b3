#!/usr/bin/env python3
"""Reads TensorBoard event files from the format's description alone, the
way TensorBoard reads them, checking every CRC (standard library only).

    tb_events.py DIR        prints "TAG STEP VALUE" per scalar, then
                            "records N files F version brain.Event:2"

A file DIR/events.out.tfevents.* is a sequence of TFRecords:

    uint64 length | uint32 masked CRC-32C of the 8 length bytes | data | uint32 masked CRC-32C of data

little-endian, masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32,
CRC-32C being the Castagnoli CRC (reflected polynomial 0x82f63b78). Each
data is a tensorflow.Event protobuf: field 1 wall_time (double, wire type
1), 2 step (int64, varint), 3 file_version (string), 5 summary (message:
field 1 repeated Value {1 tag: string, 2 simple_value: float (wire type 5)}).
Exits 1 on a bad CRC, a cut record or an unknown field.
"""
import glob
import os
import struct
import sys

TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return v, i


def fields(b):
    """(field, wire, value) of a protobuf message."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % w)
        yield f, w, v


def main(d):
    files = sorted(glob.glob(os.path.join(d, "events.out.tfevents.*")))
    if not files:
        sys.exit("no events.out.tfevents.* in %s" % d)
    n = 0
    version = None
    for path in files:
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            if i + 12 > len(data):
                sys.exit("%s: a record cut at byte %d" % (path, i))
            head = data[i:i + 8]
            (length,) = struct.unpack("<Q", head)
            (c1,) = struct.unpack("<I", data[i + 8:i + 12])
            if c1 != masked(head):
                sys.exit("%s: byte %d: the length's CRC is wrong" % (path, i))
            body = data[i + 12:i + 12 + length]
            (c2,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
            if len(body) != length or c2 != masked(body):
                sys.exit("%s: byte %d: the data's CRC is wrong" % (path, i))
            i += 16 + length
            n += 1
            step, wall = 0, None
            values = []
            for f, w, v in fields(body):
                if f == 1 and w == 1:
                    (wall,) = struct.unpack("<d", v)
                elif f == 2 and w == 0:
                    step = v
                elif f == 3 and w == 2:
                    version = v.decode()
                    if n != 1:
                        sys.exit("%s: file_version not in the first record" % path)
                elif f == 5 and w == 2:
                    for g, gw, val in fields(v):
                        if g != 1 or gw != 2:
                            sys.exit("%s: a summary field %d" % (path, g))
                        tag, x = None, None
                        for h, hw, hv in fields(val):
                            if h == 1 and hw == 2:
                                tag = hv.decode()
                            elif h == 2 and hw == 5:
                                (x,) = struct.unpack("<f", hv)
                            else:
                                sys.exit("%s: a value field %d" % (path, h))
                        values.append((tag, x))
                else:
                    sys.exit("%s: an event field %d (wire type %d)" % (path, f, w))
            if wall is None or wall < 1e9:
                sys.exit("%s: record %d has no wall_time" % (path, n))
            for tag, x in values:
                print("%s %d %r" % (tag, step, x))
    print("records %d files %d version %s" % (n, len(files), version))


main(sys.argv[1])
