"""lrcore.torch.Adam inside a real torch training loop, against torch.optim.Adam(fused=True).

lrcore runs its kernels on its own small pthread pool and torch runs forward and backward on
its OpenMP threads, so the two pools share the cores within every iteration. This measures
whether that costs anything: a full training iteration

    optimizer.zero_grad(set_to_none=True); loss = loss_fn(model(x), y); loss.backward();
    optimizer.step()

on random synthetic data (fixed seed) of two models:

    mlp          an MLP 1024-2048-2048-2048-2048-10 (ReLU), 14.7 M params, batch 64
    transformer  torch.nn.TransformerEncoder, 4 layers, d_model 256, 4 heads, feed-forward
                 1024, no dropout, mean-pooled into a linear classifier; 3.2 M params,
                 batch 4 of 64 tokens

each trained once with lrcore.torch.Adam and once with torch.optim.Adam(fused=True), with the
same hyperparameters (lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay), from the same
initial weights on the same batches. For each thread count n, torch.set_num_threads(n) and
lrcore.set_num_threads(n) are both set.

Before timing, each model is trained a few steps with both optimizers from the same start on
the same gradients and the parameters are compared: the updates must agree to float32 rounding
(so the two loops do the same work), else the script stops. Then, after warm-up iterations
(not timed), the optimizers take turns in rounds of about --round-seconds each, alternating
which goes first (AB BA AB ..., so a slow drift of the machine's speed favours neither),
--rounds times each. Each iteration is timed whole and its optimizer.step() alone.

Printed: a markdown table per run, one row per (model, threads):
- the median ms per iteration of each optimizer over all its timed iterations;
- lrcore / torch: the median over rounds of the per-round ratio (lrcore's median iteration in
  the round over torch's in its paired round), with its 95 % confidence interval (distribution-
  free, from the sign test's order statistics) and the min-max of the per-round ratios;
- the optimizer step's median ms and its share of the median iteration, for each, and the
  ratio of the step medians;
- a verdict: "lrcore slower" / "lrcore faster" when the 95 % interval of the ratio lies
  wholly above / below 1, else "same within noise" ("too few rounds" under 6 rounds, where no
  95 % interval exists).
plus the load average (`uptime`) at the start and at the end. --contention runs the timing while
another process (not pinned to any core) keeps one core busy.

--schedstat (Linux, 2 threads and more) adds where the CPU time went, per iteration, from
/proc/self/task/<tid>/schedstat: the time lrcore's pool workers and torch's OpenMP threads spent
on a CPU during the step and during zero_grad + forward + backward, and how long the main
thread waited for a CPU in each. A pool whose idle threads keep polling shows up as its
threads' CPU time in the other's phase.

--control is an A/A run: the "lrcore" column trains its own copy of the model with a second
torch.optim.Adam(fused=True), so its ratio shows what the method reads as a difference where
there is none.

--kernel-split times, inside each step, the compiled update it calls (lrcore's checks of the
arrays and its kernels; torch's _fused_adam_ op) and reports it beside the rest of the step,
each optimizer's Python work: where a difference of the steps comes from.

    python benchmarks/torch_training.py --threads 1 2
    python benchmarks/torch_training.py --threads 1 2 --contention
    python benchmarks/torch_training.py --threads 2 --schedstat
    python benchmarks/torch_training.py --threads 2 --kernel-split
    python benchmarks/torch_training.py --models transformer --threads 2 --control
    python benchmarks/torch_training.py --quick          # tiny models, a few seconds

--flush-denormal sets flush-to-zero first; the table's last column is the share of the
lrcore-trained model's gradient values that are subnormal at the end.

--own-pool runs lrcore's steps on its own thread pool; by default, with lrcore.torch imported,
they run on torch's OpenMP threads (src/pool.h).

Measured on a 2-core VM (AMD EPYC, AVX2; load average 1.3 at the start, 1.8 at the end),
lrcore 0.1.0 installed from its wheel beside torch 2.13.0+cpu (libgomp, OMP_WAIT_POLICY
unset), --rounds 30 --kernel-split:

| model | params | threads | lrcore ms/it | torch fused ms/it | lrcore / torch (95 % CI) | per-round min-max | lrcore step ms (share) | torch step ms (share) | step lrcore / torch | verdict | subnormal grads |
|---|---|---|---|---|---|---|---|---|---|---|---|
| mlp | 14.7 M | 1 | 122.66 | 120.72 | 1.001 (0.985-1.026) | 0.846-1.336 | 16.44 (13 %) | 16.92 (14 %) | 0.971 | same within noise | 0.11 % |
| mlp | 14.7 M | 2 | 83.49 | 80.64 | 1.009 (0.979-1.051) | 0.836-1.344 | 10.80 (13 %) | 11.41 (14 %) | 0.947 | same within noise | 0.00 % |
| transformer | 3.2 M | 1 | 97.06 | 96.94 | 0.994 (0.965-1.004) | 0.748-1.370 | 4.44 (5 %) | 4.59 (5 %) | 0.967 | same within noise | 0.00 % |
| transformer | 3.2 M | 2 | 68.42 | 68.58 | 1.003 (0.961-1.033) | 0.804-1.244 | 3.73 (5 %) | 3.88 (6 %) | 0.963 | same within noise | 0.00 % |

| model | threads | optimizer | step ms | compiled update ms | rest of the step ms |
|---|---|---|---|---|---|
| mlp | 1 | lrcore | 16.44 | 15.68 | 0.75 |
| mlp | 1 | torch fused | 16.92 | 16.21 | 0.69 |
| mlp | 2 | lrcore | 10.80 | 10.11 | 0.73 |
| mlp | 2 | torch fused | 11.41 | 10.70 | 0.68 |
| transformer | 1 | lrcore | 4.44 | 3.21 | 1.25 |
| transformer | 1 | torch fused | 4.59 | 3.56 | 1.00 |
| transformer | 2 | lrcore | 3.73 | 2.41 | 1.34 |
| transformer | 2 | torch fused | 3.88 | 2.80 | 1.07 |

With --own-pool, right after: the same within noise but the transformer at 2 threads,
1.015 (1.001-1.030), lrcore slower: its update took 3.45 ms against torch's 2.63, because
libgomp's threads keep polling for milliseconds after backward and so take one of the two
cores during lrcore's step (--schedstat: torch's threads on a CPU for 4.0 ms of a 4.35 ms
step, lrcore's main thread waiting 2.7 ms for one). The rest of the step, lrcore.torch's
Python work (checking that the 200 kept tensors are the ones its views were made of), is
0.25-0.3 ms longer than torch's, whose fused op checks its tensors in C++. With one core
kept busy (--contention), the Transformer's update took 4.64 ms on torch's threads, 3.63 ms
on lrcore's pool (an OpenMP team's end barrier waits for a descheduled thread), torch's
fused op 6.1-6.5 ms, and torch's 2-thread iterations collapse (68 to 248-273 ms).
--control shows the method's resolution: 0.990 (0.975-1.007) and 1.016 (0.956-1.046), on
the machine before this one (an Intel Xeon with AVX-512).

tests/test_torch_training_bench.py runs --quick; benchmarks/test_bench_training.py times the
same iteration under pytest-benchmark.
"""
import argparse
import contextlib
import copy
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import lrcore
import lrcore.optimizers
import lrcore.torch
from lrcore import bench

