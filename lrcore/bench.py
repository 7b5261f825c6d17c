"""Side-by-side timing of one optimizer step: lrcore vs the numpy reference, torch.optim
(for-loop, foreach, fused) and DeepSpeed's CPU optimizers, on the same float32 arrays in one
process; lrcore vs the memory-bound floor for each optimizer's bytes per element; and the
mixed-precision cases (bfloat16 params / grads, loss scaling and clipping); and
the compact optimizer state (state_format="bfloat16" / "8bit" against lrcore's
float32 step, torch fused AdamW, DeepSpeed CPUAdam and the 8-bit AdamWs of bitsandbytes and
torchao, with the state bytes per parameter).

    python -m lrcore bench [--quick] [--only NAME ...]
    python -m lrcore bench --mixed          # the mixed-precision tables alone
    python -m lrcore bench --compact        # the compact-state tables alone

Each implementation steps its own copy of the arrays; a measurement is the best, over five
repeats, of the mean time per step of a run long enough to time (at least ~20 ms). A figure
whose repeats spread widely (the machine was busy) is marked unreliable, and a difference
smaller than the noise is printed as such, not as a number. torch, DeepSpeed, bitsandbytes
and torchao are optional: missing ones are reported and skipped. benchmarks/ runs the same
implementations under pytest-benchmark.
"""
import contextlib
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np

import lrcore
from lrcore import _backend, _validate, reference

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
    "1 x 4M": [(2**22,)],
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


def _torch_params(shapes, dtype="float32"):
    """torch Parameters (and their .grad) of `dtype` holding arrays(shapes)' values, rounded
    to nearest even as lrcore's bfloat16() rounds them."""
    import torch
    params, grads = arrays(shapes)
    cast = (lambda t: t) if dtype == "float32" else (lambda t: t.to(getattr(torch, dtype)))
    tparams = [torch.nn.Parameter(cast(torch.from_numpy(p))) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = cast(torch.from_numpy(g))
    return tparams


def torch_step(optimizer, shapes, mode, dtype="float32"):
    import torch
    if mode == "fused" and optimizer == "rmsprop":
        return None                      # torch has no fused RMSprop
    cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
           "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    extra = {"momentum": 0.9} if optimizer == "sgd" else {}
    opt = cls(_torch_params(shapes, dtype), lr=LR, foreach=mode == "foreach",
              fused=mode == "fused", **extra)
    opt.step()
    return opt.step


def deepspeed_step(optimizer, shapes, dtype="float32", fp32_state=True):
    """DeepSpeed's CPU optimizer on params of `dtype`; for half-precision params of Adam,
    fp32_state is its fp32_optimizer_states: float32 moments (its default) or moments in the
    params' dtype."""
    if optimizer not in ("adam", "adamw", "adagrad"):
        return None
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        tparams = _torch_params(shapes, dtype)
        if optimizer == "adagrad":
            opt = DeepSpeedCPUAdagrad(tparams, lr=LR)
        else:
            extra = {} if fp32_state else {"fp32_optimizer_states": False}
            opt = DeepSpeedCPUAdam(tparams, lr=LR, adamw_mode=optimizer == "adamw",
                                   weight_decay=0.01 if optimizer == "adamw" else 0.0, **extra)
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
        if name in EIGHT_BIT_PEERS:
            _import_eight_bit_peer(name)
    except ImportError:
        return False
    return True


def selected(only=None):
    """The installed implementations (IMPLEMENTATIONS and EIGHT_BIT_PEERS) named in `only`
    (all of them when None), lrcore always."""
    return [name for name in tuple(IMPLEMENTATIONS) + tuple(EIGHT_BIT_PEERS)
            if (only is None or name in only or name == "lrcore") and available(name)]


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


def time_case(make, workload, threads, label, progress):
    """Seconds per step of make(shapes of `workload`) at `threads`, or None where make has no
    such case (returns None)."""
    set_threads(all_threads() if threads == "all" else threads)
    progress(f"  {label} {workload}, {threads} thread(s) ...")
    step = make(WORKLOADS[workload])
    return None if step is None else time_per_step(step)


def measure(implementation, optimizer, workload, threads, progress):
    """Seconds per step, or None when the implementation lacks the optimizer."""
    return time_case(lambda shapes: IMPLEMENTATIONS[implementation](optimizer, shapes), workload,
                     threads, f"{optimizer}: {implementation}", progress)


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


def torch_grad_scaler_step(shapes, max_grad_norm=None):
    """torch's way to skip a step on NaN / inf gradients: fused Adam stepped through an amp
    GradScaler (scale 1, never grown), which first checks and unscales every gradient. With
    max_grad_norm, torch's recipe for clipping under a scaler: scaler.unscale_(opt) (a pass
    that checks and rewrites every gradient), clip_grad_norm_, then scaler.step(opt). The scale
    stays 1 because unscale_ and clipping rewrite the grads in place, so a larger one would
    shrink them again at every timed repeat; the passes are the same for any scale (torch's CPU
    unscale multiplies and writes back whatever the scale). None when this torch's GradScaler
    is CUDA-only."""
    if not available("torch GradScaler"):
        return None
    import torch
    opt = torch.optim.Adam(_torch_params(shapes), lr=LR, fused=True)
    params = opt.param_groups[0]["params"]
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=2**30)
    one = torch.ones(())

    def step():
        scaler.scale(one)                # what scaler.scale(loss) records before backward()
        if max_grad_norm is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
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


