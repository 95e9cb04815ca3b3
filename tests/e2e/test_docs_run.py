#!/usr/bin/env python3
"""Runs every command a document shows and compares its output with the
output the document shows.

    python3 tests/e2e/test_docs_run.py BUILD_DIR SOURCE_DIR DOC

DOC is a path under SOURCE_DIR (docs/instructions.md, README.md, ...); what
the document assumes (the files it uses, where its commands run) is set up
by its entry in DOCS below. tests/CMakeLists.txt registers one ctest per
document: cli_docs_readme, cli_docs_dsl, cli_docs_schedules,
cli_docs_instructions, cli_docs_plan_format; e2e_tutorial runs
docs/tutorial.md through the same code (tests/e2e/test_tutorial.py).

Commands. A command is a line starting with "$ " inside a fenced block; the
lines after it, up to the next "$ " line or the end of the block, are its
output (stdout and stderr together). Commands run with bash, one after
another, in a new temporary folder (docs/tutorial.md: in SOURCE_DIR), with
BUILD_DIR first on PATH (so `pipec` and `pipert` are the built ones),
"build/" replaced by BUILD_DIR, and OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 set; OPENBLAS_CORETYPE=Haswell too, unless
the environment sets it or the CPU lacks AVX2 (the shown numbers were made
with those kernels; another kernel moves a loss's last digits).

Output. Lines must match exactly (trailing spaces aside), except that:

  - a line "..." alone (indentation aside) matches any run of lines (none
    too);
  - on lines that contain "samples/s", "ms/step", "tokens/s" or " s (", the
    numbers right before those words (timings) are not compared;
  - exit statuses are not checked (some commands show an error on
    purpose), except that a command whose shown output is only "..." lines
    must exit 0: nothing else of it is checked.

A command shown with no output must print nothing.

Files. A fenced block right after a line that ends in "`NAME`:" (NAME a
file name with an extension, no folder: "`it.pipe`:", "for `bad.sched`:")
is that file: its lines are written to NAME in the temporary folder before
the first command runs, so the document is the file's only source. A
document's entry in DOCS may also take files from another document's
blocks (plan-format.md uses instructions.md's it.pipe), link folders of
SOURCE_DIR into the temporary folder (examples/), write files the document
names without showing them in full (fixtures), and run a setup function
(plan-format.md's damaged plans).

Skipped commands. A command that cannot run here (several machines, a GPU)
carries a trailing shell comment with "not checked" and the reason, at
its end or in parentheses closing it:

    $ mpirun -H a,b -np 4 pipert plan.bin   # not checked: two machines
    $ make test     # runs every test (not checked: the suite)

It is not run, its shown output is not compared, and it is reported as
"ok N - ... # SKIP reason" and counted as skipped, so it never passes
silently.

Prints "ok" or "not ok" per command (TAP-like), then "N passed, M failed,
K skipped"; exits 1 when any failed or when DOC has no command.
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

TIMING_WORDS = ("samples/s", "ms/step", "tokens/s", " s (")
TIMING_NUMBER = re.compile(r"[0-9][0-9.]*(?= samples/s| ms/step| tokens/s| s \()")
BUILD_WORD = re.compile(r"(?<![\w./-])build/")
FILE_INTRO = re.compile(r"`([\w+-][\w.+-]*\.\w+)`:\s*$")
NOT_CHECKED = re.compile(r"\s#.*\bnot checked\b:?\s*(.*?)\)?\s*$")
TIMEOUT = 300


def parse(path):
    """([(line number, command, [expected output lines])] in document order,
    {file name: text} of the blocks that define a file)."""
    commands = []
    files = {}
    in_block = False
    current = None
    file_name = None
    file_lines = None
    last_text = ""
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.lstrip().startswith("```"):
                if in_block and file_name is not None:
                    files[file_name] = "".join(l + "\n" for l in file_lines)
                if not in_block:
                    m = FILE_INTRO.search(last_text)
                    file_name = m.group(1) if m else None
                    file_lines = []
                in_block = not in_block
                current = None
                continue
            if not in_block:
                if line.strip():
                    last_text = line
                continue
            if line.startswith("$ "):
                current = (n, line[2:], [])
                commands.append(current)
                file_name = None  # a block of commands is no file
            elif current is not None:
                current[2].append(line)
            elif file_name is not None:
                file_lines.append(line)
    return commands, files


def normalize(line):
    line = line.rstrip()
    if line.strip() == "...":
        return "..."
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


def environment(build_dir):
    env = dict(os.environ)
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["PATH"] = build_dir + os.pathsep + env.get("PATH", "")
    # The documents' numbers were made with OpenBLAS's Haswell (AVX2) kernels;
    # the AVX-512 ones it picks by itself on some CPUs sum in another order,
    # which moves the last digits of a loss. Pinned where the CPU has AVX2.
    if "OPENBLAS_CORETYPE" not in env and has_avx2():
        env["OPENBLAS_CORETYPE"] = "Haswell"
    return env


def has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def run(command, build_dir, cwd, timeout=TIMEOUT):
    """(exit status or None on a timeout, output lines)"""
    cmd = BUILD_WORD.sub(build_dir.rstrip("/") + "/", command)
    try:
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=environment(build_dir),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode("utf-8", "replace") + "\n(timed out)\n", None
    return rc, out.split("\n")


# ---- what each document assumes ---------------------------------------------


def damaged_plans(tmp, build_dir):
    """docs/plan-format.md, section 6: copies of it.pipe's plan damaged as
    the page says, the CRC fixed up after the edit unless said otherwise."""
    subprocess.run([os.path.join(build_dir, "pipec"), "it.pipe", "-o", "setup.bin"],
                   cwd=tmp, check=True)
    with open(os.path.join(tmp, "setup.bin"), "rb") as f:
        plan = f.read()
    os.unlink(os.path.join(tmp, "setup.bin"))
    nsections = struct.unpack_from("<I", plan, 16)[0]
    at = {}
    for i in range(nsections):
        sid, _, off, _ = struct.unpack_from("<IIQQ", plan, 40 + 24 * i)
        at[sid] = off
    model, partition, train = at[2], at[4], at[6]
    stages, chunks = struct.unpack_from("<II", plan, train)
    count0 = train + 20 + 4 * stages * chunks  # stage 0's instruction count
    instr0 = count0 + 4                        # its first instruction

    def write(name, edit, fix_crc=True):
        b = bytearray(plan)
        edit(b)
        if fix_crc:
            struct.pack_into("<I", b, 24, zlib.crc32(bytes(b[40:])))
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(b)

    def opcode_12(b):
        b[instr0] = 12

    write("c_crc.bin", opcode_12, fix_crc=False)
    write("c_opcode.bin", opcode_12)
    write("c_trunc.bin", lambda b: b.__delitem__(slice(len(b) - 16, len(b))), fix_crc=False)
    write("c_probe.bin", lambda b: struct.pack_into("<I", b, 12, 0x04030201), fix_crc=False)
    write("c_version.bin", lambda b: struct.pack_into("<I", b, 8, 1), fix_crc=False)
    write("c_str.bin", lambda b: struct.pack_into("<i", b, model, 1000))
    write("c_count.bin", lambda b: struct.pack_into("<I", b, count0, 1000))
    # part 1's first layer, after the 12-byte head and part 0's 48 bytes
    write("c_part.bin", lambda b: struct.pack_into("<i", b, partition + 12 + 48, 3))
    # stage 0 pc 5 (RecvGrad mb 0): mb 1, bit 12 of its 8-byte instruction
    def mb_1(b):
        at = instr0 + 5 * 8
        struct.pack_into("<Q", b, at, struct.unpack_from("<Q", b, at)[0] | 1 << 12)
    write("c_verify.bin", mb_1)


# Files docs/dsl.md's error examples use; the page shows the lines at fault.
DSL_FIXTURES = {
    "args.pipe": """\