OPTIMIZERS = ("lrcore", "torch fused")
HYPERPARAMETERS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
CLASSES = 10

# model name -> its sizes; "quick" for a run of seconds
SIZES = {
    "full": {
        "mlp": dict(in_features=1024, width=2048, hidden_layers=4, batch=64),
        "transformer": dict(d_model=256, heads=4, feedforward=1024, layers=4, tokens=64,
                            batch=4),
    },
    "quick": {
        "mlp": dict(in_features=128, width=256, hidden_layers=2, batch=16),
        "transformer": dict(d_model=64, heads=4, feedforward=128, layers=2, tokens=16,
                            batch=4),
    },
}
BATCHES = 4          # distinct synthetic batches, used in turn

# Agreement of the two optimizers: both train copies of a model from the same start for
# CHECK_STEPS steps on the same gradients (the grads of the lrcore copy's backward are given to
# both), so the params differ only by the two optimizers' arithmetic. (Each copy's own backward
# would not do: a gradient that is mathematically zero, as that of the attention's key bias, is
# rounding noise, which Adam scales up to a full-size step of random sign.) Both compute Adam in
# float32 in different operation orders (lrcore rounds its per-call scalars from float64), and
# each step rounds p - update to float32, so an element may differ by
# CHECK_RTOL * max |update of its tensor| + CHECK_STEPS float32 ulps of the param. Measured on
# both models at 1 and 2 threads: no difference beyond the ulps (at most 1 ulp of a param near
# 1.0 per step); an lr 0.1 % off, eps 1e-6 instead of 1e-8, other betas or a weight decay
# exceed the bound 60-fold and more.
CHECK_STEPS = 3
CHECK_RTOL = 1e-5
FLOAT32_EPS = 2.0 ** -23


