"""numpy reference implementations: the ground truth every compiled kernel is tested against.

One function per optimizer, updating one array in place, written for reading rather than speed
(the shape of torch.optim's `_single_tensor_*` functions). They follow ../API.md exactly:
per-call scalars are computed in float64 and cast once to the array's dtype, then every
element operation runs in that dtype, one numpy operation at a time. The compiled kernels
(src/kernels_impl.h) perform the same operations in the same order, so on the same inputs
the two agree bit for bit.
"""
import numpy as np


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
