"""Side-by-side timing of one optimizer step: lrcore vs the numpy reference, torch.optim
(for-loop, foreach, fused) and DeepSpeed's CPU optimizers, on the same float32 arrays in one
process; and lrcore vs the memory-bound floor for each optimizer's bytes per element.

    python -m lrcore bench [--quick] [--only NAME ...]

Each implementation steps its own copy of the arrays; a measurement is the best, over five
repeats, of the mean time per step of a run long enough to time (at least ~20 ms). A figure
whose repeats spread widely (the machine was busy) is marked unreliable, and a difference
smaller than the noise is printed as such, not as a number. torch and DeepSpeed are optional:
missing ones are reported and skipped. benchmarks/ runs the same implementations under
pytest-benchmark.
"""
import contextlib
import os
import subprocess
import sys
import time

import numpy as np

import lrcore
from lrcore import _backend

LR = 1e-3


def resnet50_shapes():
    """The 161 parameter shapes of torchvision's ResNet-50 (25,557,032 values)."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,),
                       (planes, planes, 3, 3), (planes,), (planes,),
                       (planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    return shapes + [(1000, 2048), (1000,)]


# name -> list of array shapes stepped in one call
WORKLOADS = {
    "1 x 1K": [(1024,)],
    "100 x 1K": [(1024,)] * 100,
    "1000 x 256": [(256,)] * 1000,
    "1 x 64K": [(65536,)],
    "1 x 1M": [(2**20,)],
    "1 x 32M": [(2**25,)],
    "ResNet-50 list": resnet50_shapes(),
}


def arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]
    return params, grads


UNRELIABLE = 0.10      # a figure whose median repeat is this much above its best is flagged


class Timing(float):
    """Seconds per step: the best repeat. `spread` is how far the median repeat lies above the
    best, relative; above UNRELIABLE the machine was too busy for the figure to be trusted."""

    def __new__(cls, best, spread=0.0):
        timing = super().__new__(cls, best)
        timing.spread = spread
        return timing

    @property
    def unreliable(self):
        return self.spread > UNRELIABLE


def time_per_step(step, min_seconds=0.02, repeats=5):
    """Timing: the best over `repeats` of the mean time of a run of steps lasting
    >= min_seconds, with the spread of the repeats."""
    step()
    start = time.perf_counter()
    step()
    once = max(time.perf_counter() - start, 1e-7)
    count = max(1, int(min_seconds / once))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            step()
        runs.append((time.perf_counter() - start) / count)
    best = min(runs)
    return Timing(best, float(np.median(runs)) / best - 1.0)


def unreliable(*timings):
    """Whether any of these figures (Timing or plain seconds) is flagged."""
    return any(getattr(t, "unreliable", False) for t in timings)


def ratio_cell(numerator, denominator):
    """numerator / denominator, '*' marking a ratio of an unreliable figure."""
    return f"{numerator / denominator:.2f}" + ("*" if unreliable(numerator, denominator) else "")


def cost_cell(base, extra):
    """The extra cost of `extra` over `base` in %. A negative cost is impossible (the extra
    work cannot make a step faster): it is noise, and said so."""
    cost = extra / base - 1.0
    if cost < 0:
        return "noise"
    return f"{100 * cost:+.0f} %" + ("*" if unreliable(base, extra) else "")


BUSY_LOOP = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


@contextlib.contextmanager
def busy_process(seconds=300):
    """Another process keeping one core busy while the block runs: a spin loop that ends by
    itself after `seconds` at the latest, and is killed when the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)])
    try:
        time.sleep(0.2)             # let it start spinning
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- implementations: each returns a zero-argument step function over its own copy of the
# arrays, or None where it has no such optimizer ------------------------------------------

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
LRCORE = {"sgd": lambda: lrcore.SGD(lr=LR, momentum=0.9), "adagrad": lambda: lrcore.Adagrad(lr=LR),
          "rmsprop": lambda: lrcore.RMSprop(lr=LR), "adam": lambda: lrcore.Adam(lr=LR),
          "adamw": lambda: lrcore.AdamW(lr=LR)}
# bytes each optimizer moves per float32 element: reads + writes (p, g, buffers)
BYTES_PER_ELEMENT = {"sgd": 4 * (3 + 2), "adagrad": 4 * (3 + 2), "rmsprop": 4 * (3 + 2),
                     "adam": 4 * (4 + 3), "adamw": 4 * (4 + 3), "probe": 4 * (2 + 1)}


