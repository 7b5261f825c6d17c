"""Side-by-side timing of one optimizer step: lrcore vs the numpy reference, torch.optim
(for-loop, foreach, fused) and DeepSpeedCPUAdam, on the same float32 arrays in one process.

    python -m lrcore bench [--quick] [--only NAME ...]

Each implementation steps its own copy of the arrays; a measurement is the best, over several
repeats, of the mean time per step of a run of steps long enough to time (at least ~20 ms).
torch and DeepSpeed are optional: missing ones are reported and skipped.
"""
import contextlib
import os
import sys
import time

import numpy as np

import lrcore
from lrcore import _backend, reference

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


def time_per_step(step, min_seconds=0.02, repeats=5):
    """Best over `repeats` of the mean time of a run of steps lasting >= min_seconds."""
    step()
    start = time.perf_counter()
    step()
    once = max(time.perf_counter() - start, 1e-7)
    count = max(1, int(min_seconds / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            step()
        best = min(best, (time.perf_counter() - start) / count)
    return best


# -- implementations: each returns a zero-argument step function over its own arrays ------

def lrcore_step(optimizer, shapes, backend="cython"):
    params, grads = arrays(shapes)
    state = make_lrcore(optimizer)
    lrcore.step(params, grads, state)

    def step():
        previous = _backend.active
        _backend.active = backend
        try:
            lrcore.step(params, grads, state)
        finally:
            _backend.active = previous
    if backend == "cython":
        return lambda: lrcore.step(params, grads, state)
    return step


def make_lrcore(optimizer):
    if optimizer == "adam":
        return lrcore.Adam(lr=LR)
    return lrcore.SGD(lr=LR, momentum=0.9)


def numpy_naive_step(optimizer, shapes):
    """The textbook numpy Adam: whole-array expressions, temporaries and all."""
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


def torch_step(optimizer, shapes, mode):
    import torch
    params, grads = arrays(shapes)
    tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.from_numpy(g)
    kwargs = {"foreach": mode == "foreach", "fused": mode == "fused"}
    if optimizer == "adam":
        opt = torch.optim.Adam(tparams, lr=LR, **kwargs)
    else:
        opt = torch.optim.SGD(tparams, lr=LR, momentum=0.9, **kwargs)
    opt.step()
    return opt.step


def deepspeed_step(optimizer, shapes):
    import torch
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        params, grads = arrays(shapes)
        tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g)
        opt = DeepSpeedCPUAdam(tparams, lr=LR, adamw_mode=False)
        opt.step()
    return opt.step


IMPLEMENTATIONS = {
    "lrcore": lambda o, s: lrcore_step(o, s),
    "numpy reference": lambda o, s: lrcore_step(o, s, backend="numpy"),
    "numpy naive": numpy_naive_step,
    "torch for-loop": lambda o, s: torch_step(o, s, "for-loop"),
    "torch foreach": lambda o, s: torch_step(o, s, "foreach"),
    "torch fused": lambda o, s: torch_step(o, s, "fused"),
    "DeepSpeedCPUAdam": deepspeed_step,
}


def set_threads(n):
    lrcore.set_num_threads(n)
    with contextlib.suppress(ImportError):
        import torch
        torch.set_num_threads(n)


def available(name):
    try:
        if name.startswith("torch"):
            import torch  # noqa: F401
        if name == "DeepSpeedCPUAdam":
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink):
                import deepspeed.ops.adam  # noqa: F401
    except ImportError:
        return False
    return True
