#!/usr/bin/env python3
"""How fast pipert trains, against PyTorch on the same models, and how
close 2 pipeline stages on 2 ranks come to the speed-up the bubble allows,
all measured in the same run.

    python3 bench/train_speed.py BUILD_DIR [--quick] [--steps N] [--rounds R]

BUILD_DIR holds pipec and pipert (a Release build gives the figures of
docs/benchmarks.md; the script says which build type it found).

1. pipert (1 rank, 1 stage) against PyTorch (1 thread) on
   - an MLP: float32[1024] -> 8 x (linear(1024), relu) -> linear(10),
     cross_entropy, 8 micro-batches of 64 (global batch 512), 1F1B, Adam,
     synthetic data. PyTorch runs the same model over the same 512 samples
     as 8 micro-batches of 64 with gradient accumulation, then one Adam step.
   - the GPT of examples/gpt_tiny.pipe (vocab 256, 128 tokens, dim 128, 6
     pre-LayerNorm blocks, 4 heads, MLP 512, tied head, padding mask), 8
     micro-batches of 4 sequences, AdamW, on a file of random uint16 token
     ids written here. PyTorch runs a GPT-2-style model of the same shapes
     (pre-LayerNorm, causal, tanh-GELU, tied head). Skipped, with a line
     saying so, while pipert's CPU runtime lacks transformer_block.
   - the CNN of examples/fashion_mnist.pipe (the demo's model), 4
     micro-batches of 32 synthetic 28x28 images, Adam.
   Prints samples/s (tokens/s for the GPT) for both and the ratio.
2. pipert with 2 stages on 2 ranks against 1 stage on 1 rank, on the same
   models: the measured speed-up, the ideal one the bubble allows
   (2M/(M+1) for M micro-batches: 1F1B on 2 equal stages, as the issue
   sets the bar), the measured one as a percentage of it, and the plan's
   own prediction beside (2 x (1 - bubble), the bubble from `pipec -D
   stages=2 --stats --json`, which also counts unequal stages);
   and against what a user would run on the same two cores instead:
   PyTorch on 2 threads, the best of three settings (torch.set_num_threads
   2 with OpenBLAS at 2 or 1, or torch at 1 with OpenBLAS at 2), same
   model and global batch. The pipert side of that comparison runs the
   2-stage plan `pipec --tune --world 2 -D stages=2` ranks first, its
   costs (layers and link) measured by `pipert --profile` on the 2-stage
   1F1B plan on 2 ranks (4 steps) in the same run; the script prints the
   tuner's choice, its predicted step and the measured one.

Step times: the median of the steps after the first 3 (warm-up), pipert's
from its --metrics step_ms, PyTorch's from time.perf_counter around a whole
step (zero_grad, the 8 forward/backward passes, the optimizer step); 30
steps a run (--quick: 8). The runs are repeated in R interleaved rounds
(default 3, --quick 1) and each figure is the lowest of its rounds'
medians, which keeps a burst of other work on the machine from landing on
one side only. pipert runs under mpirun --bind-to none, unpinned like
PyTorch. Both run single-threaded: pipert calls openblas_set_num_threads(1)
itself, and every pipert and PyTorch run gets OPENBLAS_NUM_THREADS=1 and
OMP_NUM_THREADS=1 besides (PyTorch also torch.set_num_threads(1)). Open
MPI moves activations with its default single-copy mechanism (CMA) unless
the environment sets OMPI_MCA_btl_vader_single_copy_mechanism (printed;
"none", which containers that refuse process_vm_readv need, makes a
transfer wait on the sender's MPI calls, most felt by the chunked
schedules' many transfers). Both multiply matrices with the same OpenBLAS
(Debian's python3-torch uses the system libblas.so.3, which is
OpenBLAS's); any OPENBLAS_CORETYPE in the environment applies to both,
and the script prints it.

3. The share of the FMA peak each side reaches: a step's FLOPs as pipec
   counts them (3 x the forward, less the first layer's input gradient)
   over its time, against one core's fp32 FMA peak measured at the start
   by the build's cpu_packed --peak (two cores' for the 2-rank figures),
   and the share a 2x bar over PyTorch on 2 cores asks of pipert's 2 ranks.

The PyTorch measurements run in a child process (this file, with
--torch-worker): under this interpreter when it has torch, else under
/usr/bin/python3, Debian's, where python3-torch (1.13, CPU) is installed.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARMUP = 3                       # steps left out of every median
GPT_SKIP_LINE = "GPT: skipped (transformer_block not in the CPU runtime yet)"

MLP_PIPE = """\
model mlp8x1024 {
    input  x: float32[1024]
    target y: int32[]
    repeat 8 {
        linear(1024)
        relu
    }
    linear(10)
    loss cross_entropy
}
pipeline { stages = 1; micro_batches = 8; micro_batch_size = 64; schedule = 1f1b }
train { optimizer = adam(lr = 0.001); steps = 30; seed = 1; data = synthetic(samples = 4096) }
"""
MLP = dict(micro_batches=8, micro_batch_size=64)
# examples/fashion_mnist.pipe's CNN (the demo), on synthetic images of its shape.
CNN = dict(micro_batches=4, micro_batch_size=32)
CNN_DEFINES = ["-D", "data=synthetic(samples = 4096)", "-D", "eval_every=0", "-D", "partition=flops"]

# examples/gpt_tiny.pipe's model, on one stage (or two) under 1F1B.
GPT = dict(vocab=256, seq=128, dim=128, blocks=6, heads=4, mlp=512, micro_batches=8, micro_batch_size=4)
GPT_DEFINES = ["-D", "stages=1", "-D", "schedule=1f1b", "-D", "partition=uniform"]


# ---- the PyTorch side (runs under a Python with torch) ----------------------------

def torch_worker(model, steps, threads=1):
    import time
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(1)
    # bench/bf16_speed.py: the forward under bf16 autocast, the loss in fp32
    autocast = os.environ.get("TRAIN_SPEED_AUTOCAST") == "1"

    def fwd(*args):
        if not autocast:
            return net(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(*args)
        return out.float()

    if model == "mlp":
        mb, n = MLP["micro_batches"], MLP["micro_batch_size"]
        layers = []
        for _ in range(8):
            layers += [nn.Linear(1024, 1024), nn.ReLU()]
        net = nn.Sequential(*layers, nn.Linear(1024, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        batches = [(torch.randn(mb, n, 1024), torch.randint(0, 10, (mb, n))) for _ in range(4)]

        def step(s):
            x, y = batches[s % len(batches)]
            opt.zero_grad(set_to_none=True)
            for i in range(mb):    # mean over the global batch, as pipert's cross_entropy
                (F.cross_entropy(fwd(x[i]), y[i], reduction="sum") / (mb * n)).backward()
            opt.step()
        per_step = mb * n
    elif model == "cnn":
        mb, n = CNN["micro_batches"], CNN["micro_batch_size"]
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(16 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        batches = [(torch.randn(mb, n, 1, 28, 28), torch.randint(0, 10, (mb, n))) for _ in range(4)]

        def step(s):
            x, y = batches[s % len(batches)]
            opt.zero_grad(set_to_none=True)
            for i in range(mb):
                (F.cross_entropy(fwd(x[i]), y[i], reduction="sum") / (mb * n)).backward()
            opt.step()
        per_step = mb * n
    else:
        g = GPT
        D, T, H = g["dim"], g["seq"], g["heads"]

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1 = nn.LayerNorm(D, eps=1e-5)
                self.qkv = nn.Linear(D, 3 * D)
                self.proj = nn.Linear(D, D)
                self.ln2 = nn.LayerNorm(D, eps=1e-5)
                self.fc = nn.Linear(D, g["mlp"])
                self.out = nn.Linear(g["mlp"], D)

            def forward(self, x, keep):          # keep: bool [B, 1, T, T], causal and padding
                B = x.shape[0]
                q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
                q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
                att = (q @ k.transpose(-2, -1)) * (1.0 / (D // H) ** 0.5)
                att = att.masked_fill(~keep, float("-inf")).softmax(dim=-1)
                x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))
                return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

        class GPTModel(nn.Module):
            def __init__(self):
                super().__init__()
                self.wte = nn.Embedding(g["vocab"], D)
                self.wpe = nn.Embedding(T, D)
                self.blocks = nn.ModuleList(Block() for _ in range(g["blocks"]))
                self.ln = nn.LayerNorm(D)
                self.head = nn.Linear(D, g["vocab"], bias=False)
                self.head.weight = self.wte.weight        # tied, as tie = wte

            def forward(self, tok, mask):
                x = self.wte(tok) + self.wpe(torch.arange(T))
                causal = torch.ones(T, T, dtype=torch.bool).tril()
                keep = causal[None, None] & (mask[:, None, None, :] != 0)
                for b in self.blocks:
                    x = b(x, keep)
                return self.head(self.ln(x))

        net = GPTModel()
        opt = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        mb, n = g["micro_batches"], g["micro_batch_size"]
        seqs = [torch.randint(0, g["vocab"], (mb, n, T + 1)) for _ in range(4)]
        ones = torch.ones(n, T)

        def step(s):
            tok = seqs[s % len(seqs)]
            opt.zero_grad(set_to_none=True)
            for i in range(mb):
                logits = fwd(tok[i, :, :T], ones)
                loss = F.cross_entropy(logits.reshape(-1, g["vocab"]), tok[i, :, 1:].reshape(-1),
                                       reduction="sum") / (mb * n * T)
                loss.backward()
            opt.step()
        per_step = mb * n * T

    times = []
    for s in range(steps):
        t = time.perf_counter()
        step(s)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"step_ms": times, "per_step": per_step, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


def torch_python():
    """An interpreter with torch: this one if it has it, else Debian's."""
    import importlib.util
    return sys.executable if importlib.util.find_spec("torch") else "/usr/bin/python3"


