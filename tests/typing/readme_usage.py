"""The README's numpy examples as a user who type-checks with `mypy --strict` writes them.

tests/test_typing.py has mypy check this file (it must pass) and runs it (the types stated
here must be what lrcore really returns: the isinstance asserts). assert_type makes the mypy
run fail when an inferred type is not exactly the one stated, an Any included, so it checks
that lrcore's stubs give precise types rather than only accepting the calls.
"""
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any, Literal, Optional, Union

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

import lrcore
from lrcore import reference, schedules
from lrcore.lr_finder import LRFinderResult

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

# ---- the training loop: two arrays, one call, in place
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 8)).astype(np.float32)
y = X @ np.arange(8, dtype=np.float32)

w = np.zeros(8, np.float32)
b = np.zeros(1, np.float32)
sgd = lrcore.SGD(lr=0.05, momentum=0.9, nesterov=True)
lr_used = 0.0
for _ in range(200):
    err = X @ w + b - y
    # numpy's stubs type `float32 array / int` as float64: the list's type is stated
    grads: list[NDArray[np.floating[Any]]] = [X.T @ err / len(y),
                                              np.array([err.mean()], np.float32)]
    lr_used = lrcore.step([w, b], grads, sgd)
    assert_type(lr_used, float)
assert isinstance(lr_used, float) and lr_used == 0.05
assert_type(sgd.step_count, int)
assert_type(sgd.array_steps, list[int])
assert_type(sgd.momentum, float)
assert_type(sgd.nesterov, bool)
assert sgd.step_count == 200 and np.allclose(w, np.arange(8), atol=1e-2)

# ---- schedules: called on a step (a float) or on an integer array (a float64 array)
lr = schedules.Warmup(schedules.CosineDecay(0.1, decay_steps=1000), warmup_steps=100)
rates = lr(np.array([0, 50, 100, 600, 1100]))
assert_type(rates, NDArray[np.float64])
first = lr(0)
assert_type(first, float)
assert isinstance(first, float) and rates.dtype == np.float64
assert np.allclose(rates, [0.0, 0.05, 0.1, 0.05, 0.0])
state: lrcore.Optimizer = lrcore.Adam(lr=lr)
assert_type(state.lr, Union[float, schedules.LearningRateSchedule, Callable[[int], float]])

decay = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.99, staircase=True)
config = decay.get_config()
assert_type(config, dict[str, Any])
assert_type(schedules.ExponentialDecay.from_config(config), schedules.ExponentialDecay)
assert_type(schedules.deserialize(schedules.serialize(decay)), schedules.LearningRateSchedule)
assert schedules.deserialize(schedules.serialize(decay)) == decay
stepped = lrcore.SGD(lr=lambda step: 0.1 / (1 + step))     # any callable step -> rate
assert_type(stepped.current_lr, float)
assert stepped.current_lr == 0.1

# ---- checkpoints: load() gives a state of the saved class, typed as the base class
path = os.path.join(tempfile.mkdtemp(), "adam.npz")
p = np.zeros(8, np.float32)
lrcore.step(p, np.ones(8, np.float32), state)
lrcore.save(state, path)
state = lrcore.load(path)
assert_type(state, lrcore.Optimizer)
assert isinstance(state, lrcore.Adam) and state.step_count == 1
if isinstance(state, lrcore.Adam):
    assert_type(state.betas, tuple[float, float])
snapshot = state.state_dict()
assert_type(snapshot, dict[str, Any])
state.load_state_dict(snapshot)

# ---- the LR range test: fn gets the params exactly as find_lr was given them
Xs = X * np.geomspace(0.3, 10, 8, dtype=np.float32)
ys = Xs @ np.arange(8, dtype=np.float32)


def fn(params: list[NDArray[np.float32]]) -> tuple[float, list[NDArray[np.floating[Any]]]]:
    err = Xs @ params[0] - ys
    return 0.5 * float(np.mean(err ** 2)), [Xs.T @ err / len(ys)]


