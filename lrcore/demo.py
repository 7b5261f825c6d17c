"""The seed experiments: gradient descent on loss = (w + 1)² from w = 5 at several rates.

Too large a rate (1) swings between 5 and −7 forever, too small a one (0.0001) creeps, and
0.2 / 0.3 converge to the minimum w = −1, reproducing the tutorial's printed TensorFlow
traces digit for digit (all arithmetic in float32, as there).
"""
import numpy as np

import lrcore

# (lr, what the reader should see)
RUNS = (
    (0.2, "converges to the minimum w = -1"),
    (0.3, "converges faster"),
    (1.0, "too large: w swings between 5 and -7, the loss never falls"),
    (0.0001, "too small: w creeps, the loss barely moves"),
)
SHOWN_STEPS = (0, 1, 2, 3, 4, 5, 9, 19, 29, 39)


def descend(lr, steps=40, w0=5.0):
    """Minimize (w + 1)² with lrcore.SGD(lr) from w0, in float32.

    Returns [(k, w, loss)] after each update k, w and loss as float32 values.
    """
    w = np.array([w0], dtype=np.float32)
    state = lrcore.SGD(lr=lr)
    trace = []
    for k in range(steps):
        grad = np.float32(2) * w + np.float32(2)      # d/dw (w + 1)²
        lrcore.step(w, grad, state)
        trace.append((k, w[0], np.square(w[0] + np.float32(1))))
    return trace


def format_table(trace, shown=SHOWN_STEPS):
    lines = [f"  {'step':>5}  {'w':>12}  {'loss':>12}"]
    lines += [f"  {k:>5}  {w:>12f}  {loss:>12f}" for k, w, loss in trace if k in shown]
    return lines


def run(out=print):
    out(f"lrcore {lrcore.__version__} demo (backend: {lrcore.backend})")
    out("")
    out("Gradient descent on loss = (w + 1)^2, gradient 2w + 2, from w = 5; lrcore.SGD, float32,")
    out("40 steps. The minimum is at w = -1.")
    for lr, meaning in RUNS:
        out("")
        out(f"lr = {lr:g}: {meaning}")
        for line in format_table(descend(lr)):
            out(line)