# -- mixed precision: half-precision params and grads, loss scaling, clipping ------

GRAD_SCALE = 1024.0         # a loss scale: the grads lrcore is given are arrays()' times this
MAX_GRAD_NORM = 1.0         # clips: arrays()' 32M grads have a norm of about 58


def bfloat16(values):
    """float32 values rounded to bfloat16 (nearest even, lrcore.reference.narrow): an
    ml_dtypes.bfloat16 array when ml_dtypes imports, else uint16 bit patterns tagged
    lrcore._validate.BFLOAT16_BITS (the two forms lrcore takes as bfloat16)."""
    try:
        import ml_dtypes
        dtype = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        dtype = _validate.BFLOAT16_BITS
    return reference.narrow(values, dtype)


def mixed_arrays(shapes, params_dtype="float32", grads_dtype="float32", grad_scale=1.0):
    """arrays(shapes), the grads multiplied by grad_scale, each list cast to its dtype."""
    params, grads = arrays(shapes)
    if grad_scale != 1.0:
        grads = [g * np.float32(grad_scale) for g in grads]
    cast = {"float32": lambda a: a, "bfloat16": bfloat16}
    return [cast[params_dtype](p) for p in params], [cast[grads_dtype](g) for g in grads]


def lrcore_mixed_step(shapes, params_dtype="float32", grads_dtype="float32", grad_scale=None,
                      **options):
    """lrcore Adam over mixed_arrays; grad_scale goes to lrcore.step (the grads are scaled by
    it), options to lrcore.Adam (max_grad_norm, nonfinite)."""
    params, grads = mixed_arrays(shapes, params_dtype, grads_dtype, grad_scale or 1.0)
    state = lrcore.Adam(lr=LR, **options)
    scale = {} if grad_scale is None else {"grad_scale": grad_scale}
    lrcore.step(params, grads, state, **scale)
    return lambda: lrcore.step(params, grads, state, **scale)


def torch_cast_grads_step(shapes):
    """torch's float32 fused Adam fed bfloat16 grads: each step casts them into the params'
    float32 .grad (copy_ into the existing tensor: no allocation, as DeepSpeed's offload copies
    half-precision grads into its float32 buffer), then steps. Both parts are timed."""
    import torch
    tparams = _torch_params(shapes)
    half_grads = [p.grad.to(torch.bfloat16) for p in tparams]
    opt = torch.optim.Adam(tparams, lr=LR, fused=True)

    def step():
        for p, g in zip(tparams, half_grads):
            p.grad.copy_(g)
        opt.step()
    step()
    return step


