"""numpy reference implementations: the ground truth every compiled kernel is tested against.

One function per optimizer, updating one array in place, written for reading rather than speed
(the shape of torch.optim's `_single_tensor_*` functions). They follow docs/reference.md:
per-call scalars are computed in float64 and cast once to the array's dtype, then every
element operation runs in that dtype, one numpy operation at a time. The compiled kernels
(src/kernels_impl.h) perform the same operations in the same order, so on the same inputs
the two agree bit for bit.

Half-precision storage (float16, bfloat16) is handled around those functions: `widen` gives
the float32 values to compute on (exactly), `narrow` rounds results back to the storage
format (round to nearest even; a NaN is stored quieted with its sign and top payload bits,
the rule of src/formats.h), here on numpy's own float16 conversion and on bfloat16 bit
patterns. `grad_sumsq` is the gradient norm's sum of squares in the kernels' fixed order.
"""
import math

import numpy as np

from lrcore._validate import format_of

# The norm's summation order: chunks of CHUNK elements per array (src/kernels.h LRC_CHUNK),
# LANES running sums per chunk (LRC_LANES).
CHUNK, LANES = 32768, 16


def widen(a):
    """A new array of a's values in the type the update computes in: float32 for float16 and
    bfloat16 storage (exact), else a copy in a's own dtype."""
    fmt = format_of(a.dtype)
    if fmt == "bfloat16":
        bits = a.view(np.uint16).astype(np.uint32)
        bits <<= 16             # in place: a 0-d array stays an array (<< gives a scalar)
        return bits.view(np.float32)
    if fmt == "float16":
        return a.astype(np.float32)
    return np.array(a, copy=True, subok=False)


def _nan_bits(x, shift, quiet):
    """For each NaN of float32 x: its sign, all-ones exponent, quiet bit and top payload bits
    at the width of the target format (shift: the bits dropped), as uint16."""
    u = x.view(np.uint32)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    if shift == 16:         # bfloat16: the top half, quieted
        return ((u >> np.uint32(16)) | np.uint32(quiet)).astype(np.uint16)
    payload = (u >> np.uint32(shift)) & np.uint32(0x3FF)
    return (sign | np.uint32(0x7C00 | quiet) | payload).astype(np.uint16)


def narrow(x, dtype):
    """x (computed values) rounded to storage of `dtype`, as a new array of that dtype."""
    dtype = np.dtype(dtype)
    fmt = format_of(dtype)
    if fmt not in ("float16", "bfloat16"):
        return x.astype(dtype, copy=False)
    shape = np.shape(x)     # ascontiguousarray makes a 0-d array 1-d
    x = np.ascontiguousarray(x, dtype=np.float32)
    nan = np.isnan(x)
    if fmt == "float16":
        with np.errstate(over="ignore"):    # beyond float16's range is inf, by design
            bits = x.astype(np.float16).view(np.uint16)
        bits = np.where(nan, _nan_bits(x, 13, 0x200), bits)
    else:
        u = x.view(np.uint32)
        # round to nearest even on the bit pattern: add 0x7fff plus the lowest kept bit
        rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
                   >> np.uint32(16)).astype(np.uint16)
        bits = np.where(nan, _nan_bits(x, 16, 0x40), rounded)
    return bits.astype(np.uint16).reshape(shape).view(dtype)


def full(shape, value, dtype):
    """An array of `shape` and `dtype`, every element `value` stored in that dtype."""
    return narrow(np.full(shape, value, dtype=np.float64 if format_of(dtype) == "float64"
                          else np.float32), dtype)


def grad_sumsq(grads):
    """(Σ g², all finite) over the non-None grads, in float64, in the kernels' order: per
    array, per chunk of CHUNK elements, element i of the chunk adds its square to running sum
    i mod LANES; the LANES sums are added pairwise (j + j + 8, then + 4, + 2, + 1); the chunk
    sums are added in order."""
    total, finite = 0.0, True
    for g in grads:
        if g is None:
            continue
        x = widen(g).astype(np.float64).ravel()
        finite = finite and bool(np.isfinite(x).all())
        for start in range(0, x.size, CHUNK):
            c = x[start:start + CHUNK]
            with np.errstate(over="ignore"):   # float64 squares may overflow to inf
                sq = np.concatenate([c * c, np.zeros(-c.size % LANES)]).reshape(-1, LANES)
            # a reduction over the outer axis adds row after row: each lane in element order
            # (tests/test_reference.py checks this against an explicit loop)
            lanes = np.add.reduce(sq, axis=0)
            width = LANES // 2
            while width:
                lanes = lanes[:width] + lanes[width:2 * width]
                width //= 2
            total += float(lanes[0])
    return total, finite


def sgd(param, grad, momentum_buffer=None, *, step, lr, momentum=0.0, dampening=0.0,
        nesterov=False, weight_decay=0.0, maximize=False):
    """One SGD update of `param` in place (torch.optim.SGD semantics).

    With g the gradient, negated when `maximize`, and t = step + 1 this array's update number:
        g ← g + weight_decay·p                            (if weight_decay ≠ 0)
        b ← g  at t = 1, else  b ← momentum·b + (1 − dampening)·g      (if momentum ≠ 0)
        g ← g + momentum·b  (nesterov)  or  g ← b                      (if momentum ≠ 0)
        p ← p − lr·g
    `momentum_buffer` (b) is written when momentum ≠ 0 and may be None otherwise.
    """
    real = param.dtype.type
    d = -grad if maximize else grad.copy()
    if weight_decay != 0:
        d = d + real(weight_decay) * param
    if momentum != 0:
        if step == 0:
            momentum_buffer[...] = d
        else:
            momentum_buffer[...] = real(momentum) * momentum_buffer + real(1.0 - dampening) * d
        if nesterov:
            d = d + real(momentum) * momentum_buffer
        else:
            d = momentum_buffer.copy()
    param[...] = param - real(lr) * d