def lrcore_step(optimizer, shapes, backend="cython"):
    params, grads = arrays(shapes)
    state = LRCORE[optimizer]()
    lrcore.step(params, grads, state)
    if backend == "cython":
        return lambda: lrcore.step(params, grads, state)

    def step():
        previous = _backend.active
        lrcore.set_backend(backend)
        try:
            lrcore.step(params, grads, state)
        finally:
            lrcore.set_backend(previous)
    return step


def bandwidth_probe(shapes):
    """p -= lr·g: 12 bytes per element and nothing else, the memory-bound floor."""
    params, grads = arrays(shapes)
    state = lrcore.SGD(lr=LR)
    lrcore.step(params, grads, state)
    return lambda: lrcore.step(params, grads, state)


def numpy_naive_step(optimizer, shapes):
    """The textbook numpy Adam: whole-array expressions, temporaries and all."""
    if optimizer != "adam":
        return None
    params, grads = arrays(shapes)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]

    def step():
        t[0] += 1
        for p, g, mi, vi in zip(params, grads, m, v):
            mi *= 0.9
            mi += 0.1 * g
            vi *= 0.999
            vi += 0.001 * g * g
            p -= (LR / (1 - 0.9 ** t[0])) * mi / (np.sqrt(vi / (1 - 0.999 ** t[0])) + 1e-8)
    return step


def _torch_params(shapes):
    import torch
    params, grads = arrays(shapes)
    tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.from_numpy(g)
    return tparams


def torch_step(optimizer, shapes, mode):
    import torch
    if mode == "fused" and optimizer == "rmsprop":
        return None                      # torch has no fused RMSprop
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
           "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    extra = {"momentum": 0.9} if optimizer == "sgd" else {}
    opt = cls(_torch_params(shapes), lr=LR, foreach=mode == "foreach", fused=mode == "fused",
              **extra)
    opt.step()
    return opt.step


def deepspeed_step(optimizer, shapes):
    if optimizer not in ("adam", "adamw", "adagrad"):
        return None
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        tparams = _torch_params(shapes)
        if optimizer == "adagrad":
            opt = DeepSpeedCPUAdagrad(tparams, lr=LR)
        else:
            opt = DeepSpeedCPUAdam(tparams, lr=LR, adamw_mode=optimizer == "adamw",
                                   weight_decay=0.01 if optimizer == "adamw" else 0.0)
        opt.step()
    return opt.step


IMPLEMENTATIONS = {
    "lrcore": lrcore_step,
    "numpy reference": lambda o, s: lrcore_step(o, s, backend="numpy"),
    "numpy naive": numpy_naive_step,
    "torch for-loop": lambda o, s: torch_step(o, s, "for-loop"),
    "torch foreach": lambda o, s: torch_step(o, s, "foreach"),
    "torch fused": lambda o, s: torch_step(o, s, "fused"),
    "DeepSpeed": deepspeed_step,
}
BASELINES = ("torch fused", "DeepSpeed")     # lrcore's ratio is over the faster of these


def available(name):
    """Whether an implementation's package imports here."""
    try:
        if name.startswith("torch"):
            import torch
            if name == "torch GradScaler" and not hasattr(torch.amp, "GradScaler"):
                return False                 # before torch 2.3 GradScaler was CUDA-only
        if name == "DeepSpeed":
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink):
                import deepspeed.ops.adam  # noqa: F401
    except ImportError:
        return False
    return True


def set_threads(n):
    """lrcore's, torch's and OpenMP's thread counts (DeepSpeed runs on torch's OpenMP)."""
    lrcore.set_num_threads(n)
    with contextlib.suppress(ImportError):
        import torch
        torch.set_num_threads(n)


def all_threads():
    return lrcore._backend._default_threads()


# -- the ratio tables -----------------------------------------------------------------------

ADAM_CASES = [("1 x 1K", 1), ("100 x 1K", 1), ("1000 x 256", 1), ("1 x 64K", 1), ("1 x 1M", 1),
              ("1 x 32M", 1), ("1 x 32M", "all"), ("ResNet-50 list", 1), ("ResNet-50 list", "all")]
QUICK_CASES = [("1 x 1K", 1), ("100 x 1K", 1), ("1 x 64K", 1), ("1 x 1M", 1), ("1 x 1M", "all")]


def measure(implementation, optimizer, workload, threads, progress):
    """Seconds per step, or None when the implementation lacks the optimizer."""
    set_threads(all_threads() if threads == "all" else threads)
    progress(f"  {optimizer} {workload}, {threads} thread(s): {implementation} ...")
    step = IMPLEMENTATIONS[implementation](optimizer, WORKLOADS[workload])
    return None if step is None else time_per_step(step)