class MLP(torch.nn.Sequential):
    def __init__(self, in_features, width, hidden_layers, batch):
        layers = [torch.nn.Linear(in_features, width), torch.nn.ReLU()]
        for _ in range(hidden_layers - 1):
            layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
        super().__init__(*layers, torch.nn.Linear(width, CLASSES))


class Transformer(torch.nn.Module):
    def __init__(self, d_model, heads, feedforward, layers, tokens, batch):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0,
                                                 batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d_model, CLASSES)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


def make_model(name, sizes, seed):
    """The model `name` with seed's initial weights, and BATCHES synthetic (inputs, labels)."""
    torch.manual_seed(seed)
    model = (MLP if name == "mlp" else Transformer)(**sizes)
    generator = torch.Generator().manual_seed(seed + 1)
    shape = ((sizes["batch"], sizes["in_features"]) if name == "mlp"
             else (sizes["batch"], sizes["tokens"], sizes["d_model"]))
    batches = [(torch.randn(shape, generator=generator),
                torch.randint(0, CLASSES, (sizes["batch"],), generator=generator))
               for _ in range(BATCHES)]
    return model, batches


def make_optimizer(name, params, **overrides):
    hyper = dict(HYPERPARAMETERS, **overrides)
    if name == "lrcore":
        return lrcore.torch.Adam(params, **hyper)
    return torch.optim.Adam(params, fused=True, **hyper)


# --kernel-split: the compiled update each optimizer's step calls, timed inside the step.
# lrcore's is the state's _update (its C checks of the arrays and its kernels: StepCore.run);
# torch's fused Adam's is the torch._fused_adam_ op (its checks and kernel, in C++). The rest
# of the step is each optimizer's Python work around it (and, for torch, _foreach_add_ on the
# step tensors).
COMPILED_UPDATES = {"lrcore": (lrcore.optimizers.Optimizer, "_update"),
                    "torch fused": (torch, "_fused_adam_")}