model args {
    input  x: float32[3, 32, 32]
    target y: int32[]
    conv2d(16, kernal = 3, stride = 1.5)
    linear(out = 10, false)
    loss cross_entropy
}
""",
    "regress.pipe": """\
model regress {
    input  x: float32[16]
    target y: float32[1]
    linear(1)
    loss mse
}
train { steps = 10; data = tokens("input.u16") }
""",
    "syntax.pipe": """\
model syntax {
    input  x: float32[3, 32, 32]
    conv2d(16, kernel = (3, 3) stride = 2)
    target y: int32[]
    loss cross_entropy
}
""",
    "typo.pipe": """\
model typo {
    input  x: float32[16]
    target y: int32[]
    linear(32)
    rleu
    linear(4)
    loss cross_entropy
}
""",
    "shape.pipe": """\
model shape {
    input  x: float32[3, 32, 32]
    target y: int32[]
    flatten
    conv2d(16, kernel = 3)
    loss cross_entropy
}
""",
    "heads.pipe": """\
model heads {
    input  tokens: int32[16]
    target next: int32[16]
    embedding(vocab = 1000, dim = 100)
    transformer_block(heads = 8)
    linear(1000)
    loss cross_entropy
}
""",
}

# Each document: where its commands run ("source": SOURCE_DIR itself, else a
# new temporary folder), folders of SOURCE_DIR linked into that folder,
# files taken from other documents' blocks, fixtures, and a setup function
# run after the files are written.
DOCS = {
    "docs/tutorial.md": dict(cwd="source"),
    "README.md": dict(links=["examples"]),
    "docs/dsl.md": dict(links=["examples"], fixtures=DSL_FIXTURES),
    "docs/instructions.md": dict(links=["examples"]),
    "docs/plan-format.md": dict(files_from={"it.pipe": "docs/instructions.md"},
                                setup=damaged_plans),
    "docs/schedules.md": dict(files_from={"mlp.pipe": "docs/dsl.md"}, fixtures={
        "extra.sched": "stage 0: F0 F1 B0 F2 B1 F3 B2 B3\n"
                       "stage 1: F0 B0 F1 B1 F2 B2 F3 B3 F4\n",
        "w.sched": "stage 0: F0 F1 I0 F2 I1 F3 I2 I3 W0 W1 W2 W3\n"
                   "stage 1: F0 I0 F1 I1 F2 I2 F3 W3 I3 W0 W1 W2\n"}),
}


def prepare(doc, spec, files, build_dir, source_dir):
    """The folder the commands run in (and whether to remove it after)."""
    if spec.get("cwd") == "source":
        return source_dir, False
    tmp = tempfile.mkdtemp(prefix="pipe-docs-")
    for name in spec.get("links", []):
        os.symlink(os.path.join(source_dir, name), os.path.join(tmp, name))
    wanted = dict(spec.get("fixtures", {}))
    for name, other in spec.get("files_from", {}).items():
        _, theirs = parse(os.path.join(source_dir, other))
        if name not in theirs:
            raise SystemExit("%s defines no file %s (wanted by %s)" % (other, name, doc))
        wanted[name] = theirs[name]
    wanted.update(files)
    for name, text in wanted.items():
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
            f.write(text)
    if spec.get("setup"):
        spec["setup"](tmp, build_dir)
    return tmp, True


def check(doc, build_dir, source_dir):
    """Runs DOC's commands; returns the exit status."""
    path = os.path.join(source_dir, doc)
    commands, files = parse(path)
    if not commands:
        print("not ok: no commands found in %s" % path)
        print("0 passed, 1 failed, 0 skipped")
        return 1
    spec = DOCS.get(doc, {})
    cwd, remove = prepare(doc, spec, files, build_dir, source_dir)
    passed = failed = skipped = 0
    try:
        for n, command, shown in commands:
            k = passed + failed + skipped + 1
            skip = NOT_CHECKED.search(command)
            if skip:
                skipped += 1
                print("ok %d - %s:%d: %s # SKIP %s" % (k, doc, n, command, skip.group(1)))
                continue
            rc, out = run(command, build_dir, cwd)
            actual = trim(normalize(l) for l in out)
            expected = trim(normalize(l) for l in shown)
            elided = expected and all(l == "..." for l in expected)
            if matches(expected, actual) and not (elided and rc != 0):
                passed += 1
                print("ok %d - %s:%d: %s" % (k, doc, n, command))
                continue
            failed += 1
            print("not ok %d - %s:%d: %s" % (k, doc, n, command))
            if elided and rc != 0:
                print("  --- exit status %s; an output shown only as ... must come with 0" % rc)
            print("  --- the document shows")
            for l in expected:
                print("  | " + l)
            print("  --- the command printed")
            for l in actual:
                print("  | " + l)
    finally:
        if remove:
            shutil.rmtree(cwd, ignore_errors=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


def main(argv):
    if len(argv) != 4:
        print("usage: test_docs_run.py BUILD_DIR SOURCE_DIR DOC", file=sys.stderr)
        return 2
    build_dir = os.path.abspath(argv[1])
    source_dir = os.path.abspath(argv[2])
    doc = os.path.relpath(os.path.join(source_dir, argv[3]), source_dir)
    return check(doc, build_dir, source_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