def format_time(seconds):
    """'1.23 ms'; '*' marks an unreliable Timing."""
    if seconds is None:
        return "-"
    mark = "*" if unreliable(seconds) else ""
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}{mark}"


def best_baseline(times):
    """The faster of the BASELINES measured, or None."""
    baselines = [times[b] for b in BASELINES if times.get(b)]
    return min(baselines) if baselines else None


def adam_table(cases, implementations, progress):
    """Rows of (workload, threads, {implementation: seconds}, ratio over the best baseline)."""
    rows = []
    for workload, threads in cases:
        times = {impl: measure(impl, "adam", workload, threads, progress) for impl in implementations}
        baseline = best_baseline(times)
        rows.append((workload, threads, times, times["lrcore"] / baseline if baseline else None))
    return rows


def bandwidth_table(workload, threads, progress):
    """Per optimizer: lrcore's time and the memory-bound floor for its bytes per element (the
    probe's time per byte, p -= lr·g, scaled), plus torch fused SGD for SGD."""
    progress(f"  bandwidth probe {workload}, {threads} thread(s) ...")
    set_threads(all_threads() if threads == "all" else threads)
    per_byte = time_per_step(bandwidth_probe(WORKLOADS[workload])) / BYTES_PER_ELEMENT["probe"]
    rows = []
    for optimizer in OPTIMIZERS:
        seconds = measure("lrcore", optimizer, workload, threads, progress)
        floor = per_byte * BYTES_PER_ELEMENT[optimizer]
        torch_fused = (measure("torch fused", optimizer, workload, threads, progress)
                       if optimizer == "sgd" and available("torch fused") else None)
        rows.append((optimizer, seconds, floor, torch_fused))
    return rows


# -- skipping a step with a NaN / inf gradient: Adam on one array ----------------------------

def lrcore_adam_skip(shapes, poisoned=False):
    """lrcore Adam under nonfinite='skip'; poisoned puts a NaN in the last gradient element, so
    each step makes the whole finiteness pass and then writes nothing."""
    params, grads = arrays(shapes)
    state = lrcore.Adam(lr=LR, nonfinite="skip")
    lrcore.step(params, grads, state)
    if poisoned:
        grads[-1].reshape(-1)[-1] = np.nan
    return lambda: lrcore.step(params, grads, state)


def torch_grad_scaler_step(shapes):
    """torch's way to skip a step on NaN / inf gradients: fused Adam stepped through an amp
    GradScaler (scale 1, never grown), which first checks and unscales every gradient."""
    import torch
    opt = torch.optim.Adam(_torch_params(shapes), lr=LR, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=2**30)
    one = torch.ones(())

    def step():
        scaler.scale(one)                # what scaler.scale(loss) records before backward()
        scaler.step(opt)
        scaler.update()
    step()
    return step


NONFINITE = {
    "lrcore": lambda shapes: lrcore_step("adam", shapes),
    "lrcore skip": lrcore_adam_skip,
    "check only": lambda shapes: lrcore_adam_skip(shapes, poisoned=True),
    "torch fused": lambda shapes: torch_step("adam", shapes, "fused"),
    "torch GradScaler": torch_grad_scaler_step,
}


def nonfinite_cost(workload, threads, progress, cases=tuple(NONFINITE)):
    """Seconds per Adam step of each available case named in `cases`."""
    set_threads(all_threads() if threads == "all" else threads)
    times = {}
    for name in cases:
        if available(name):
            progress(f"  adam {workload}, {threads} thread(s): {name} ...")
            times[name] = time_per_step(NONFINITE[name](WORKLOADS[workload]))
    return times


# -- a step while another process competes for a core ---------------------------------------

CONTENTION_CASES = ("1 x 1M", "1 x 32M", "ResNet-50 list")
QUICK_CONTENTION_CASES = ("1 x 64K", "1 x 1M")


def contention_table(workloads, progress):
    """Rows of (workload, competing: bool, Adam seconds at 1 thread, at the default threads),
    each workload measured idle and with a busy process competing for a core."""
    rows = []
    for workload in workloads:
        for competing in (False, True):
            with busy_process() if competing else contextlib.nullcontext():
                one = measure("lrcore", "adam", workload, 1, progress)
                default = measure("lrcore", "adam", workload, "all", progress)
            rows.append((workload, competing, one, default))
    return rows