# column -> (make(shapes) -> step or None, the IMPLEMENTATIONS entry that selects it)
MIXED_COLUMNS = {
    "lrcore bf16 grads": (lambda s: lrcore_mixed_step(s, grads_dtype="bfloat16"), "lrcore"),
    "lrcore float32": (lambda s: lrcore_step("adam", s), "lrcore"),
    "torch cast+fused": (torch_cast_grads_step, "torch fused"),
    "lrcore bf16": (lambda s: lrcore_mixed_step(s, "bfloat16", "bfloat16"), "lrcore"),
    "torch fused bf16": (lambda s: torch_step("adam", s, "fused", "bfloat16"), "torch fused"),
    "DeepSpeed bf16": (lambda s: deepspeed_step("adam", s, "bfloat16", fp32_state=False),
                       "DeepSpeed"),
    "DeepSpeed fp32 state": (lambda s: deepspeed_step("adam", s, "bfloat16"), "DeepSpeed"),
    "lrcore scale+clip+skip": (lambda s: lrcore_mixed_step(
        s, grad_scale=GRAD_SCALE, max_grad_norm=MAX_GRAD_NORM, nonfinite="skip"), "lrcore"),
    "torch unscale+clip+fused": (lambda s: torch_grad_scaler_step(s, MAX_GRAD_NORM),
                                 "torch fused"),
}
BF16_PEERS = ("torch fused bf16", "DeepSpeed bf16", "DeepSpeed fp32 state")
# name -> (title, workloads, columns (the first is the ratios' numerator), ratios: [(denominators
# (the fastest measured of them), goal)])
MIXED_GROUPS = {
    "bf16 grads": (
        "float32 params, bfloat16 grads (torch: grads cast into the float32 .grad, fused Adam)",
        ("1 x 32M",), ("lrcore bf16 grads", "lrcore float32", "torch cast+fused"),
        [(("lrcore float32",), "<= 0.90"), (("torch cast+fused",), "< 1")]),
    "bf16 params": (
        "bfloat16 params and grads (moments bfloat16; 'DeepSpeed fp32 state': its default, "
        "float32 moments)",
        ("1 x 1M", "1 x 32M"), ("lrcore bf16",) + BF16_PEERS, [(BF16_PEERS, "< 1")]),
    "scale+clip+skip": (
        f"grad_scale {GRAD_SCALE:g}, max_grad_norm {MAX_GRAD_NORM:g}, nonfinite='skip' (torch: "
        f"GradScaler.unscale_ + clip_grad_norm_ + fused Adam)",
        ("1 x 32M",), ("lrcore scale+clip+skip", "lrcore float32", "torch unscale+clip+fused"),
        [(("lrcore float32",), "<= 1.30"), (("torch unscale+clip+fused",), "<= 0.75")]),
    "small bf16": (
        "bfloat16 params and grads, small arrays", ("100 x 1K",), ("lrcore bf16",) + BF16_PEERS,
        [(BF16_PEERS, "<= 0.25")]),
}
QUICK_MIXED_WORKLOADS = {"1 x 32M": "1 x 1M", "1 x 1M": "1 x 64K"}


def ratio_over(times, numerator, denominators):
    """ratio_cell of times[numerator] over the fastest of times[d] for d in denominators that
    were measured; '-' when the numerator or every denominator is missing (not installed)."""
    measured = [times[d] for d in denominators if times.get(d)]
    if not times.get(numerator) or not measured:
        return "-"
    return ratio_cell(times[numerator], min(measured))


