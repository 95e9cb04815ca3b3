#!/usr/bin/env python3
"""Optimizer steps of runtime/rt_optim.c against torch.optim.

    python3 tests/parity/test_optim.py PATH/TO/optim_driver

For each setting below: 1000 random float32 parameters and 10 steps of
random gradients (a fixed seed), run through torch.optim's single-tensor
implementation (foreach=False, as PyTorch 1.13 does by default) and through
optim_driver (rt_optim_step on the same numbers, passed as %.9g text, which
round-trips a float32 exactly). The parameters after every step are
compared: the largest relative error |c - t| / max(|t|, 1e-6) must stay
under 1e-6. rt_optim.c reproduces torch's float operations and roundings
one by one, so on the same CPU kind it is expected to be 0 (bit-identical);
the tolerance leaves room for a libm or kernel that rounds differently.
Settings with grad_clip clip each step's gradient first. torch's
clip_grad_norm_ takes the norm in float32 and rt_sumsq in double, so the
factors may differ in the last bits: each step's factor (printed by the
driver) is compared with torch's clip coefficient, to 1e-6 relative, and
torch then replays the steps with the gradient multiplied by our factor
(as rt_scale does), which must again agree to the bit.

Prints one line per setting and a summary with the largest error per
optimizer; exits 1 on any failure. Needs torch.
"""
import subprocess
import sys

import torch

torch.set_num_threads(1)

N = 1000
STEPS = 10
TOL = 1e-6

# (optimizer, lr, betas, eps, weight_decay, momentum, nesterov, grad_clip)
SETTINGS = [
    ("sgd", 0.1, (0.9, 0.999), 1e-8, 0.0, 0.0, False, 0.0),
    ("sgd", 0.05, (0.9, 0.999), 1e-8, 0.01, 0.0, False, 0.0),
    ("sgd", 0.1, (0.9, 0.999), 1e-8, 0.0, 0.9, False, 0.0),
    ("sgd", 0.01, (0.9, 0.999), 1e-8, 5e-4, 0.9, False, 0.0),
    ("sgd", 0.1, (0.9, 0.999), 1e-8, 0.0, 0.9, True, 0.0),
    ("sgd", 0.03, (0.9, 0.999), 1e-8, 1e-3, 0.5, True, 0.0),
    ("sgd", 0.1, (0.9, 0.999), 1e-8, 0.0, 0.9, False, 1.0),
    ("adam", 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.0, False, 0.0),
    ("adam", 0.01, (0.8, 0.95), 1e-6, 0.0, 0.0, False, 0.0),
    ("adam", 3e-4, (0.9, 0.999), 1e-8, 0.01, 0.0, False, 0.0),
    ("adam", 0.1, (0.5, 0.9), 1e-3, 0.1, 0.0, False, 0.0),
    ("adam", 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.0, False, 0.5),
    ("adamw", 1e-3, (0.9, 0.999), 1e-8, 0.01, 0.0, False, 0.0),
    ("adamw", 3e-4, (0.9, 0.95), 1e-8, 0.1, 0.0, False, 0.0),
    ("adamw", 0.05, (0.7, 0.99), 1e-5, 0.0, 0.0, False, 0.0),
    ("adamw", 0.01, (0.9, 0.999), 1e-8, 0.05, 0.0, False, 1.0),
]


def torch_clip_coef(g, max_norm):
    """clip_grad_norm_'s factor for one gradient, as torch computes it."""
    p = torch.nn.Parameter(torch.zeros_like(g))
    p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_([p], max_norm)
    return min(max_norm / (total.item() + 1e-6), 1.0)


def torch_run(opt, lr, betas, eps, wd, momentum, nesterov, factors, p0, grads):
    p = torch.nn.Parameter(p0.clone())
    if opt == "sgd":
        o = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov, foreach=False)
    elif opt == "adam":
        o = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    else:
        o = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    out = []
    for g in grads:
        p.grad = g.clone()
        if factors:
            p.grad.mul_(factors[len(out)])
        o.step()
        out.append(p.detach().clone())
    return out


def c_run(driver, opt, lr, betas, eps, wd, momentum, nesterov, clip, p0, grads):
    args = [driver, opt, repr(lr), repr(betas[0]), repr(betas[1]), repr(eps), repr(wd), repr(momentum),
            "1" if nesterov else "0", str(len(grads)), repr(clip)]
    lines = [str(len(p0)), " ".join("%.9g" % x for x in p0.tolist())]
    lines += [" ".join("%.9g" % x for x in g.tolist()) for g in grads]
    r = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("optim_driver failed: " + r.stderr)
    rows = r.stdout.strip().split("\n")
    factors = [float(row.split()[1]) for row in rows if row.startswith("clip ")]
    params = [torch.tensor([float(x) for x in row.split()], dtype=torch.float32) for row in rows
              if not row.startswith("clip ")]
    return params, factors


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    driver = sys.argv[1]
    gen = torch.Generator().manual_seed(1234)
    worst = {}
    failed = 0
    for k, (opt, lr, betas, eps, wd, mom, nest, clip) in enumerate(SETTINGS):
        p0 = torch.randn(N, generator=gen)
        # mixed scales, so small and large updates both show up
        grads = [torch.randn(N, generator=gen) * (10.0 ** torch.randint(-3, 2, (N,), generator=gen)) for _ in range(STEPS)]
        got, factors = c_run(driver, opt, lr, betas, eps, wd, mom, nest, clip, p0, grads)
        assert len(got) == STEPS and all(g.shape == (N,) for g in got), "driver output has the wrong shape"
        assert len(factors) == (STEPS if clip > 0 else 0), "driver printed %d clip factors" % len(factors)
        ferr = 0.0
        if clip > 0:
            # the gradient the step clips is the raw one: the driver clips
            # each step's input, never an already clipped gradient
            coefs = [torch_clip_coef(g, clip) for g in grads]
            ferr = max(abs(f - c) / c for f, c in zip(factors, coefs))
            assert any(c < 1.0 for c in coefs), "the clip settings must actually clip"
        want = torch_run(opt, lr, betas, eps, wd, mom, nest, factors, p0, grads)
        err = 0.0
        identical = True
        for w, g in zip(want, got):
            e = ((g.double() - w.double()).abs() / w.double().abs().clamp(min=1e-6)).max().item()
            err = max(err, e)
            identical = identical and torch.equal(w, g)
        name = "%s lr=%g betas=%s eps=%g wd=%g momentum=%g nesterov=%s clip=%g" % (
            opt, lr, betas, eps, wd, mom, nest, clip)
        ok = err <= TOL and ferr <= TOL
        failed += not ok
        worst[opt] = max(worst.get(opt, 0.0), err)
        worst["clip"] = max(worst.get("clip", 0.0), ferr)
        print("%s  %s: parameters max rel err %.3g%s%s" % ("ok  " if ok else "FAIL", name, err,
                                                            " (bit-identical)" if identical else "",
                                                            "; clip factor rel err %.3g" % ferr if clip > 0 else ""))
    for opt in ("sgd", "adam", "adamw"):
        print("max relative error, parameters, %-5s %.3g" % (opt, worst.get(opt, 0.0)))
    print("max relative error, clip factor vs torch's float32 norm: %.3g" % worst.get("clip", 0.0))
    print("%d passed, %d failed" % (len(SETTINGS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