def adagrad(param, grad, sum, *, step, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False):
    """One Adagrad update of `param` in place (torch.optim.Adagrad semantics).

    With t = step + 1, clr = lr / (1 + (t − 1)·lr_decay) (in float64, then cast):
        g ← ±g (+ weight_decay·p);  s ← s + g·g;  p ← p − (clr·g) / (√s + eps)
    `sum` (s) starts at initial_accumulator_value and is written.
    """
    real = param.dtype.type
    clr = lr / (1.0 + step * lr_decay)
    d = -grad if maximize else grad.copy()
    if weight_decay != 0:
        d = d + real(weight_decay) * param
    sum[...] = sum + d * d
    param[...] = param - (real(clr) * d) / (np.sqrt(sum) + real(eps))


def _lerp(a, x, w):
    """A running average `a` moved toward x with weight w as torch.optim moves Adam's m and
    centered RMSprop's average (torch's lerp), in a's dtype (w and 1 − w rounded to it):
        a + w·(x − a) if w < 0.5, else x − (x − a)·(1 − w)
    equal to (1 − w)·a + w·x up to rounding."""
    real = a.dtype.type
    w = real(w)
    if w < 0.5:
        return a + w * (x - a)
    return x - (x - a) * (real(1) - w)


def rmsprop(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, step, lr,
            alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    """One RMSprop update of `param` in place (torch.optim.RMSprop semantics).

        g ← ±g (+ weight_decay·p);  v ← α·v + ((1 − α)·g)·g
        centered: a ← lerp(a, g, 1 − α),  d = √(v − a·a) + eps;  else d = √v + eps
        momentum: b ← momentum·b + g/d,  p ← p − lr·b;  else p ← p − (lr·g)/d
    square_avg (v) is always written; grad_avg (a) when centered; momentum_buffer (b) when
    momentum ≠ 0. `step` is unused (RMSprop has no per-step correction); it is accepted so
    every reference function takes the same call.
    """
    real = param.dtype.type
    d = -grad if maximize else grad.copy()
    if weight_decay != 0:
        d = d + real(weight_decay) * param
    square_avg[...] = real(alpha) * square_avg + (real(1.0 - alpha) * d) * d
    if centered:
        grad_avg[...] = _lerp(grad_avg, d, 1.0 - alpha)
        denom = np.sqrt(square_avg - grad_avg * grad_avg) + real(eps)
    else:
        denom = np.sqrt(square_avg) + real(eps)
    if momentum != 0:
        momentum_buffer[...] = real(momentum) * momentum_buffer + d / denom
        param[...] = param - real(lr) * momentum_buffer
    else:
        param[...] = param - (real(lr) * d) / denom


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr,
         betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled_weight_decay=False):
    """One Adam update of `param` in place (torch.optim.Adam; AdamW when decoupled).

    With t = step + 1, in float64 then cast: step_size = lr / (1 − β1^t),
    inv_bc2_sqrt = 1 / √(1 − β2^t) (a multiply per element instead of torch's division: one
    division fewer in the kernels' divider-bound loop; equal to torch's to rounding). Then
        g ← ±g;  Adam: g ← g + weight_decay·p;  AdamW: p ← p·(1 − lr·weight_decay)
        m ← lerp(m, g, 1 − β1);  v ← β2·v + ((1 − β2)·g)·g
        v̂ = vmax ← max(vmax, v) with amsgrad (NaN propagates, as torch.maximum), else v̂ = v
        p ← p − (step_size·m) / (√v̂·inv_bc2_sqrt + eps)
    exp_avg (m), exp_avg_sq (v) are written, and max_exp_avg_sq (vmax) with amsgrad.
    """
    real = param.dtype.type
    beta1, beta2 = betas
    t = step + 1
    step_size = lr / (1.0 - beta1 ** t)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** t)
    d = -grad if maximize else grad.copy()
    if weight_decay != 0 and decoupled_weight_decay:
        param[...] = param * real(1.0 - lr * weight_decay)
    elif weight_decay != 0:
        d = d + real(weight_decay) * param
    exp_avg[...] = _lerp(exp_avg, d, 1.0 - beta1)
    exp_avg_sq[...] = real(beta2) * exp_avg_sq + (real(1.0 - beta2) * d) * d
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v_hat = max_exp_avg_sq
    else:
        v_hat = exp_avg_sq
    param[...] = param - (real(step_size) * exp_avg) / (np.sqrt(v_hat) * real(inv_bc2_sqrt) + real(eps))


def adamw(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False):
    """One AdamW update (torch.optim.AdamW): adam() with decoupled weight decay,
    p ← p·(1 − lr·weight_decay) before the Adam step."""
    adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, betas=betas,
         eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
         decoupled_weight_decay=True)
