#!/usr/bin/env python3
"""Runs every command of docs/tutorial.md and compares its output with the
output the tutorial shows.

    python3 tests/e2e/test_tutorial.py BUILD_DIR SOURCE_DIR

A command is a line starting with "$ " inside a fenced block; the lines after
it, up to the next "$ " line or the end of the block, are its output (stdout
and stderr together). Commands run from SOURCE_DIR with "build/" replaced by
BUILD_DIR, and with OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set. Lines must match exactly (trailing spaces aside), except that:

  - a line "..." alone in the tutorial matches any run of lines (none too);
  - on lines that contain "samples/s", "ms/step", "tokens/s" or " s (", the
    numbers right before those words (timings) are not compared;
  - exit statuses are not checked (some commands show an error on purpose).

A command shown with no output must print nothing. Prints "ok" or "not ok"
per command, then "N passed, M failed"; exits 1 when any failed.
"""

import os
import re
import subprocess
import sys

TIMING_WORDS = ("samples/s", "ms/step", "tokens/s", " s (")
TIMING_NUMBER = re.compile(r"[0-9][0-9.]*(?= samples/s| ms/step| tokens/s| s \()")
BUILD_WORD = re.compile(r"(?<![\w./-])build/")


def parse(path):
    """[(line number, command, [expected output lines])] in document order."""
    commands = []
    in_block = False
    current = None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.lstrip().startswith("```"):
                in_block = not in_block
                current = None
                continue
            if not in_block:
                continue
            if line.startswith("$ "):
                current = (n, line[2:], [])
                commands.append(current)
            elif current is not None:
                current[2].append(line)
    return commands


def normalize(line):
    line = line.rstrip()
    if any(w in line for w in TIMING_WORDS):
        line = TIMING_NUMBER.sub("#", line)
    return line


def matches(expected, actual):
    """expected may hold "..." lines, each matching any run of actual lines."""
    memo = {}

    def m(i, j):
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(expected):
            r = j == len(actual)
        elif expected[i] == "...":
            r = any(m(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            r = j < len(actual) and expected[i] == actual[j] and m(i + 1, j + 1)
        memo[key] = r
        return r

    return m(0, 0)


def trim(lines):
    lines = list(lines)
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def run(command, build_dir, source_dir, timeout=300):
    cmd = BUILD_WORD.sub(build_dir.rstrip("/") + "/", command)
    env = dict(os.environ)
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    try:
        p = subprocess.run(["bash", "-c", cmd], cwd=source_dir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + "\n(timed out)\n"
    return out.split("\n")


def main(argv):
    if len(argv) != 3:
        print("usage: test_tutorial.py BUILD_DIR SOURCE_DIR", file=sys.stderr)
        return 2
    build_dir = os.path.abspath(argv[1])
    source_dir = os.path.abspath(argv[2])
    doc = os.path.join(source_dir, "docs", "tutorial.md")
    commands = parse(doc)
    if not commands:
        print("not ok: no commands found in %s" % doc)
        print("0 passed, 1 failed")
        return 1
    passed = failed = 0
    for n, command, shown in commands:
        actual = trim(normalize(l) for l in run(command, build_dir, source_dir))
        expected = trim(normalize(l) for l in shown)
        if matches(expected, actual):
            passed += 1
            print("ok %d - line %d: %s" % (passed + failed, n, command))
        else:
            failed += 1
            print("not ok %d - line %d: %s" % (passed + failed, n, command))
            print("  --- the tutorial shows")
            for l in expected:
                print("  | " + l)
            print("  --- the command printed")
            for l in actual:
                print("  | " + l)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