@contextlib.contextmanager
def timing_calls(owner, name, sink):
    """Within the block, every call of owner.<name> appends its duration (s) to `sink`."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)
    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def iteration(model, optimizer, batch, clocks=None):
    """One training iteration; returns (seconds of the whole, seconds of optimizer.step(),
    usage): usage is None, or with `clocks` (ThreadClocks) their readings before zero_grad,
    before optimizer.step() and after it."""
    x, y = batch
    before = clocks.read() if clocks else None
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    forward_end = time.perf_counter()
    between = clocks.read() if clocks else None         # not timed
    step_start = time.perf_counter()
    optimizer.step()
    end = time.perf_counter()
    usage = (before, between, clocks.read()) if clocks else None
    return (forward_end - start) + (end - step_start), end - step_start, usage


class ThreadClocks:
    """Time on a CPU and time waiting for one (on a run queue) of groups of this process's
    threads, from Linux's /proc/self/task/<tid>/schedstat, in ns: what torch's OpenMP
    threads and lrcore's pool workers take from each other within an iteration."""

    def __init__(self, groups):
        self.groups = groups            # group name -> thread ids

    def read(self):
        totals = {}
        for name, tids in self.groups.items():
            run = wait = 0
            for tid in tids:
                try:
                    with open(f"/proc/self/task/{tid}/schedstat") as f:
                        fields = f.read().split()
                except OSError:         # the thread has ended
                    continue
                run, wait = run + int(fields[0]), wait + int(fields[1])
            totals[name] = (run, wait)
        return totals

    @classmethod
    def discover(cls, threads):
        """Start torch's OpenMP threads and lrcore's pool workers for `threads` and tell them
        apart by which call started them; None where there is no schedstat, or when either
        pool was already running (then its threads cannot be told apart)."""
        import threading

        import numpy as np
        if threads < 2 or not os.path.exists(f"/proc/self/task/{threading.get_native_id()}"
                                             f"/schedstat"):
            return None

        def tasks():
            return {int(t) for t in os.listdir("/proc/self/task")}
        before = tasks()
        torch.set_num_threads(threads)
        a = torch.ones(1024, 1024)
        (a @ a).add_(1.0)               # a BLAS call and an element-wise op: both pools of torch
        torch_tids = tasks() - before
        lrcore.set_num_threads(threads)
        x = np.zeros(threads * 4 * 32768, np.float32)      # enough chunks for every worker
        lrcore.step(x, np.ones_like(x), lrcore.SGD(lr=1e-3))
        lrcore_tids = tasks() - before - torch_tids     # none on torch's runtime
        if not torch_tids or not (lrcore_tids or lrcore._backend._kernels.openmp_shared()):
            return None
        return cls({"main": {threading.get_native_id()}, "torch threads": torch_tids,
                    "lrcore workers": lrcore_tids})


def check_same_updates(model, batches, steps=CHECK_STEPS, rtol=CHECK_RTOL, lrcore_overrides=None):
    """Train copies of `model` with both optimizers for `steps` iterations on the same
    gradients and raise AssertionError unless every param agrees within the float32 tolerance
    (see CHECK_RTOL). Returns the largest difference found as a fraction of its tolerance."""
    start = [p.detach().clone() for p in model.parameters()]
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    ours_opt = make_optimizer("lrcore", ours.parameters(), **(lrcore_overrides or {}))
    theirs_opt = make_optimizer("torch fused", theirs.parameters())
    for k in range(steps):
        x, y = batches[k % len(batches)]
        ours_opt.zero_grad(set_to_none=True)
        theirs_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(ours(x), y).backward()
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.grad = None if p.grad is None else p.grad.clone()
        ours_opt.step()
        theirs_opt.step()
    worst = 0.0
    for (name, _), p, q, p0 in zip(model.named_parameters(), ours.parameters(),
                                   theirs.parameters(), start):
        expected = q.detach() - p0
        bound = (rtol * expected.abs().max()
                 + steps * FLOAT32_EPS * torch.maximum(q.detach().abs(), p0.abs()))
        difference = (p.detach() - q.detach()).abs()
        exceeds = difference > bound
        if exceeds.any():
            i = int(exceeds.flatten().nonzero()[0])
            raise AssertionError(
                f"lrcore.torch.Adam and torch.optim.Adam(fused=True) disagree on {name} after "
                f"{steps} steps on the same gradients: element {i} is {p.flatten()[i].item()!r} "
                f"against {q.flatten()[i].item()!r}, more than the float32 tolerance "
                f"{bound.flatten()[i].item():.3g} apart")
        worst = max(worst, torch.where(bound > 0, difference / bound,
                                       torch.zeros_like(bound)).max().item())
    return worst


def sign_test_interval(values, confidence=0.95):
    """A distribution-free confidence interval of the median of `values`: the order
    statistics (k-th smallest, k-th largest) with the largest k such that
    P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2; None when n is too small for any
    (fewer than 6 values at 95 %)."""
    values = sorted(values)
    n = len(values)
    alpha = (1.0 - confidence) / 2
    k, below = 0, 0.0              # below = P(Binomial(n, 1/2) <= k)
    while k < n:
        below += math.comb(n, k) / 2.0 ** n
        if below > alpha:
            break
        k += 1
    if k == 0:
        return None
    return values[k - 1], values[n - k]


