#!/usr/bin/env python3
"""How pipec's time and memory grow with the pipeline: stages x micro-batches
from 8 x 64 to 256 x 4096, 1F1B, on a 257-layer MLP (the model of
bench/deep.pipe, twice as deep, so that 256 stages each get a layer).

    python3 bench/pipec_growth.py BUILD/pipec [--repeat N] [--largest S]

For each size: pipec parses, partitions, generates, lowers and verifies the
training and evaluation programs, simulates them and writes plan.bin
(fsync included), N times (default 3); the row gives the median wall time,
the largest peak resident memory of the pipec process (getrusage of the
child), the instructions of the training and evaluation programs (the
TRAIN and EVAL sections' instructions, 8 bytes each since plan version 4,
counted from plan.bin's sections)
and the time per million instructions, which stays flat when the cost is
linear. --largest S stops after S stages.
"""
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

SIZES = [(8, 64), (16, 256), (32, 512), (64, 1024), (128, 2048), (256, 4096)]
MODEL = """# written by bench/pipec_growth.py
model deep {
    input  x: float32[256]
    target y: int32[]
    repeat 128 {
        linear(256)
        relu
    }
    linear(10)
    loss cross_entropy
}
pipeline { stages = 8; micro_batches = 64; micro_batch_size = 8; schedule = 1f1b }
train { data = synthetic(samples = 1024); eval_data = synthetic(samples = 1024) }
"""


def program_instructions(path):
    """The instructions of TRAIN (6) and EVAL (7): each section's bytes,
    less its header (stages, chunks, micro-batches, placement, eval, a
    buffer count per stage and chunk, an instruction count per stage),
    over 8."""
    with open(path, "rb") as f:
        data = f.read()
    count = struct.unpack_from("<I", data, 16)[0]
    total = 0
    for k in range(count):
        sid, _, at, size = struct.unpack_from("<IIQQ", data, 40 + 24 * k)
        if sid in (6, 7):
            stages, chunks = struct.unpack_from("<II", data, at)
            total += (size - 20 - 4 * stages * chunks - 4 * stages) // 8
    return total


def run_once(pipec, src, stages, mbs, out):
    t = time.perf_counter()
    proc = subprocess.Popen([pipec, src, "-D", f"stages={stages}", "-D", f"micro_batches={mbs}", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"pipec failed for {stages} x {mbs}: {err}")
    return elapsed, usage.ru_maxrss * 1024  # Linux: kilobytes


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    pipec = os.path.abspath(args[0])
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 3
    largest = int(args[args.index("--largest") + 1]) if "--largest" in args else SIZES[-1][0]
    tmp = tempfile.mkdtemp(prefix="pipe-growth-")
    src = os.path.join(tmp, "deep257.pipe")
    with open(src, "w") as f:
        f.write(MODEL)
    out = os.path.join(tmp, "plan.bin")
    print(f"# pipec {pipec}: 1F1B on a 257-layer MLP; median of {repeat} runs; load average "
          f"{os.getloadavg()[0]:.2f} at start")
    print(f"{'stages':>6} {'micro-batches':>13} {'instructions':>13} {'plan.bin MiB':>13} {'time s':>8} "
          f"{'peak MiB':>9} {'s per M instr':>14}")
    for stages, mbs in SIZES:
        if stages > largest:
            break
        times, peak = [], 0
        for _ in range(repeat):
            t, rss = run_once(pipec, src, stages, mbs, out)
            times.append(t)
            peak = max(peak, rss)
        n = program_instructions(out)
        med = statistics.median(times)
        print(f"{stages:6} {mbs:13} {n:13,} {os.path.getsize(out) / 2**20:13.1f} {med:8.3f} {peak / 2**20:9.1f} "
              f"{med / (n / 1e6):14.3f}", flush=True)
        os.remove(out)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