def report(quick=False, only=None, out=print, progress=None):
    """Measure and print the tables; returns the Adam rows."""
    progress = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    implementations = [name for name in IMPLEMENTATIONS
                       if (only is None or name in only or name == "lrcore") and available(name)]
    missing = [name for name in IMPLEMENTATIONS if not available(name)]
    info = lrcore.build_info()
    out(f"lrcore {info['version']} bench: one step, float32, best of 5 runs of >= 20 ms; "
        f"{info.get('isa_dispatched', 'numpy')} kernels, threads: {info.get('threading', 'none')}, "
        f"{all_threads()} usable cores")
    with contextlib.suppress(AttributeError, OSError):       # no load average off POSIX
        load = os.getloadavg()[0]
        if load > 0.5:
            out(f"the machine is busy before the bench starts (load average {load:.1f}): "
                f"expect slower, noisier figures")
    if missing:
        out(f"not installed, skipped: {', '.join(missing)}")
    rows = adam_table(QUICK_CASES if quick else ADAM_CASES, implementations, progress)
    out("")
    out("Adam (lr 1e-3), time per step; ratio = lrcore / the faster of torch fused and DeepSpeed")
    header = f"{'workload':<16}{'threads':>8}" + "".join(f"{n:>17}" for n in implementations)
    out(header + f"{'ratio':>8}")
    for workload, threads, times, ratio in rows:
        out(f"{workload:<16}{threads!s:>8}" + "".join(f"{format_time(times[n]):>17}" for n in implementations)
            + (f"{ratio_cell(times['lrcore'], best_baseline(times)):>8}" if ratio else f"{'-':>8}"))
    workload = "1 x 1M" if quick else "1 x 32M"
    for threads in (1, "all"):
        out("")
        out(f"{workload}, {threads} thread(s): lrcore vs the memory-bound floor for its bytes per "
            f"element (probe p -= lr*g scaled)")
        out(f"{'optimizer':<10}{'bytes/el':>9}{'lrcore':>12}{'floor':>12}{'/ floor':>9}{'torch fused':>13}")
        for optimizer, seconds, floor, torch_fused in bandwidth_table(workload, threads, progress):
            out(f"{optimizer:<10}{BYTES_PER_ELEMENT[optimizer]:>9}{format_time(seconds):>12}"
                f"{format_time(floor):>12}{ratio_cell(seconds, floor):>9}{format_time(torch_fused):>13}")
    out("")
    out(f"{workload}, Adam: skipping steps with NaN / inf gradients (lrcore nonfinite='skip'; "
        f"torch fused under an amp GradScaler); check only = a skipped step")
    out(f"{'threads':>8}{'lrcore':>11}{'skip':>11}{'cost':>8}{'check only':>12}"
        f"{'torch fused':>13}{'GradScaler':>12}{'cost':>8}")
    cases = [name for name in NONFINITE
             if not name.startswith("torch") or "torch fused" in implementations]
    for threads in (1, "all"):
        times = nonfinite_cost(workload, threads, progress, cases)
        cells = [format_time(times["lrcore"]), format_time(times["lrcore skip"]),
                 cost_cell(times["lrcore"], times["lrcore skip"]),
                 format_time(times["check only"])]
        if "torch GradScaler" in times:
            cells += [format_time(times["torch fused"]), format_time(times["torch GradScaler"]),
                      cost_cell(times["torch fused"], times["torch GradScaler"])]
        out(f"{threads!s:>8}" + "".join(f"{c:>{w}}" for c, w in zip(cells, (11, 11, 8, 12, 13, 12, 8))))
    out("")
    if all_threads() > 1:
        out(f"Adam with another process competing for a core: time per step at 1 thread and at "
            f"the default {all_threads()}")
        out(f"{'workload':<16}{'competing':>10}{'1 thread':>12}{f'{all_threads()} threads':>12}"
            f"{'ratio':>8}")
        for workload, competing, one, default in contention_table(
                QUICK_CONTENTION_CASES if quick else CONTENTION_CASES, progress):
            out(f"{workload:<16}{'1 busy' if competing else 'none':>10}{format_time(one):>12}"
                f"{format_time(default):>12}{ratio_cell(default, one):>8}")
    else:
        out("1 usable core: no thread contention to measure")
    out("")
    out(f"* the repeats of this figure spread more than {UNRELIABLE:.0%} (median over best): the "
        f"machine was busy, do not trust it; noise: a cost below the run-to-run noise")
    set_threads(all_threads())
    return rows