def mixed_table(implementations, progress, quick=False, groups=tuple(MIXED_GROUPS)):
    """Per group of MIXED_GROUPS named in `groups`: (title, columns, ratio headers, rows); a row
    is (workload, threads, {column: seconds or None}, [ratio cell per ratio]), its cells
    measured one after another. Columns whose implementation is not in `implementations`
    ("lrcore" always is) are left out; quick replaces the large workloads by smaller ones."""
    tables = []
    for title, workloads, columns, ratios in (MIXED_GROUPS[name] for name in groups):
        columns = [c for c in columns
                   if MIXED_COLUMNS[c][1] == "lrcore" or MIXED_COLUMNS[c][1] in implementations]
        if quick:
            workloads = list(dict.fromkeys(QUICK_MIXED_WORKLOADS.get(w, w) for w in workloads))
        headers = [f"/ {'fastest peer' if len(d) > 1 else d[0]} ({goal})" for d, goal in ratios]
        rows = []
        for workload in workloads:
            for threads in (1, "all"):
                times = {c: time_case(MIXED_COLUMNS[c][0], workload, threads, c, progress)
                         for c in columns}
                cells = [ratio_over(times, columns[0], denominators) for denominators, _ in ratios]
                rows.append((workload, threads, times, cells))
        tables.append((title, columns, headers, rows))
    return tables


def to_stderr(text):
    """The progress lines: on stderr, so the tables on stdout stay clean."""
    print(text, file=sys.stderr, flush=True)


def print_mixed_table(implementations=None, progress=to_stderr, quick=False, out=print):
    """Measure and print mixed_table() (by default with every installed implementation), a
    table per group followed by an empty line."""
    if implementations is None:
        implementations = [name for name in IMPLEMENTATIONS if available(name)]
    out("Mixed precision, Adam (lr 1e-3): time per step, each row's cells measured one after "
        "another; a ratio is the first column over the (fastest of the) named, goal in brackets")
    for title, columns, headers, rows in mixed_table(implementations, progress, quick):
        out(title)
        widths = [max(12, len(name) + 2) for name in columns + headers]

        def line(workload, threads, cells):
            return f"{workload:<16}{threads!s:>8}" + "".join(
                f"{c:>{w}}" for c, w in zip(cells, widths))
        out(line("workload", "threads", columns + headers))
        for workload, threads, times, cells in rows:
            out(line(workload, threads, [format_time(times[c]) for c in columns] + cells))
        out("")


# -- compact optimizer state: bfloat16 and 8-bit block-wise moments --------------

WEIGHT_DECAY = 1e-2     # AdamW's default in torch, bitsandbytes and torchao; given to every AdamW

COMPACT_LRCORE = {
    "adamw": lambda fmt: lrcore.AdamW(lr=LR, weight_decay=WEIGHT_DECAY, state_format=fmt),
    "sgd": lambda fmt: lrcore.SGD(lr=LR, momentum=0.9, state_format=fmt),
    "rmsprop": lambda fmt: lrcore.RMSprop(lr=LR, state_format=fmt),
    "adagrad": lambda fmt: lrcore.Adagrad(lr=LR, state_format=fmt),
}


def lrcore_compact_step(optimizer, shapes, state_format=None):
    """lrcore `optimizer` (a COMPACT_LRCORE key) with `state_format` on arrays(shapes), stepped
    once so that its buffers exist; the step function carries the state as `.state`."""
    params, grads = arrays(shapes)
    state = COMPACT_LRCORE[optimizer](state_format)
    lrcore.step(params, grads, state)

    def step():
        lrcore.step(params, grads, state)
    step.state = state
    return step


EIGHT_BIT_PEERS = ("bitsandbytes", "torchao")      # their AdamW8bit, on the CPU


def _import_eight_bit_peer(name):
    """The AdamW8bit class of bitsandbytes or torchao. torch is imported first, outside the
    silencing: its logging handler keeps the stream it finds at import, which must not be the
    devnull closed below; the packages' own import-time chatter (missing CUDA builds) is
    dropped."""
    import torch  # noqa: F401
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        if name == "bitsandbytes":
            from bitsandbytes.optim import AdamW8bit
        else:
            from torchao.optim import AdamW8bit
    return AdamW8bit