def run_torch(model, steps, env, threads=1, blas=None):
    blas = threads if blas is None else blas
    env = dict(env, OPENBLAS_NUM_THREADS=str(blas), OMP_NUM_THREADS=str(threads))
    r = subprocess.run([torch_python(), os.path.abspath(__file__), "--torch-worker", model, str(steps), str(threads)],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"PyTorch ({model}) failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["median_ms"] = statistics.median(res["step_ms"][WARMUP:])
    res["setting"] = f"torch.set_num_threads({threads}), OPENBLAS_NUM_THREADS={blas}, OMP_NUM_THREADS={threads}"
    return res


# PyTorch on two cores, as a user might set it up: both thread pools at 2
# (torch's OpenMP for its own loops, OpenBLAS's for the products), or only
# one of them; the best of these is the figure.
TORCH2_VARIANTS = ((2, 2), (2, 1), (1, 2))


# ---- the pipert side ----------------------------------------------------------------

def pipec(build, src, out, defines=()):
    subprocess.run([os.path.join(build, "pipec"), src, *defines, "-o", out], check=True)


def stats(build, src, defines):
    """pipec --stats --json of the model with these defines, parsed."""
    r = subprocess.run([os.path.join(build, "pipec"), src, *defines, "--stats", "--json"],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def bubble(build, src, defines):
    return stats(build, src, defines)["bubble"]


def step_gflop(build, src, defines):
    """A training step's GFLOPs as pipec counts them (--stats --json: each
    layer's forward FLOPs per sample, a block's attention over the whole
    T x T): the forward, the input gradient and the weight gradient at a
    forward's FLOPs each, less the first layer's input gradient where pipert
    skips it (a plain layer whose input is data; a block's backward makes it
    anyway), times the samples of a step."""
    d = stats(build, src, defines)
    per_sample = 3 * d["total_flops"]
    first = d["layers"][0]
    if first["type"] not in ("transformer_block", "llama_block", "residual"):
        per_sample -= first["flops"]
    p = d["pipeline"]
    return per_sample * p["micro_batches"] * p["micro_batch_size"] / 1e9


def fma_peak(build, env):
    """One core's fp32 FMA peak in GFLOP/s, measured by the build's
    cpu_packed --peak, or None (no AVX-512F, or no cpu_packed built)."""
    exe = os.path.join(build, "cpu_packed")
    if not os.path.exists(exe):
        return None
    r = subprocess.run([exe, "--peak"], capture_output=True, text=True, env=env)
    m = re.search(r"peak[^:]*: ([0-9.]+) GFLOP/s", r.stdout)
    return float(m.group(1)) if r.returncode == 0 and m else None


def peak_share(name, gflop, peak, pt1_ms, th1, pt2_ms, th2):
    """How much of the cores' FMA peak each side's step reaches, and what a
    2x bar over PyTorch on 2 cores asks of pipert's 2 ranks."""
    if peak is None:
        print(f"{name}: {gflop:.1f} GFLOP a step; share of the FMA peak not measured (cpu_packed --peak needs "
              "AVX-512F and the build's bench targets)")
        return
    def share(ms, cores):
        return 100 * gflop / (ms / 1e3) / (peak * cores)
    print(f"{name}: {gflop:.1f} GFLOP a step (pipec's count: 3 x the forward, less the first layer's input "
          f"gradient); of the FMA peak ({peak:.1f} GFLOP/s a core, cpu_packed --peak): pipert 1 rank "
          f"{share(pt1_ms, 1):.0f}%, PyTorch 1 thread {share(th1['median_ms'], 1):.0f}%; of two cores': pipert "
          f"2 ranks {share(pt2_ms, 2):.0f}%, PyTorch 2 threads {share(th2['median_ms'], 2):.0f}%; 2x PyTorch's "
          f"2-core speed would take {2 * share(th2['median_ms'], 2):.0f}% of two cores' peak")


def run_pipert(build, plan, ranks, steps, env, tmp, extra=()):
    """Median step_ms after warm-up, or (None, message) when pipert fails."""
    metrics = os.path.join(tmp, f"metrics-{os.path.basename(plan)}-{ranks}.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    r = subprocess.run(["mpirun", "-np", str(ranks), "--bind-to", "none", os.path.join(build, "pipert"), plan,
                        "--steps", str(steps), "--log-every", "1", "--metrics", metrics, *extra],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stdout + r.stderr
    rows = [json.loads(line) for line in open(metrics) if line.strip()]
    ms = [row["step_ms"] for row in rows if row.get("step", 0) > WARMUP]  # not the memory records
    if not ms:
        sys.exit(f"pipert {plan}: no steps after the first {WARMUP} in {metrics}")
    return statistics.median(ms), None


def tuned_plan(build, src, defines, plan2, data, env, tmp, name):
    """The plan pipec --tune ranks first among 2-stage plans for 2 ranks,
    predicted from costs measured on the 2-stage 1F1B plan on 2 ranks
    (pipert --profile: the layers' times and the link's), written to
    tmp/NAME2t.bin; returns the tuner's row."""
    prof = os.path.join(tmp, name + ".profile.json")
    r = subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", os.path.join(build, "pipert"), plan2,
                        "--steps", "4", "--profile", prof, *data], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pipert --profile ({name}) failed:\n{(r.stdout + r.stderr)[-3000:]}")
    tuned = ("stages=", "schedule=", "partition=", "micro_batches=", "micro_batch_size=", "activation_checkpoint=")
    keep = []
    for flag, d in zip(defines[::2], defines[1::2]):
        if not d.replace(" ", "").startswith(tuned):
            keep += [flag, d]
    costs = ["-D", f'costs=profile("{prof}")']
    r = subprocess.run([os.path.join(build, "pipec"), src, *keep, *costs, "-D", "stages=2", "--tune", "--world", "2",
                        "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pipec --tune ({name}) failed:\n{r.stderr[-3000:]}")
    top = json.loads(r.stdout)["top"][0]
    pipec(build, src, os.path.join(tmp, name + "2t.bin"),
          keep + costs + ["-D", "stages=2", "-D", f"schedule={top['schedule']}", "-D", f"partition={top['partition']}",
                          "-D", f"micro_batches={top['micro_batches']}",
                          "-D", f"micro_batch_size={top['micro_batch_size']}",
                          "-D", f"activation_checkpoint={top['activation_checkpoint']}"])
    return top


def build_type(build):
    try:
        for line in open(os.path.join(build, "CMakeCache.txt")):
            if line.startswith("CMAKE_BUILD_TYPE:"):
                return line.split("=", 1)[1].strip() or "(none)"
    except OSError:
        pass
    return "unknown"


def sets_openblas_threads():
    for d in ("runtime", "kernels"):
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith(".c"):
                    with open(os.path.join(base, f), errors="replace") as fh:
                        if "openblas_set_num_threads(1)" in fh.read():
                            return os.path.relpath(os.path.join(base, f), ROOT)
    return None


def loadavg():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "?"


def compare(name, unit, per_step, pt_ms, th):
    pt_rate = per_step / (pt_ms / 1e3)
    th_rate = per_step / (th["median_ms"] / 1e3)
    print(f"{name}: pipert 1 rank, 1 stage: {pt_rate:,.0f} {unit}/s ({pt_ms:.1f} ms/step)")
    print(f"{name}: PyTorch {th['torch']}, {th['threads']} thread: {th_rate:,.0f} {unit}/s "
          f"({th['median_ms']:.1f} ms/step)")
    print(f"{name}: ratio pipert / PyTorch: {pt_rate / th_rate:.2f}x")
    return pt_rate / th_rate


def two_ranks(name, unit, per_step, pt2_ms, th2, top, f1b_ms):
    pt_rate = per_step / (pt2_ms / 1e3)
    th_rate = per_step / (th2["median_ms"] / 1e3)
    f1b_rate = per_step / (f1b_ms / 1e3)
    print(f"{name}: pipec --tune --world 2 -D stages=2 (costs measured on 2 stages, 1F1B) ranks first: "
          f"{top['schedule']}, partition {top['partition']}, {top['micro_batches']} x {top['micro_batch_size']}, "
          f"activation_checkpoint {top['activation_checkpoint']}: predicted {1e3 * top['step_time']:.1f} ms/step, "
          f"measured {pt2_ms:.1f} (1F1B's: {f1b_ms:.1f})")
    print(f"{name}: pipert 2 ranks, the tuner's plan: {pt_rate:,.0f} {unit}/s (1F1B: {f1b_rate:,.0f}) against PyTorch on "
          f"2 cores at its best ({th2['setting']}): {th_rate:,.0f} {unit}/s ({th2['median_ms']:.1f} ms/step): "
          f"{pt_rate / th_rate:.2f}x (1F1B: {f1b_rate / th_rate:.2f}x)")
    return pt_rate / th_rate


def scaling(name, t1, t2, b, m):
    """The measured speed-up as a share of the issue's ideal, 2M/(M+S-1)
    for S = 2 stages and M micro-batches under 1F1B (equal stages); the
    plan's own prediction, 2 x (1 - bubble), also counts how unequal its
    two stages are, and is printed beside it."""
    measured, ideal, planned = t1 / t2, 2 * m / (m + 1), 2 * (1 - b)
    print(f"{name}: 2 stages on 2 ranks: {t2:.1f} ms/step against 1 stage on 1 rank: {t1:.1f} ms/step")
    print(f"{name}: speed-up {measured:.2f}x, ideal {ideal:.2f}x (2M/(M+1), M = {m}), {100 * measured / ideal:.0f}% "
          f"of ideal; the plan's prediction {planned:.2f}x (2 x (1 - bubble {b:.3f}), unequal stages counted), "
          f"{100 * measured / planned:.0f}% of it")
    return measured / ideal


def main():
    if "--torch-worker" in sys.argv:
        i = sys.argv.index("--torch-worker")
        torch_worker(sys.argv[i + 1], int(sys.argv[i + 2]), int(sys.argv[i + 3]) if len(sys.argv) > i + 3 else 1)
        return
    args, i = [], 1
    while i < len(sys.argv):
        if sys.argv[i] in ("--steps", "--rounds"):
            i += 2
            continue
        if not sys.argv[i].startswith("--"):
            args.append(sys.argv[i])
        i += 1
    if not args:
        sys.exit(__doc__)
    build = os.path.abspath(args[0])
    quick = "--quick" in sys.argv
    steps, rounds = (8, 1) if quick else (30, 3)
    if "--steps" in sys.argv:
        steps = int(sys.argv[sys.argv.index("--steps") + 1])
    if "--rounds" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
    if steps <= WARMUP or rounds < 1:
        sys.exit(f"--steps must exceed the {WARMUP} warm-up steps, --rounds be at least 1")

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    where = sets_openblas_threads()
    print(f"build: {build} ({build_type(build)}); {os.cpu_count()} CPUs; load average {loadavg()}")
    if build_type(build) == "Debug":
        print("warning: a Debug build: the kernels are not optimised; use a Release build for figures")
    print(f"timing: {steps} steps per run, the median of the last {steps - WARMUP}; {rounds} round(s), "
          f"the runs interleaved, each figure the best round's median; mpirun --bind-to none")
    print("threads: " + (f"pipert calls openblas_set_num_threads(1) ({where}); " if where else
                         "pipert does not set OpenBLAS's threads itself; ")
          + "OPENBLAS_NUM_THREADS=1 and OMP_NUM_THREADS=1 are set for every pipert and PyTorch run")
    copy = os.environ.get("OMPI_MCA_btl_vader_single_copy_mechanism")
    if not copy:
        copy_text = "Open MPI's default single-copy mechanism (CMA)"
    else:
        copy_text = f"btl_vader_single_copy_mechanism={copy} from the environment"
        if copy == "none":
            copy_text += (" (no single copy: a large message moves in fragments that the sender pushes from inside "
                          "MPI calls; a container's setting, slower than Open MPI's default)")
    print("Open MPI between the ranks: " + copy_text)
    inherited = sorted(f"{k}={v}" for k, v in os.environ.items()
                       if k.startswith("OPENBLAS_") and k != "OPENBLAS_NUM_THREADS")
    print("OpenBLAS (the same library under pipert and PyTorch): "
          + (", ".join(inherited) + " from the environment, for both" if inherited else
             "kernels chosen by its own CPU detection"))

    peak = fma_peak(build, env)  # before anything else runs
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        mlp = os.path.join(tmp, "mlp.pipe")
        with open(mlp, "w") as f:
            f.write(MLP_PIPE)
        gpt = os.path.join(ROOT, "examples", "gpt_tiny.pipe")
        tokens = os.path.join(tmp, "tokens.u16")
        with open(tokens, "wb") as f:   # random ids < 256, little-endian uint16
            f.write(bytes(v for x in os.urandom(1 << 20) for v in (x, 0)))
        gdef2 = GPT_DEFINES[:1] + ["stages=2"] + GPT_DEFINES[2:]
        cnn = os.path.join(ROOT, "examples", "fashion_mnist.pipe")
        plans = {"mlp1": (mlp, []), "mlp2": (mlp, ["-D", "stages=2"]),
                 "gpt1": (gpt, GPT_DEFINES), "gpt2": (gpt, gdef2),
                 "cnn1": (cnn, CNN_DEFINES + ["-D", "stages=1"]), "cnn2": (cnn, CNN_DEFINES + ["-D", "stages=2"])}
        for name, (src, defines) in plans.items():
            pipec(build, src, os.path.join(tmp, name + ".bin"), defines)
        data = {"mlp": [], "gpt": ["--data", tokens], "cnn": []}
        # the 2-rank comparison with PyTorch runs the tuner's best 2-stage plan
        tops = {}
        for model in ("mlp", "gpt", "cnn"):
            src, defines = plans[model + "1"]
            tops[model] = tuned_plan(build, src, defines, os.path.join(tmp, model + "2.bin"), data[model], env, tmp,
                                     model)

        best, torch_info, torch2, gpt_ok = {}, {}, {}, True
        for _ in range(rounds):
            for model in ("mlp", "gpt", "cnn"):
                if model == "gpt" and not gpt_ok:
                    continue
                for ranks, name in ((1, model + "1"), (2, model + "2"), (2, model + "2t")):
                    t, err = run_pipert(build, os.path.join(tmp, name + ".bin"), ranks, steps, env, tmp,
                                        data[model])
                    if t is None:
                        if model == "gpt" and "transformer_block" in err and "not supported by the CPU runtime" in err:
                            gpt_ok = False
                            break
                        sys.exit(f"pipert ({model}, {ranks} rank(s)) failed:\n{err[-3000:]}")
                    best[name] = min(t, best.get(name, t))
                    if ranks == 1:
                        th = run_torch(model, steps, env)
                        if model not in torch_info or th["median_ms"] < torch_info[model]["median_ms"]:
                            torch_info[model] = th
                    elif name.endswith("2"):
                        # what a user would run on both cores instead: PyTorch with 2
                        # intra-op threads (OpenBLAS and OpenMP at 2 too)
                        for threads, blas in TORCH2_VARIANTS:
                            th = run_torch(model, steps, env, threads=threads, blas=blas)
                            if model not in torch2 or th["median_ms"] < torch2[model]["median_ms"]:
                                torch2[model] = th

        per_step = MLP["micro_batches"] * MLP["micro_batch_size"]
        print(f"MLP: 1024 -> 8 x (linear(1024), relu) -> linear(10), {MLP['micro_batches']} micro-batches "
              f"of {MLP['micro_batch_size']}, 1F1B, Adam, synthetic data")
        ratio = compare("MLP", "samples", per_step, best["mlp1"], torch_info["mlp"])
        verdicts.append(f"MLP 1 rank at least 1.2x PyTorch: {'met' if ratio >= 1.2 else 'NOT met'} ({ratio:.2f}x)")
        frac = scaling("MLP", best["mlp1"], best["mlp2"], bubble(build, mlp, ["-D", "stages=2"]),
                       MLP["micro_batches"])
        verdicts.append(f"MLP 2 stages at least 90% of the ideal speed-up: {'met' if frac >= 0.9 else 'NOT met'} "
                        f"({100 * frac:.1f}%)")
        r2 = two_ranks("MLP", "samples", per_step, best["mlp2t"], torch2["mlp"], tops["mlp"], best["mlp2"])
        peak_share("MLP", step_gflop(build, mlp, []), peak, best["mlp1"], torch_info["mlp"], best["mlp2t"],
                   torch2["mlp"])
        verdicts.append(f"MLP 2 ranks at least 2x PyTorch on 2 threads: {'met' if r2 >= 2 else 'NOT met'} ({r2:.2f}x)")
        c = CNN
        print(f"CNN: examples/fashion_mnist.pipe's model (2 conv, 2 maxpool, 2 linear), {c['micro_batches']} "
              f"micro-batches of {c['micro_batch_size']} synthetic 28x28 images, 1F1B, Adam")
        cper = c["micro_batches"] * c["micro_batch_size"]
        rc = compare("CNN", "samples", cper, best["cnn1"], torch_info["cnn"])
        verdicts.append(f"CNN 1 rank at least 1.2x PyTorch: {'met' if rc >= 1.2 else 'NOT met'} ({rc:.2f}x)")
        scaling("CNN", best["cnn1"], best["cnn2"], bubble(build, cnn, CNN_DEFINES + ["-D", "stages=2"]),
                c["micro_batches"])
        two_ranks("CNN", "samples", cper, best["cnn2t"], torch2["cnn"], tops["cnn"], best["cnn2"])
        peak_share("CNN", step_gflop(build, cnn, CNN_DEFINES + ["-D", "stages=1"]), peak, best["cnn1"],
                   torch_info["cnn"], best["cnn2t"], torch2["cnn"])
        if not gpt_ok:
            print(GPT_SKIP_LINE)
        else:
            g = GPT
            print(f"GPT: examples/gpt_tiny.pipe (vocab {g['vocab']}, {g['seq']} tokens, dim {g['dim']}, "
                  f"{g['blocks']} blocks, {g['heads']} heads, MLP {g['mlp']}, tied head), "
                  f"{g['micro_batches']} micro-batches of {g['micro_batch_size']} sequences, 1F1B, AdamW")
            rg = compare("GPT", "tokens", torch_info["gpt"]["per_step"], best["gpt1"], torch_info["gpt"])
            verdicts.append(f"GPT 1 rank at least 1.2x PyTorch: {'met' if rg >= 1.2 else 'NOT met'} ({rg:.2f}x)")
            scaling("GPT", best["gpt1"], best["gpt2"], bubble(build, gpt, gdef2), g["micro_batches"])
            r2 = two_ranks("GPT", "tokens", torch_info["gpt"]["per_step"], best["gpt2t"], torch2["gpt"], tops["gpt"],
                          best["gpt2"])
            verdicts.append(f"GPT 2 ranks at least 2x PyTorch on 2 threads: {'met' if r2 >= 2 else 'NOT met'} "
                            f"({r2:.2f}x)")
            peak_share("GPT", step_gflop(build, gpt, GPT_DEFINES), peak, best["gpt1"], torch_info["gpt"],
                       best["gpt2t"], torch2["gpt"])
    print(f"load average at the end: {loadavg()}")
    print("bars: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
