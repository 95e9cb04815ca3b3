#!/usr/bin/env python3
"""bf16 against fp32 on the CPU, pipert and PyTorch, measured in the same run.

    python3 bench/bf16_speed.py BUILD_DIR [--steps N] [--rounds R]

The models and settings of bench/train_speed.py (the 8 x 1024 MLP, the GPT
of examples/gpt_tiny.pipe, the demo's CNN), one rank and one thread, four
ways each:
  - pipert, precision = fp32 (OpenBLAS's sgemm);
  - pipert, precision = bf16 (pipe's own GEMM on AVX512-BF16: operands
    rounded to bf16, fp32 sums; docs/design-notes.md, "bf16 on the CPU");
  - PyTorch in fp32;
  - PyTorch with the forward under torch.autocast("cpu", dtype=bfloat16)
    (the loss in fp32), what a PyTorch user would turn on.
Prints ms/step of each (the best of R interleaved rounds' medians, as
train_speed.py), then bf16's speed-up over fp32 on each side and pipert bf16
against PyTorch autocast. On a CPU without AVX512-BF16 it says so and stops
(pipert refuses bf16 there).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_speed as ts  # noqa: E402


def main():
    args = [a for i, a in enumerate(sys.argv[1:], 1)
            if not a.startswith("--") and sys.argv[i - 1] not in ("--steps", "--rounds")]
    if not args:
        sys.exit(__doc__)
    build = os.path.abspath(args[0])
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 20
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    if steps <= ts.WARMUP or rounds < 1:
        sys.exit(f"--steps must exceed the {ts.WARMUP} warm-up steps, --rounds be at least 1")
    flags = open("/proc/cpuinfo").read().split()
    if "avx512_bf16" not in flags:
        print("bf16: this CPU has no AVX512-BF16 (avx512_bf16 in /proc/cpuinfo): pipert refuses precision = bf16 "
              "here; nothing to measure")
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    print(f"build: {build} ({ts.build_type(build)}); {os.cpu_count()} CPUs; load average {ts.loadavg()}")
    print(f"timing: {steps} steps a run, the median of the last {steps - ts.WARMUP}; {rounds} round(s), "
          "interleaved, each figure the best round's median; 1 rank, 1 thread (OPENBLAS_NUM_THREADS=1, "
          "OMP_NUM_THREADS=1, torch.set_num_threads(1))")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        mlp = os.path.join(tmp, "mlp.pipe")
        with open(mlp, "w") as f:
            f.write(ts.MLP_PIPE)
        gpt = os.path.join(ts.ROOT, "examples", "gpt_tiny.pipe")
        cnn = os.path.join(ts.ROOT, "examples", "fashion_mnist.pipe")
        tokens = os.path.join(tmp, "tokens.u16")
        with open(tokens, "wb") as f:
            f.write(bytes(v for x in os.urandom(1 << 20) for v in (x, 0)))
        models = {"mlp": (mlp, [], []), "gpt": (gpt, ts.GPT_DEFINES, ["--data", tokens]),
                  "cnn": (cnn, ts.CNN_DEFINES + ["-D", "stages=1"], [])}
        for name, (src, defines, _) in models.items():
            for prec in ("fp32", "bf16"):
                ts.pipec(build, src, os.path.join(tmp, f"{name}-{prec}.bin"), defines + ["-D", f"precision={prec}"])
        best = {}
        for _ in range(rounds):
            for name, (_, _, extra) in models.items():
                for prec in ("fp32", "bf16"):
                    t, err = ts.run_pipert(build, os.path.join(tmp, f"{name}-{prec}.bin"), 1, steps, env, tmp, extra)
                    if t is None:
                        sys.exit(f"pipert ({name}, {prec}) failed:\n{err[-3000:]}")
                    key = (name, "pipert", prec)
                    best[key] = min(t, best.get(key, t))
                for prec, flag in (("fp32", "0"), ("bf16", "1")):
                    th = ts.run_torch(name, steps, dict(env, TRAIN_SPEED_AUTOCAST=flag))
                    key = (name, "torch", prec)
                    best[key] = min(th["median_ms"], best.get(key, th["median_ms"]))
        for name in models:
            p32, p16 = best[(name, "pipert", "fp32")], best[(name, "pipert", "bf16")]
            t32, t16 = best[(name, "torch", "fp32")], best[(name, "torch", "bf16")]
            print(f"{name.upper()}: pipert fp32 {p32:.1f} ms/step, bf16 {p16:.1f} ms/step: bf16 {p32 / p16:.2f}x "
                  f"fp32's speed")
            print(f"{name.upper()}: PyTorch fp32 {t32:.1f} ms/step, autocast bf16 {t16:.1f} ms/step: autocast "
                  f"{t32 / t16:.2f}x fp32's speed")
            print(f"{name.upper()}: pipert bf16 against PyTorch autocast bf16: {t16 / p16:.2f}x; pipert fp32 against "
                  f"PyTorch fp32: {t32 / p32:.2f}x")
    print(f"load average at the end: {ts.loadavg()}")


if __name__ == "__main__":
    main()
