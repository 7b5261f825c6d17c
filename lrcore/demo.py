"""The demo: gradient descent on (w + 1)² at several rates, and why adaptive rates help.

1. Gradient descent on loss = (w + 1)² from w = 5 at several rates: too large a rate (1)
   swings between 5 and −7 forever, too small a one (0.0001) creeps, and 0.2 / 0.3 converge to
   the minimum w = −1, reproducing TensorFlow's printed traces of the same runs (tests/data/) digit for digit
   (all arithmetic in float32, as there).
2. The same descent under an exponentially decaying rate (0.1 · 0.99^step, staircase), as
   TensorFlow's `tf.train.exponential_decay` run of tests/data/, with the rate printed at each step.
3. SGD, momentum, Adagrad, RMSprop and Adam on that loss and on ill-conditioned quadratics
   ½(x² + κ·y²), each run for MAX_STEPS steps at every rate of a grid: a run converges at the
   first step after which it stays within TOLERANCE of the minimum to the end (a run that
   gets there and leaves again has not converged), and each optimizer is shown at its best
   rate. SGD's rate is capped by the steep direction (lr < 2/κ), so the flat one crawls; the
   adaptive optimizers scale each coordinate by its own gradient history and need the same
   number of steps whatever κ is. The closing sentences are comparisons read off the table.
"""
import math
import textwrap

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


# The decaying rate of TensorFlow's traced run (tests/data/seed001_exponential_decay.txt):
# LEARNING_RATE_BASE 0.1, LEARNING_RATE_DECAY 0.99, LEARNING_RATE_STEP 1, staircase.
SEED_DECAY = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.99, staircase=True)


def descend(lr, steps=40, w0=5.0):
    """Minimize (w + 1)² with lrcore.SGD(lr) from w0, in float32; lr may be a schedule.

    Returns [(k, w, loss, next_lr)] after each update k: w and loss as float32 values, and
    next_lr the rate the next update will use (what TensorFlow's trace prints after each step).
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


def error_trace(make, lr, problem, steps=MAX_STEPS):
    """max_i |p_i − p*_i| before the first update and after each of `steps` updates
    (float64): steps + 1 values. A run that overflows stays non-finite (inf − inf = NaN), so
    its remaining entries are NaN without being computed."""
    start, gradient, minimum = problem
    p = start.copy()
    state = make(lr)
    points = np.full((steps + 1, len(p)), np.nan)
    points[0] = p
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            lrcore.step(p, gradient(p), state)
            points[k] = p
            if not np.isfinite(p).all():
                break
        return np.max(np.abs(points - minimum), axis=1)


def converged_step(errors):
    """The first step k after which the run stays within TOLERANCE to its end:
    errors[j] < TOLERANCE for every j ≥ k. None if the run ends outside it (or diverged:
    NaN is never within)."""
    outside = np.flatnonzero(~(errors < TOLERANCE))
    if len(outside) == 0:
        return 0
    last = int(outside[-1])
    return None if last == len(errors) - 1 else last + 1


def optimizer_runs():
    """{optimizer: {problem: {lr: error_trace}}}: every optimizer at every lr of LR_GRID on
    every problem, each for the full MAX_STEPS."""
    return {name: {title: {lr: error_trace(make, lr, problem) for lr in LR_GRID}
                   for title, problem in PROBLEMS.items()}
            for name, make in OPTIMIZERS.items()}


def compare_optimizers(runs=None):
    """{optimizer: {problem: (steps, lr) or None}}: the fewest converged_step over LR_GRID
    (the smaller lr on a tie), None when no lr converges."""
    runs = optimizer_runs() if runs is None else runs
    table = {}
    for name, by_problem in runs.items():
        table[name] = {}
        for title, by_lr in by_problem.items():
            counts = [(converged_step(errors), lr) for lr, errors in by_lr.items()]
            reached = [count for count in counts if count[0] is not None]
            table[name][title] = min(reached) if reached else None
    return table


def format_comparison(table):
    titles = list(PROBLEMS)
    lines = [f"  {'':10}" + "".join(f"{t:>22}" for t in titles)]
    for name, row in table.items():
        cells = [f"{r[0]} (lr {r[1]:g})" if r else "not reached" for r in (row[t] for t in titles)]
        lines.append(f"  {name:10}" + "".join(f"{c:>22}" for c in cells))
    return lines


ADAPTIVE = ("Adagrad", "RMSprop", "Adam")
EASY, HARD = "quadratic k=10", "quadratic k=1000"


def _steps(cell):
    """A table cell's step count; not reached counts as more than any."""
    return cell[0] if cell else math.inf


def _count(cell):
    return f"{cell[0]} steps" if cell else "not reached"


def _join(words):
    words = list(words)
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def conclusions(table):
    """The closing sentences, each one a comparison read off `table` (so they cannot
    contradict it): SGD against conditioning, momentum against SGD, the adaptive optimizers
    against conditioning, and the fewest steps per problem."""
    sgd = table["SGD"]
    if _steps(sgd[HARD]) > _steps(sgd[EASY]):
        lines = [f"SGD takes longer on {HARD} ({_count(sgd[HARD])}) than on {EASY} "
                 f"({_count(sgd[EASY])}): its lr must stay below 2/k for the steep y, so the "
                 f"flat x crawls."]
    else:
        lines = [f"SGD does not take longer on {HARD} ({_count(sgd[HARD])}) than on {EASY} "
                 f"({_count(sgd[EASY])})."]
    momentum = table["Momentum"]
    verdicts = {"fewer": [], "more": [], "as many": []}
    for title in PROBLEMS:
        a, b = _steps(momentum[title]), _steps(sgd[title])
        verdicts["fewer" if a < b else "more" if a > b else "as many"].append(title)
    lines.append("Momentum 0.9 against SGD: " + "; ".join(
        f"{verdict} steps on {_join(titles)}" for verdict, titles in verdicts.items() if titles)
        + ".")
    same = [name for name in ADAPTIVE if _steps(table[name][HARD]) == _steps(table[name][EASY])]
    if same:
        lines.append(f"{_join(same)} take as many steps on {HARD} as on {EASY}: each divides a "
                     f"coordinate's step by that coordinate's own gradient scale, so k does not "
                     f"matter.")
    for name in ADAPTIVE:
        if name not in same:
            lines.append(f"{name} takes {_count(table[name][HARD])} on {HARD} but "
                         f"{_count(table[name][EASY])} on {EASY}.")
    fewest = []
    for title in PROBLEMS:
        best = min(_steps(row[title]) for row in table.values())
        if best < math.inf:
            names = [name for name, row in table.items() if _steps(row[title]) == best]
            fewest.append(f"{title}: {_join(names)} ({best})")
    lines.append("Fewest steps: " + "; ".join(fewest) + ".")
    return lines


def run(out=print):
    """Print the demo; returns optimizer_runs(), which the pictures draw."""
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
    out(f"Steps until every coordinate stays within {TOLERANCE:g} of the minimum to step {MAX_STEPS},")
    out(f"each optimizer at its best lr from {{{', '.join(f'{lr:g}' for lr in LR_GRID)}}}; float64.")
    out("A run that ends outside it, or overflows, is 'not reached'. Quadratic: (x^2 + k*y^2) / 2")
    out("from (2, 1.3).")
    runs = optimizer_runs()
    table = compare_optimizers(runs)
    for line in format_comparison(table):
        out(line)
    out("")
    for sentence in conclusions(table):
        for line in textwrap.wrap(sentence, 92):
            out(line)
    return runs
