#!/usr/bin/env python3
"""How long pipec takes to compile, verify and write a big plan, against
DeepSpeed enumerating the same schedule, measured in the same run.

    python3 bench/pipec_speed.py BUILD/pipec [--repeat N]

The workload: bench/deep.pipe, 64 stages, 1024 micro-batches, 1F1B (about
400,000 training instructions). pipec parses the model, partitions it,
generates, lowers and verifies the training and evaluation programs,
simulates them and writes plan.bin (fsync included). The reference is
DeepSpeed's own TrainSchedule (deepspeed/runtime/pipe/schedule.py, fetched
from PyPI into a temporary folder at run time, never stored here) listing
every stage's instructions for the same 64 x 1024 pipeline, without
checking anything. The two alternate, one run of each per round, N
rounds, so that the machine's drift over the run (this project's 2-core
VM moves by 10-20% over minutes) lands on both sides alike. Prints both
times (median of N), the ratio of the medians and the spread of the
rounds' own ratios.
"""
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES, MICRO_BATCHES = 64, 1024


def run_pipec(pipec, out):
    t = time.perf_counter()
    subprocess.run([pipec, os.path.join(HERE, "deep.pipe"), "-o", out], check=True)
    return time.perf_counter() - t


def describe_plan(pipec, out):
    """The training program's instruction count and the file's size."""
    listing = subprocess.run([pipec, out, "--list"], check=True, capture_output=True, text=True).stdout
    train = listing.split("\neval stage 0")[0]
    count = sum(1 for line in train.splitlines() if line[:8].strip().isdigit())
    return count, os.path.getsize(out)


def load_deepspeed_schedule(tmp):
    """DeepSpeed's schedule.py, loaded alone: it imports only call_to_str
    from deepspeed.runtime.utils, which a stub supplies."""
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "deepspeed==0.14.4", "-d", tmp], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    import tarfile
    with tarfile.open(os.path.join(tmp, "deepspeed-0.14.4.tar.gz")) as tf:
        member = tf.getmember("deepspeed-0.14.4/deepspeed/runtime/pipe/schedule.py")
        src = tf.extractfile(member).read().decode()
    pkg = types.ModuleType("dsstub")
    pkg.__path__ = []
    sys.modules["dsstub"] = pkg
    utils = types.ModuleType("dsstub.utils")
    utils.call_to_str = lambda base, *a, **k: base
    sys.modules["dsstub.utils"] = utils
    spec = importlib.util.spec_from_loader("dsstub.pipe.schedule", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "dsstub.pipe"
    sys.modules["dsstub.pipe"] = types.ModuleType("dsstub.pipe")
    sys.modules["dsstub.pipe"].__path__ = []
    exec(compile(src.replace("from ..utils import", "from dsstub.utils import"), "schedule.py", "exec"), mod.__dict__)
    return mod


def run_deepspeed(mod):
    """One enumeration of every stage's TrainSchedule: (seconds, instructions)."""
    t = time.perf_counter()
    count = 0
    for s in range(STAGES):
        for step in mod.TrainSchedule(micro_batches=MICRO_BATCHES, stages=STAGES, stage_id=s).steps():
            count += len(step)
    return time.perf_counter() - t, count


def main():
    pipec = sys.argv[1]
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 5
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "deep.bin")
        mod = load_deepspeed_schedule(tmp)
        pts, dts, dn = [], [], 0
        for _ in range(repeat):
            pts.append(run_pipec(pipec, out))
            if mod is not None:
                t, dn = run_deepspeed(mod)
                dts.append(t)
        n, size = describe_plan(pipec, out)
        pt = statistics.median(pts)
        print(f"pipec: {STAGES} stages x {MICRO_BATCHES} micro-batches, 1F1B: {n} training instructions "
              f"(+ evaluation), plan.bin {size / 2**20:.1f} MiB: {pt * 1e3:.1f} ms (median of {repeat}; "
              f"parse, generate, lower, verify, simulate, write)")
        if mod is None:
            print("reference: DeepSpeed could not be fetched from PyPI; no ratio")
            return
        dt = statistics.median(dts)
        print(f"DeepSpeed 0.14.4 TrainSchedule: {dn} instructions listed: {dt * 1e3:.1f} ms (median of {repeat}; "
              f"enumeration only)")
        rounds = sorted(d / p for p, d in zip(pts, dts))
        print(f"ratio: pipec is {dt / pt:.1f}x faster than DeepSpeed's enumeration alone (the {repeat} rounds, "
              f"one run of each, alternating: {rounds[0]:.1f}x to {rounds[-1]:.1f}x, median "
              f"{statistics.median(rounds):.1f}x)")


if __name__ == "__main__":
    main()
