#!/usr/bin/env python3
"""How close pipec's predicted step comes to the measured one, when the
costs are measured (costs = profile(...), docs/profiling.md).

    python3 bench/predict_accuracy.py BUILD_DIR [--steps N] [--quick]

For each model: one profile on 1 stage and 1 rank (`pipert --profile`,
the usual way to profile), then for each plan of the table pipec's
prediction from that profile (`--stats --json`'s step_time) beside the
median step_ms pipert measures running that plan on 2 ranks (steps after
the first 3 left out). Prints predicted, measured and the error.

The models: examples/gpt_tiny.pipe on 2 stages under 1f1b, zb-h1 and
interleaved (2 chunks), on a file of random token ids written here; the
Fashion-MNIST CNN of examples/fashion_mnist.pipe on 2 stages under 1f1b
(Debian's dataset-fashion-mnist when installed, else synthetic data of
the same shape: the times do not depend on the values).

Then the tuner: `pipec examples/gpt_tiny.pipe --tune --world 2` with the
GPT's profile; its top 5 plans are each compiled and measured on 2 ranks,
and the tuner's choice (its first row) is compared with the fastest of
them measured (the contract: within 5%).

pipert runs under mpirun --bind-to none, one BLAS thread per rank (pipert
sets it); the machine should be otherwise idle (the load average is
printed). Open MPI's shared-memory single-copy mechanism is left as the
environment sets it (OMPI_MCA_btl_vader_single_copy_mechanism, printed):
the default (CMA where the kernel allows process_vm_readv) lets a receiver
pull a large message; none makes the sender push it in fragments
(docs/benchmarks.md has both).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARMUP = 3
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1",
           OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def pipec(build, src, defines, out=None, cwd=None):
    cmd = [os.path.join(build, "pipec"), src]
    for d in defines:
        cmd += ["-D", d]
    if out:
        cmd += ["-o", out]
    else:
        cmd += ["--stats", "--json"]
    return run(cmd, cwd)


def pipert(build, plan, ranks, steps, tmp, extra=()):
    metrics = os.path.join(tmp, "metrics.json")
    run(["mpirun", "-np", str(ranks), "--bind-to", "none", os.path.join(build, "pipert"), plan, "--steps", str(steps),
         "--log-every", "1", "--metrics", metrics, *extra], tmp)
    ms = [json.loads(l)["step_ms"] for l in open(metrics) if '"step_ms"' in l]
    return statistics.median(ms[WARMUP:])


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    build = os.path.abspath(args[0])
    steps = 20
    if "--quick" in args:
        steps = 8
    if "--steps" in args:
        steps = int(args[args.index("--steps") + 1])
    tmp = tempfile.mkdtemp(prefix="pipe-predict-")
    os.makedirs(os.path.join(tmp, "data"))
    with open(os.path.join(tmp, "data", "input.u16"), "wb") as f:
        import random
        rnd = random.Random(1)
        f.write(b"".join(bytes((rnd.randrange(256), 0)) for _ in range(300000)))  # uint16, little-endian
    gpt = os.path.join(ROOT, "examples", "gpt_tiny.pipe")
    cnn = os.path.join(ROOT, "examples", "fashion_mnist.pipe")
    cnn_data = [] if os.path.exists(FMNIST) else ["data=synthetic(samples = 8192)",
                                                  "eval_data=synthetic(samples = 1024)"]
    cases = [
        ("gpt_tiny", gpt, [], [("1f1b", ["schedule=1f1b"]), ("zb-h1", ["schedule=zb-h1"]),
                               ("interleaved(chunks = 2)", ["schedule=interleaved(chunks = 2)"])]),
        ("fashion_mnist CNN", cnn, cnn_data, [("1f1b", ["schedule=1f1b"])]),
    ]
    print(f"# predicted step (costs = profile(...), a 1-stage profile) against pipert's measured median step_ms,")
    print(f"# {steps} steps a run, the first {WARMUP} left out; 2 stages on 2 ranks; load average "
          f"{os.getloadavg()[0]:.2f} at start; btl_vader_single_copy_mechanism "
          f"{os.environ.get('OMPI_MCA_btl_vader_single_copy_mechanism', 'default')}")
    print(f"{'model':20} {'schedule':26} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
    rows = []
    for name, src, base, plans in cases:
        one = os.path.join(tmp, "one.bin")
        prof = os.path.join(tmp, f"{name.split()[0]}.profile.json")
        pipec(build, src, base + ["stages=1", "schedule=1f1b", "eval_every=0"], one, tmp)
        pipert(build, one, 1, steps, tmp, ["--profile", prof])
        for label, d in plans:
            defs = base + ["stages=2", "eval_every=0", f'costs=profile("{prof}")'] + d
            pred = json.loads(pipec(build, src, defs, cwd=tmp))["step_time"] * 1e3
            plan = os.path.join(tmp, "two.bin")
            pipec(build, src, defs, plan, tmp)
            meas = pipert(build, plan, 2, steps, tmp)
            err = (pred - meas) / meas
            rows.append(err)
            print(f"{name:20} {label:26} {pred:13.1f} {meas:12.1f} {100 * err:+7.1f}%", flush=True)
    print(f"# largest error {100 * max(abs(e) for e in rows):.1f}%; load average {os.getloadavg()[0]:.2f} at the end")
    # the tuner, measured
    prof = os.path.join(tmp, "gpt_tiny.profile.json")
    tune = json.loads(run([os.path.join(build, "pipec"), gpt, "--tune", "--world", "2", "--json", "-D", "eval_every=0",
                           "-D", f'costs=profile("{prof}")'], tmp))
    print(f"\n# pipec --tune --world 2 with the profile: {tune['tried']} plans tried in {tune['seconds']:.2f} s; "
          f"its top 5 measured on 2 ranks")
    print(f"{'rank':>4} {'plan':58} {'predicted ms':>13} {'measured ms':>12}")
    measured = []
    for i, r in enumerate(tune["top"][:5]):
        sched = r["schedule"]
        defs = ["eval_every=0", f'costs=profile("{prof}")', f"stages={r['stages']}",
                f"data_parallel={r['data_parallel']}", f"micro_batches={r['micro_batches']}",
                f"micro_batch_size={r['micro_batch_size']}", f"schedule={sched}",
                f"activation_checkpoint={r['activation_checkpoint']}", f"partition={r['partition']}"]
        plan = os.path.join(tmp, f"tune{i}.bin")
        pipec(build, gpt, defs, plan, tmp)
        meas = pipert(build, plan, 2, steps, tmp)
        measured.append(meas)
        label = (f"{r['stages']} stage(s) x {r['data_parallel']}, {sched}, {r['micro_batches']}x{r['micro_batch_size']}, "
                 f"ac {r['activation_checkpoint']}, {r['partition']}")
        print(f"{i + 1:4} {label:58} {r['step_time'] * 1e3:13.1f} {meas:12.1f}", flush=True)
    best = min(measured)
    print(f"# the tuner's choice measured {measured[0]:.1f} ms, the fastest of its top 5 {best:.1f} ms: "
          f"{100 * (measured[0] / best - 1):+.1f}%")


if __name__ == "__main__":
    main()