def eight_bit_peer_step(name, optimizer, shapes):
    """bitsandbytes' or torchao's AdamW8bit (block-wise 8-bit moments, block 256, their
    defaults) on torch copies of arrays(shapes), stepped once (torchao compiles its step then);
    None for another optimizer, or with a warning when this version cannot step on the CPU
    (bitsandbytes before its CPU backend, torchao without a C++ compiler for torch.compile)."""
    if optimizer != "adamw":
        return None
    adamw8bit = _import_eight_bit_peer(name)
    try:
        opt = adamw8bit(_torch_params(shapes), lr=LR, weight_decay=WEIGHT_DECAY)
        opt.step()
    except Exception as exc:    # noqa: BLE001 -- any failure of an optional peer skips it
        warnings.warn(f"{name} AdamW8bit cannot step on the CPU here, skipped: "
                      f"{type(exc).__name__}: {exc}", stacklevel=2)
        return None
    return opt.step


# column -> (make(optimizer, shapes) -> step or None, the implementation that selects it)
COMPACT_COLUMNS = {
    "lrcore float32": (lambda o, s: lrcore_compact_step(o, s), "lrcore"),
    "lrcore bfloat16": (lambda o, s: lrcore_compact_step(o, s, "bfloat16"), "lrcore"),
    "lrcore 8bit": (lambda o, s: lrcore_compact_step(o, s, "8bit"), "lrcore"),
    "torch fused": (lambda o, s: torch_step(o, s, "fused"), "torch fused"),
    "DeepSpeed": (deepspeed_step, "DeepSpeed"),
    "bitsandbytes 8bit": (lambda o, s: eight_bit_peer_step("bitsandbytes", o, s),
                          "bitsandbytes"),
    "torchao 8bit": (lambda o, s: eight_bit_peer_step("torchao", o, s), "torchao"),
}
FLOAT32_PEERS = ("torch fused", "DeepSpeed")
LRCORE_FORMATS = ("lrcore float32", "lrcore bfloat16", "lrcore 8bit")
BASE = "lrcore float32"             # every column's "/ f32" is over it
# optimizer -> (title, workloads, columns, ratios: [(numerator, denominators (the fastest
# measured of them), goal or None)])
COMPACT_GROUPS = {
    "adamw": (
        "AdamW (lr 1e-3, weight_decay 1e-2), float32 params",
        ("1 x 4M", "1 x 32M"), tuple(COMPACT_COLUMNS),
        [("lrcore 8bit", (BASE,), "<= 0.70"), ("lrcore bfloat16", (BASE,), "<= 0.85"),
         ("lrcore 8bit", FLOAT32_PEERS, "<= 0.75"),
         ("bitsandbytes 8bit", ("lrcore 8bit",), ">= 10"),
         ("torchao 8bit", ("lrcore 8bit",), ">= 10")]),
    "sgd": ("SGD (lr 1e-3, momentum 0.9), float32 params", ("1 x 32M",), LRCORE_FORMATS,
            [("lrcore 8bit", (BASE,), "<= 0.85"), ("lrcore bfloat16", (BASE,), None)]),
    "rmsprop": ("RMSprop (lr 1e-3), float32 params", ("1 x 32M",), LRCORE_FORMATS,
                [("lrcore 8bit", (BASE,), "<= 0.85"), ("lrcore bfloat16", (BASE,), None)]),
    "adagrad": ("Adagrad (lr 1e-3), float32 params", ("1 x 32M",), LRCORE_FORMATS,
                [("lrcore 8bit", (BASE,), "<= 0.85"), ("lrcore bfloat16", (BASE,), None)]),
}
QUICK_COMPACT_WORKLOADS = {"1 x 32M": "1 x 1M", "1 x 4M": "1 x 64K"}
STATE_BYTES_WORKLOAD = "1 x 4M"     # quick: its QUICK_COMPACT_WORKLOADS entry