def measure(model_name, sizes, threads, rounds, round_seconds, warmup, seed, progress,
            clocks=None, split=False, control=False):
    """Time both optimizers on one model at `threads`; returns the row's figures (with
    `clocks`, also where the threads' CPU time went, under "threads"; with `split`, the
    median ms of the compiled update in a step and of the rest of the step, under "split").
    With `control`, the "lrcore" column is a second torch fused Adam: an A/A run, whose ratio
    shows what the method reads as a difference between two identical optimizers."""
    bench.set_threads(threads)
    model, batches = make_model(model_name, sizes, seed)
    disagreement = check_same_updates(model, batches)
    runs = {}
    used = {name: "torch fused" if control else name for name in OPTIMIZERS}
    for name in OPTIMIZERS:
        trained = copy.deepcopy(model)
        runs[name] = (trained, make_optimizer(used[name], trained.parameters()))
    # warm-up (state allocation, caches, the pools' threads) and the round length
    per_iteration = {}
    for name, (trained, optimizer) in runs.items():
        times = [iteration(trained, optimizer, batches[k % BATCHES])[0]
                 for k in range(warmup)]
        per_iteration[name] = statistics.median(times)
    count = max(3, round(round_seconds / max(per_iteration.values())))
    samples = {name: {"iteration": [], "step": [], "rounds": [], "usage": [], "update": []}
               for name in OPTIMIZERS}
    for r in range(rounds):
        order = OPTIMIZERS if r % 2 == 0 else OPTIMIZERS[::-1]
        for name in order:
            trained, optimizer = runs[name]
            calls = []
            with timing_calls(*COMPILED_UPDATES[used[name]], calls) if split \
                    else contextlib.nullcontext():
                times = []
                for k in range(count):
                    first = len(calls)
                    times.append(iteration(trained, optimizer, batches[k % BATCHES], clocks))
                    samples[name]["update"].append(sum(calls[first:]))
            samples[name]["iteration"] += [t for t, _, _ in times]
            samples[name]["step"] += [s for _, s, _ in times]
            samples[name]["usage"] += [u for _, _, u in times]
            samples[name]["rounds"].append(statistics.median(t for t, _, _ in times))
        progress(f"  {model_name}, {threads} thread(s): round {r + 1}/{rounds}")
    ratios = [a / b for a, b in zip(samples["lrcore"]["rounds"],
                                    samples["torch fused"]["rounds"])]
    interval = sign_test_interval(ratios)
    row = dict(model=model_name, params=sum(p.numel() for p in model.parameters()),
               threads=threads, iterations_per_round=count, disagreement=disagreement,
               ratio=statistics.median(ratios), interval=interval,
               ratio_min=min(ratios), ratio_max=max(ratios))
    for name in OPTIMIZERS:
        it = statistics.median(samples[name]["iteration"])
        step = statistics.median(samples[name]["step"])
        row[name] = dict(iteration=it, step=step, share=step / it)
        if clocks:
            row[name]["threads"] = thread_usage(samples[name]["usage"])
        if split:
            updates = samples[name]["update"]
            row[name]["split"] = (statistics.median(updates), statistics.median(
                s - u for s, u in zip(samples[name]["step"], updates)))
    row["step_ratio"] = row["lrcore"]["step"] / row["torch fused"]["step"]
    row["subnormal"] = subnormal_share(runs["lrcore"][0])
    row["verdict"] = ("too few rounds" if interval is None else
                      "lrcore slower" if interval[0] > 1.0 else
                      "lrcore faster" if interval[1] < 1.0 else "same within noise")
    return row


def subnormal_share(model):
    """The share of the model's gradient values that are subnormal (nonzero and below the
    dtype's smallest normal number): unless flush-to-zero is set, every vector operation that
    reads or produces one takes a microcode assist, in either optimizer's step."""
    count = total = 0
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad
            count += int(((g != 0) & (g.abs() < torch.finfo(g.dtype).tiny)).sum())
            total += g.numel()
    return count / max(total, 1)


