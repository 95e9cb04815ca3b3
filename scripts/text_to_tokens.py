#!/usr/bin/env python3
"""Turn any text file into the token file pipe's tokens() data source reads.

    python3 scripts/text_to_tokens.py INPUT.txt OUTPUT.u16 [--vocab 256]

Byte-level tokens: every byte of the file (UTF-8 text, or anything else) is
one token, its id the byte's value 0..255, written as a flat little-endian
uint16 array, the format of `data = tokens("FILE")` (runtime/rt_data.h).
No tokenizer, no vocabulary file: the model's embedding needs vocab >= 256
(examples/gpt_tiny.pipe has vocab = 256). --vocab is the model's vocabulary
size; a value under 256 is refused (bytes would not fit), never remapped.

pipert needs at least T + 1 tokens for a sequence length T (129 for
gpt_tiny's 128); a sample is T tokens, its targets the same shifted by one.
Prints the token count. Plain Python 3, standard library only.
"""
import argparse
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Byte-level tokens of a text file, as little-endian uint16 "
                    "(pipe's tokens() data format).")
    ap.add_argument("input", help="the text file (any bytes)")
    ap.add_argument("output", help="the token file to write (e.g. data/input.u16)")
    ap.add_argument("--vocab", type=int, default=256,
                    help="the model's vocabulary size; must be >= 256 (default 256)")
    args = ap.parse_args(argv)

    if args.vocab < 256:
        sys.stderr.write(
            "text_to_tokens.py: --vocab %d is too small: byte-level tokens use ids "
            "0..255, so the model's embedding needs vocab >= 256\n" % args.vocab)
        return 1
    if args.vocab > 65536:
        sys.stderr.write("text_to_tokens.py: --vocab %d does not fit uint16 ids "
                         "(at most 65536)\n" % args.vocab)
        return 1
    try:
        with open(args.input, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.stderr.write("text_to_tokens.py: %s: %s\n" % (args.input, e.strerror))
        return 1
    if not data:
        sys.stderr.write("text_to_tokens.py: %s is empty\n" % args.input)
        return 1

    out = bytearray(2 * len(data))  # little-endian uint16: low byte, then 0
    out[0::2] = data
    try:
        with open(args.output, "wb") as f:
            f.write(out)
    except OSError as e:
        sys.stderr.write("text_to_tokens.py: %s: %s\n" % (args.output, e.strerror))
        return 1
    print("%d tokens written to %s" % (len(data), args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
