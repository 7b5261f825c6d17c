"""Adam's step where gradients meet float32's subnormal range: lrcore.torch.Adam against
torch.optim.Adam(fused=True) on the same memory.

As a network trains, some gradient values get tiny (benchmarks/torch_training.py counts the
subnormal ones of its MLP). Without flush-to-zero, every vector multiply, FMA or square root
that reads or produces a number below float32's smallest normal (1.18e-38) takes a microcode
assist on x86 CPUs; additions do not. Four kinds of gradient, N(0, s²) in float32:

    normal      s = 1e-3
    sprinkled   s = 1e-3, but one value in a thousand (at random places) drawn as "tiny"
    tiny        s = 1e-20   normal gradients whose squares (1 − β2)·g·g are below 1.18e-38
    subnormal   s = 1e-40   subnormal gradients

Each optimizer steps its own copy of the same params (lr 1e-3, default betas): one step on
normal gradients, so that the moments hold normal values as a trained model's do, then the
timed steps on the kind's gradients, the two optimizers alternating step by step. Printed:
the median ms per step of each and the median of the per-pair ratios, for each kind and
thread count, and the load average before and after.

torch's fused step takes as long on "tiny" gradients as on normal ones, as if its second
moment β2·v + (1 − β2)·g·g were one fused multiply-add whose product is never rounded, and
much longer on subnormal ones, which its multiplies read. lrcore
rounds every operation to float32 as its numpy reference does; at the AVX-512 level its Adam
runs an underflow guard (src/kernels_impl.h): blocks of 128 elements holding a gradient below
about 3.4e-18 form those products as exact float64 products rounded once to float32, which
gives the same bits without the assists, and a gradient factor of 1 is not multiplied. On
"sprinkled" gradients, as in a trained network, about one block in eight takes that form. With
--flush-denormal (torch.set_flush_denormal(True), which lrcore's threads follow) neither
takes assists.

    python benchmarks/subnormal_step.py
    python benchmarks/subnormal_step.py --threads 1 2 --flush-denormal
"""
import argparse
import os
import statistics
import time

import torch

import lrcore
import lrcore.torch

SCALES = {"normal": 1e-3, "sprinkled": 1e-3, "tiny": 1e-20, "subnormal": 1e-40}
SPRINKLED_SHARE = 1e-3      # the share of "sprinkled" values drawn with the "tiny" scale
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def gradient(kind, n):
    """float32 N(0, s²) values, drawn in float64 and rounded once (before any flush-to-zero
    is set, which would flush the rounding of a subnormal)."""
    generator = torch.Generator().manual_seed(1)
    g = torch.randn(n, dtype=torch.float64, generator=generator) * SCALES[kind]
    if kind == "sprinkled":
        places = torch.rand(n, generator=generator) < SPRINKLED_SHARE
        g[places] *= SCALES["tiny"] / SCALES["normal"]
    return g.float()


def optimizer(name, params, warm_grad, grad):
    """`name`'s Adam over a copy of `params` after one step on `warm_grad` (so its moments
    hold normal values, as a trained model's do), with `grad` as the gradient from then on."""
    p = torch.nn.Parameter(params.clone())
    p.grad = warm_grad.clone()
    if name == "lrcore":
        opt = lrcore.torch.Adam([p], lr=1e-3)
    else:
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    opt.step()
    p.grad.copy_(grad)
    return opt


def measure(warm_grad, grad, steps):
    """(lrcore median ms, torch median ms, median per-pair ratio) over `steps` pairs."""
    params = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(0))
    opts = {name: optimizer(name, params, warm_grad, grad) for name in ("lrcore", "torch")}
    times = {name: [] for name in opts}
    for k in range(steps):
        for name in (("lrcore", "torch") if k % 2 == 0 else ("torch", "lrcore")):
            start = time.perf_counter()
            opts[name].step()
            times[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["lrcore"], times["torch"])]
    return (statistics.median(times["lrcore"]) * 1e3, statistics.median(times["torch"]) * 1e3,
            statistics.median(ratios))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=8 << 20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--kinds", nargs="+", choices=list(SCALES), default=list(SCALES))
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) before stepping")
    args = parser.parse_args(argv)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    grads = {kind: gradient(kind, args.elements) for kind in SCALES}
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("--flush-denormal: this CPU has no flush-to-zero mode; not set")
    print(f"\n{args.elements} float32 elements, {args.steps} steps each"
          + (", flush-to-zero" if args.flush_denormal else ""))
    print("\n| gradients | threads | lrcore ms | torch fused ms | lrcore / torch |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        lrcore.set_num_threads(threads)
        for kind in args.kinds:
            mine, theirs, ratio = measure(grads["normal"], grads[kind], args.steps)
            print(f"| {kind} | {threads} | {mine:.2f} | {theirs:.2f} | {ratio:.3f} |", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