w0 = np.zeros(8, np.float32)
result = lrcore.find_lr(fn, [w0], lrcore.SGD(), suggest="minimum")
assert_type(result, LRFinderResult)
assert_type(result.suggestion, float | None)
assert_type(result.steepest, float | None)
assert_type(result.suggestions, dict[str, float | None])
assert result.suggestion is not None, result.reason
assert_type(result.lrs, NDArray[np.float64])
assert_type(result.stopped_early, bool)
assert isinstance(result.suggestion, float) and result.lrs.dtype == np.float64
assert not w0.any()                         # restored
tuned = lrcore.SGD(lr=result.suggestion)
start = fn([w0])[0]
for _ in range(100):
    lrcore.step([w0], fn([w0])[1], tuned)
assert fn([w0])[0] < start / 100

# ---- mixed precision: bfloat16 grads with a loss scale, clipping
wm = np.zeros(8, np.float32)
clipped = lrcore.Adam(lr=schedules.CosineDecay(0.1, 500), max_grad_norm=1.0)
for _ in range(500):
    g = X.T @ (X @ wm - y) / len(y)
    scaled = (g * 1024).astype(ml_dtypes.bfloat16)
    lrcore.step(wm, scaled, clipped, grad_scale=1024.0)
norm = clipped.last_grad_norm
assert_type(norm, Optional[float])
assert isinstance(norm, float)
assert_type(clipped.max_grad_norm, Optional[float])

wb = np.zeros(8, ml_dtypes.bfloat16)        # bfloat16 params: bfloat16 momentum
half = lrcore.SGD(lr=0.1, momentum=0.9)
for _ in range(500):
    gb = (X.T @ (X @ wb.astype(np.float32) - y) / len(y)).astype(ml_dtypes.bfloat16)
    lrcore.step(wb, gb, half)
momentum = half.buffers["momentum_buffer"]
assert_type(momentum, list[NDArray[Any]])
assert momentum[0].dtype == ml_dtypes.bfloat16

# ---- compact optimizer state, and the keyword-only options
w8 = np.zeros(8, np.float32)
adam8 = lrcore.Adam(lr=0.1, state_format="8bit", min_8bit_size=1)
for _ in range(500):
    lrcore.step(w8, X.T @ (X @ w8 - y) / len(y), adam8)
assert_type(adam8.state_bytes, int)
assert_type(adam8.state_format, Optional[Literal["float32", "bfloat16", "8bit"]])
exp_avg = adam8.buffer_values("exp_avg")
assert_type(exp_avg, list[NDArray[np.floating[Any]]])
assert adam8.state_bytes == 24 and adam8.buffers["exp_avg"][0].dtype == np.uint8

roundings: tuple[Literal["nearest", "stochastic"], ...] = ("nearest", "stochastic")
for rounding in roundings:
    wr = np.zeros(8, ml_dtypes.bfloat16)
    opt = lrcore.Adam(lr=3e-3, param_rounding=rounding, seed=1)
    for _ in range(50):
        gr = (X.T @ (X @ wr.astype(np.float32) - y) / len(y)).astype(ml_dtypes.bfloat16)
        lrcore.step(wr, gr, opt)

guarded = lrcore.SGD(lr=0.1, nonfinite="skip")
skipped = lrcore.step(w, np.full(8, np.nan, np.float32), guarded)
assert skipped == 0.0 and guarded.skipped_steps == 1
assert_type(guarded.skipped_steps, int)

# ---- the numpy reference of one array's update, and the norm's sum of squares
pr, gr1, buf = np.ones(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32)
reference.sgd(pr, gr1, buf, step=0, lr=0.1, momentum=0.9)
sumsq, finite = reference.grad_sumsq([gr1, None])
assert_type(sumsq, float)
assert_type(finite, bool)
assert sumsq == 4.0 and finite and np.allclose(pr, 0.9)

# ---- around the step
threads = lrcore.get_num_threads()
assert_type(threads, int)
lrcore.set_num_threads(threads)
info = lrcore.build_info()
assert_type(info, dict[str, Any])
assert_type(lrcore.backend, Literal["cython", "numpy"])
assert lrcore.backend in ("cython", "numpy") and info["backend"] == lrcore.backend
