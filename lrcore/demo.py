"""The seed experiments, and why adaptive rates help.

1. Gradient descent on loss = (w + 1)² from w = 5 at several rates: too large a rate (1)
   swings between 5 and −7 forever, too small a one (0.0001) creeps, and 0.2 / 0.3 converge to
   the minimum w = −1, reproducing the tutorial's printed TensorFlow traces digit for digit
   (all arithmetic in float32, as there).
2. The same descent under an exponentially decaying rate (0.1 · 0.99^step, staircase), the
   tutorial's `tf.train.exponential_decay` run, with the rate printed at each step.
3. SGD, momentum, Adagrad, RMSprop and Adam on that loss and on ill-conditioned quadratics
   ½(x² + κ·y²): steps to reach the minimum, each at its best rate from a grid. SGD's rate is
   capped by the steep direction (lr < 2/κ), so the flat one crawls; the adaptive optimizers
   scale each coordinate by its own gradient history and need the same number of steps
   whatever κ is.
"""
import numpy as np

import lrcore
from lrcore import schedules

# (lr, what the reader should see)
RUNS = (
    (0.2, "converges to the minimum w = -1"),
    (0.3, "converges faster"),
    (1.0, "too large: w swings between 5 and -7, the loss never falls"),
    (0.0001, "too small: w creeps, the loss barely moves"),
)
SHOWN_STEPS = (0, 1, 2, 3, 4, 5, 9, 19, 29, 39)


# The tutorial's decaying rate: LEARNING_RATE_BASE 0.1, LEARNING_RATE_DECAY 0.99,
# LEARNING_RATE_STEP 1, staircase.
SEED_DECAY = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.99, staircase=True)


def descend(lr, steps=40, w0=5.0):
    """Minimize (w + 1)² with lrcore.SGD(lr) from w0, in float32; lr may be a schedule.

    Returns [(k, w, loss, next_lr)] after each update k: w and loss as float32 values, and
    next_lr the rate the next update will use (what the tutorial prints after each step).
    """
    w = np.array([w0], dtype=np.float32)
    state = lrcore.SGD(lr=lr)
    trace = []
    for k in range(steps):
        grad = np.float32(2) * w + np.float32(2)      # d/dw (w + 1)²
        lrcore.step(w, grad, state)
        trace.append((k, w[0], np.square(w[0] + np.float32(1)), state.current_lr))
    return trace


def format_table(trace, shown=SHOWN_STEPS, with_lr=False):
    lines = [f"  {'step':>5}  {'w':>12}  {'loss':>12}" + (f"  {'next lr':>10}" if with_lr else "")]
    lines += [f"  {k:>5}  {w:>12f}  {loss:>12f}" + (f"  {lr:>10f}" if with_lr else "")
              for k, w, loss, lr in trace if k in shown]
    return lines


OPTIMIZERS = {
    "SGD": lambda lr: lrcore.SGD(lr=lr),
    "Momentum": lambda lr: lrcore.SGD(lr=lr, momentum=0.9),
    "Adagrad": lambda lr: lrcore.Adagrad(lr=lr),
    "RMSprop": lambda lr: lrcore.RMSprop(lr=lr),
    "Adam": lambda lr: lrcore.Adam(lr=lr),
}
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TOLERANCE = 1e-3
MAX_STEPS = 2000


def quadratic(kappa):
    """½(x² + κ·y²) from (2, 1.3): (start, gradient, minimum)."""
    scale = np.array([1.0, kappa])
    return np.array([2.0, 1.3]), lambda p: scale * p, np.zeros(2)


PROBLEMS = {
    "(w + 1)^2 from 5": (np.array([5.0]), lambda p: 2 * p + 2, np.array([-1.0])),
    "quadratic k=10": quadratic(10.0),
    "quadratic k=1000": quadratic(1000.0),
}


def steps_to_converge(make, lr, problem):
    """Steps until every coordinate is within TOLERANCE of the minimum (float64), or None if
    that takes more than MAX_STEPS or the run diverges."""
    start, gradient, minimum = problem
    p = start.copy()
    state = make(lr)
    for k in range(MAX_STEPS + 1):
        error = np.max(np.abs(p - minimum))
        if error < TOLERANCE:
            return k
        if not error < 1e6:
            return None
        lrcore.step(p, gradient(p), state)
    return None


def compare_optimizers():
    """{optimizer: {problem: (steps, lr) at the best lr of LR_GRID, or None}}."""
    table = {}
    for name, make in OPTIMIZERS.items():
        table[name] = {}
        for title, problem in PROBLEMS.items():
            runs = [(steps_to_converge(make, lr, problem), lr) for lr in LR_GRID]
            reached = [run for run in runs if run[0] is not None]
            table[name][title] = min(reached) if reached else None
    return table


def format_comparison(table):
    titles = list(PROBLEMS)
    lines = [f"  {'':10}" + "".join(f"{t:>22}" for t in titles)]
    for name, row in table.items():
        cells = [f"{r[0]} (lr {r[1]:g})" if r else "not reached" for r in (row[t] for t in titles)]
        lines.append(f"  {name:10}" + "".join(f"{c:>22}" for c in cells))
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
    out("")
    out(f"lr = {SEED_DECAY!r}:")
    out("the rate shrinks 1 % a step (evaluated inside the compiled step), so w still converges")
    for line in format_table(descend(SEED_DECAY), with_lr=True):
        out(line)
    out("")
    out(f"Steps until every coordinate is within {TOLERANCE:g} of the minimum, each optimizer at")
    out(f"its best lr from {{{', '.join(f'{lr:g}' for lr in LR_GRID)}}}, at most {MAX_STEPS} steps,")
    out("float64. Quadratic: (x^2 + k*y^2) / 2 from (2, 1.3).")
    for line in format_comparison(compare_optimizers()):
        out(line)
    out("SGD must keep lr < 2/k for the steep y, so x crawls; momentum helps; Adagrad, RMSprop")
    out("and Adam divide each coordinate's step by its own gradient scale, so k does not matter.")