# what the threads table shows: (column, phase, thread group, 0 = on a CPU / 1 = waiting)
USAGE_COLUMNS = (
    ("step: lrcore workers on CPU", "step", "lrcore workers", 0),
    ("step: torch threads on CPU", "step", "torch threads", 0),
    ("step: main thread waiting", "step", "main", 1),
    ("step: lrcore workers waiting", "step", "lrcore workers", 1),
    ("fwd+bwd: lrcore workers on CPU", "forward", "lrcore workers", 0),
    ("fwd+bwd: torch threads on CPU", "forward", "torch threads", 0),
    ("fwd+bwd: main thread waiting", "forward", "main", 1),
)


def thread_usage(usages):
    """Median ms per iteration of each USAGE_COLUMNS figure."""
    figures = {}
    for column, phase, group, field in USAGE_COLUMNS:
        start, end = (0, 1) if phase == "forward" else (1, 2)
        figures[column] = statistics.median(
            (u[end][group][field] - u[start][group][field]) / 1e6 for u in usages)
    return figures


def threads_table(rows):
    lines = ["| model | threads | optimizer | " + " | ".join(c for c, *_ in USAGE_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(USAGE_COLUMNS)]
    for row in rows:
        for name in OPTIMIZERS:
            figures = row[name].get("threads")
            if figures is None:
                continue
            lines.append(f"| {row['model']} | {row['threads']} | {name} | "
                         + " | ".join(f"{figures[c]:.2f}" for c, *_ in USAGE_COLUMNS) + " |")
    return "\n".join(lines)


def split_table(rows):
    lines = ["| model | threads | optimizer | step ms | compiled update ms | rest of the step ms |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for name in OPTIMIZERS:
            update, rest = row[name]["split"]
            lines.append(f"| {row['model']} | {row['threads']} | {name} "
                         f"| {1e3 * row[name]['step']:.2f} | {1e3 * update:.2f} "
                         f"| {1e3 * rest:.2f} |")
    return "\n".join(lines)


def interval_cell(interval):
    return "(too few rounds)" if interval is None else f"({interval[0]:.3f}-{interval[1]:.3f})"


def format_params(n):
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"


def table(rows):
    lines = [
        "| model | params | threads | lrcore ms/it | torch fused ms/it | lrcore / torch "
        "(95 % CI) | per-round min-max | lrcore step ms (share) | torch step ms (share) | "
        "step lrcore / torch | verdict | subnormal grads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours, theirs = row["lrcore"], row["torch fused"]
        lines.append(
            f"| {row['model']} | {format_params(row['params'])} | {row['threads']} "
            f"| {1e3 * ours['iteration']:.2f} | {1e3 * theirs['iteration']:.2f} "
            f"| {row['ratio']:.3f} {interval_cell(row['interval'])} "
            f"| {row['ratio_min']:.3f}-{row['ratio_max']:.3f} "
            f"| {1e3 * ours['step']:.2f} ({100 * ours['share']:.0f} %) "
            f"| {1e3 * theirs['step']:.2f} ({100 * theirs['share']:.0f} %) "
            f"| {row['step_ratio']:.3f} | {row['verdict']} | {100 * row['subnormal']:.2f} % |")
    return "\n".join(lines)


def load_average():
    """`uptime`'s line, or the load averages where there is no uptime command."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def environment():
    info = lrcore.build_info()
    kernels = lrcore._backend._kernels
    where = ("torch's OpenMP threads" if kernels is not None and kernels.openmp_shared()
             else "its own pool")
    return (f"lrcore {info['version']} ({info['backend']}, threading {info['threading']}, "
            f"steps on {where}, ISA {info['isa_dispatched']}) from "
            f"{os.path.dirname(lrcore.__file__)}; "
            f"torch {torch.__version__}; Python {platform.python_version()}; "
            f"{os.cpu_count()} logical CPUs; OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and short rounds: a run of seconds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts for torch and lrcore alike (default: 1 2)")
    parser.add_argument("--models", nargs="+", choices=("mlp", "transformer"),
                        default=["mlp", "transformer"])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per optimizer (default 15; 6 with --quick)")
    parser.add_argument("--round-seconds", type=float, default=None,
                        help="length of a round, about (default 0.6; 0.03 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed iterations per optimizer first (default 5; 2 with --quick)")
    parser.add_argument("--contention", action="store_true",
                        help="keep one core busy with another process while timing")
    parser.add_argument("--schedstat", action="store_true",
                        help="also report, per iteration, the CPU time torch's OpenMP threads "
                             "and lrcore's pool workers take in each other's phase, and how "
                             "long the main thread waits for a CPU (Linux; threads >= 2)")
    parser.add_argument("--kernel-split", action="store_true",
                        help="also report, per step, the median time of the compiled update "
                             "(lrcore's checks and kernels; torch's _fused_adam_ op) and of "
                             "the rest of the step (each optimizer's Python work)")
    parser.add_argument("--control", action="store_true",
                        help="an A/A run: the lrcore column is a second torch fused Adam on its "
                             "own copy of the model, to show the method's resolution")
    parser.add_argument("--own-pool", action="store_true",
                        help="run lrcore's steps on its own thread pool, not on torch's OpenMP "
                             "threads (what lrcore.torch sets up when torch runs on OpenMP)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="set flush-to-zero (torch.set_flush_denormal(True)) before either "
                             "pool starts, so that every thread computes without subnormals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.threads):
        parser.error("--threads must be positive")
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (6 if quick else 15)
    args.round_seconds = (args.round_seconds if args.round_seconds is not None
                          else (0.03 if quick else 0.6))
    args.warmup = args.warmup if args.warmup is not None else (2 if quick else 5)
    if args.rounds < 1 or args.warmup < 1 or args.round_seconds <= 0:
        parser.error("--rounds and --warmup must be >= 1, --round-seconds > 0")
    return args


def main(argv=None, out=print, progress=None):
    args = parse_args(argv)
    progress = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    sizes = SIZES["quick" if args.quick else "full"]
    if args.own_pool and lrcore._backend._kernels is not None:
        lrcore._backend._kernels.share_openmp_runtime(False)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        out("--flush-denormal: this CPU has no flush-to-zero mode; not set")
    out(environment())
    out(f"start: {load_average()}")
    busy = bench.busy_process(seconds=3600) if args.contention else contextlib.nullcontext()
    # before anything starts either pool, so that their threads can be told apart
    clocks = ThreadClocks.discover(max(args.threads)) if args.schedstat else None
    if args.schedstat and clocks is None:
        out("--schedstat: no /proc/<pid>/task/<tid>/schedstat, or fewer than 2 threads; "
            "not reported")
    rows = []
    with busy:
        for model_name in args.models:
            for threads in args.threads:
                rows.append(measure(model_name, sizes[model_name], threads, args.rounds,
                                    args.round_seconds, args.warmup, args.seed, progress,
                                    clocks if clocks and threads > 1 else None,
                                    args.kernel_split, args.control))
    out(f"end: {load_average()}")
    out("")
    competing = ("with one core kept busy by another process" if args.contention
                 else "no competing process")
    if args.flush_denormal:
        competing += "; flush-to-zero set"
    if args.control:
        competing += "; control run: the lrcore column is torch's fused Adam too"
    out(f"{competing}; {args.rounds} rounds per optimizer of "
        f"{', '.join(str(r['iterations_per_round']) for r in rows)} iterations (by row); "
        f"after {CHECK_STEPS} steps on the same gradients the params agree, the largest "
        f"difference {max(r['disagreement'] for r in rows):.2f} of the float32 tolerance")
    out("")
    out(table(rows))
    if clocks:
        out("")
        out("ms per iteration (medians): CPU time of each pool's threads in the step and in "
            "zero_grad + forward + backward, and the main thread's wait for a CPU")
        out("")
        out(threads_table(rows))
    if args.kernel_split:
        out("")
        out("ms per step (medians): the compiled update the step calls, and the rest of the "
            "step (median of step - update per iteration)")
        out("")
        out(split_table(rows))
    return rows


if __name__ == "__main__":
    main()