def compact_columns(optimizer, implementations):
    """COMPACT_GROUPS[optimizer]'s columns whose implementation is in `implementations`
    (lrcore's always)."""
    return [c for c in COMPACT_GROUPS[optimizer][2]
            if COMPACT_COLUMNS[c][1] == "lrcore" or COMPACT_COLUMNS[c][1] in implementations]


def ratio_header(numerator, denominators, goal):
    """'lrcore 8bit / lrcore float32 (<= 0.70)'; several denominators are 'fastest float32
    peer' (the only such set)."""
    over = "fastest float32 peer" if len(denominators) > 1 else denominators[0]
    return f"{numerator} / {over}" + (f" ({goal})" if goal else "")


def compact_table(implementations, progress, quick=False, groups=tuple(COMPACT_GROUPS)):
    """Per optimizer of COMPACT_GROUPS named in `groups` and per workload: (title, workload,
    columns, ratio headers, runs); a run is (threads, {column: seconds or None}, {column: its
    ratio cell over lrcore float32}, [ratio cell per ratio]) for threads 1 and "all", its
    cells measured one after another. Columns whose implementation is not in
    `implementations` are left out; quick replaces the large workloads by smaller ones."""
    blocks = []
    for optimizer in groups:
        title, workloads, _, ratios = COMPACT_GROUPS[optimizer]
        columns = compact_columns(optimizer, implementations)
        if quick:
            workloads = list(dict.fromkeys(QUICK_COMPACT_WORKLOADS.get(w, w) for w in workloads))
        headers = [ratio_header(*ratio) for ratio in ratios]
        for workload in workloads:
            runs = []
            for threads in (1, "all"):
                times = {c: time_case(lambda shapes, c=c: COMPACT_COLUMNS[c][0](optimizer, shapes),
                                      workload, threads, f"{optimizer}: {c}", progress)
                         for c in columns}
                over_base = {c: ratio_over(times, c, (BASE,)) for c in columns}
                cells = [ratio_over(times, numerator, denominators)
                         for numerator, denominators, _ in ratios]
                runs.append((threads, times, over_base, cells))
            blocks.append((title, workload, columns, headers, runs))
    return blocks


def _tensor_bytes(value, seen):
    """Bytes of the torch tensors in `value` not in `seen` (data pointer, size), added to it:
    a tensor subclass (torchao's OptimState8bit) by its inner tensors (codes, scale, qmap); 0-d
    tensors (step counters, as lrcore's step_count is no buffer) and non-tensors count 0."""
    import torch
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return 0
    if type(value) not in (torch.Tensor, torch.nn.Parameter) and \
            hasattr(value, "__tensor_flatten__"):
        names, _ = value.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(value, name), seen) for name in names)
    key = (value.data_ptr(), value.nbytes)
    if key in seen:                      # a map shared by several buffers is stored once
        return 0
    seen.add(key)
    return value.nbytes


def state_bytes_of(step):
    """Bytes of optimizer state behind a step function of COMPACT_COLUMNS: an lrcore state's
    state_bytes (buffers, 8-bit codes and their absmax), or the distinct tensor storage of a
    torch optimizer's per-parameter state (moments, codes, absmax / scales, the quantization
    maps)."""
    if hasattr(step, "state"):
        return step.state.state_bytes
    seen = set()
    return sum(_tensor_bytes(value, seen) for per_param in step.__self__.state.values()
               for value in per_param.values())


def state_bytes_table(implementations, progress, workload=STATE_BYTES_WORKLOAD,
                      groups=tuple(COMPACT_GROUPS)):
    """Rows of (optimizer, column, state bytes, elements) for each optimizer of `groups` and
    each of its columns in `implementations`, each made on `workload` and stepped once."""
    set_threads(all_threads())
    shapes = WORKLOADS[workload]
    elements = sum(math.prod(s) for s in shapes)
    rows = []
    for optimizer in groups:
        for column in compact_columns(optimizer, implementations):
            progress(f"  state bytes, {optimizer}: {column} {workload} ...")
            step = COMPACT_COLUMNS[column][0](optimizer, shapes)
            if step is not None:
                rows.append((optimizer, column, state_bytes_of(step), elements))
    return rows


def per_param_cell(nbytes, elements):
    """Bytes per parameter: exact as 'whole + k/256 = value' when it is a whole number of
    1/256ths (lrcore's 8-bit states: 1 byte of code + 4 bytes of absmax per 256), else the
    value to 7 digits."""
    whole, rest = divmod(nbytes, elements)
    if rest == 0:
        return f"{whole}"
    if rest * 256 % elements == 0:
        return f"{whole} + {rest * 256 // elements}/256 = {nbytes / elements:.7g}"
    return f"{nbytes / elements:.7g}"


PARAMS_8B = 8e9       # the example: an 8B-parameter model's optimizer state


def print_compact_table(implementations=None, progress=to_stderr, quick=False, out=print):
    """Measure and print compact_table() and state_bytes_table() (by default with every
    installed implementation and 8-bit peer)."""
    if implementations is None:
        implementations = selected()
    out("Compact optimizer state: time per step, each thread count's cells measured "
        "one after another; '/ f32' = over lrcore float32 (state_format=None) at the same threads;")
    out("a ratio row is its first name over the (fastest of the) second, goal in brackets; "
        "'bitsandbytes 8bit / lrcore 8bit' is how many times faster lrcore's 8-bit step is")
    for title, workload, columns, headers, runs in compact_table(implementations, progress, quick):
        out(f"{title}, {workload}")
        width = max(len(name) for name in columns + headers) + 2
        labels = {1: "1 thread", "all": f"all ({all_threads()}) threads"}
        out(f"{'':<{width}}" + "".join(f"{labels[threads]:>22}" for threads, *_ in runs))
        out(f"{'':<{width}}" + "".join(f"{'time':>13}{'/ f32':>9}" for _ in runs))
        for column in columns:
            out(f"{column:<{width}}" + "".join(
                f"{format_time(times[column]):>13}{over_base[column]:>9}"
                for _, times, over_base, _ in runs))
        for i, header in enumerate(headers):
            out(f"{header:<{width}}" + "".join(f"{'':>13}{cells[i]:>9}" for *_, cells in runs))
        out("")
    workload = QUICK_COMPACT_WORKLOADS.get(STATE_BYTES_WORKLOAD, STATE_BYTES_WORKLOAD) \
        if quick else STATE_BYTES_WORKLOAD
    out(f"State bytes per parameter ({workload}, after one step: buffers, 8-bit codes with their "
        f"absmax or scales and maps; lrcore: state.state_bytes / n), and for {PARAMS_8B / 1e9:g}B "
        f"parameters")
    out(f"{'optimizer':<10}{'implementation':<20}{'bytes / param':>24}{'8B params':>12}")
    for optimizer, column, nbytes, elements in state_bytes_table(implementations, progress,
                                                                 workload):
        name = COMPACT_GROUPS[optimizer][0].split(" (")[0]
        out(f"{name:<10}{column:<20}{per_param_cell(nbytes, elements):>24}"
            f"{nbytes / elements * PARAMS_8B / 1e9:>9.4g} GB")
    out("")


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
    progress = progress or to_stderr
    chosen = selected(only)              # the compact table also takes the 8-bit peers
    implementations = [name for name in chosen if name in IMPLEMENTATIONS]
    missing = [name for name in tuple(IMPLEMENTATIONS) + EIGHT_BIT_PEERS if not available(name)]
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
    print_mixed_table(implementations, progress, quick, out)
    print_compact_table(chosen, progress, quick, out)
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
