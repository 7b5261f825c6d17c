"""Pictures of the seed experiments, the schedules and the optimizer comparison (optional:
matplotlib, `pip install 'lrcore[plot]'`)."""
import os

import numpy as np

import lrcore
from lrcore import demo, schedules

INSTALL_HINT = "plots need matplotlib: pip install 'lrcore[plot]'"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or ImportError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_schedule(schedule, steps, path):
    """schedule(0 .. steps−1) against the step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(steps)
    ax.plot(x, schedule(x))
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(repr(schedule), fontsize=7, wrap=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_seed_runs(path):
    """w and loss over the 40 steps of the seed's lr 0.2 / 1 / 0.0001 runs."""
    plt = pyplot()
    fig, (w_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for lr in (0.2, 1.0, 0.0001):
        trace = demo.descend(lr)
        steps = [k for k, *_ in trace]
        w_ax.plot(steps, [w for _, w, _, _ in trace], marker=".", label=f"lr = {lr:g}")
        loss_ax.plot(steps, [loss for _, _, loss, _ in trace], marker=".", label=f"lr = {lr:g}")
    w_ax.axhline(-1, color="gray", linewidth=0.8)
    w_ax.set(xlabel="step", ylabel="w", title="w (minimum at -1)")
    loss_ax.set(xlabel="step", ylabel="loss (w + 1)^2", title="loss", yscale="symlog")
    w_ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# The decays of the seeds, side by side over 1000 steps.
GALLERY = {
    "PiecewiseConstant": schedules.PiecewiseConstant([300, 600], [0.1, 0.05, 0.01]),
    "ExponentialDecay": schedules.ExponentialDecay(0.1, 100, 0.8),
    "ExponentialDecay staircase": schedules.ExponentialDecay(0.1, 100, 0.8, staircase=True),
    "NaturalExpDecay": schedules.NaturalExpDecay(0.1, 100, 0.3),
    "InverseTimeDecay": schedules.InverseTimeDecay(0.1, 100, 0.5),
    "PolynomialDecay": schedules.PolynomialDecay(0.1, 400, end_learning_rate=0.01, power=2.0),
    "PolynomialDecay cycle": schedules.PolynomialDecay(0.1, 300, end_learning_rate=0.01, cycle=True),
    "CosineDecay": schedules.CosineDecay(0.1, 1000, alpha=0.05),
    "CosineDecayRestarts": schedules.CosineDecayRestarts(0.1, 100, t_mul=2.0, m_mul=0.8),
    "LinearCosineDecay": schedules.LinearCosineDecay(0.1, 1000, num_periods=3.0),
    "NoisyLinearCosineDecay": schedules.NoisyLinearCosineDecay(0.1, 1000, initial_variance=0.05),
    "Warmup + CosineDecay": schedules.Warmup(schedules.CosineDecay(0.1, 900), 100),
}


def plot_schedules(path, steps=1000):
    plt = pyplot()
    fig, axes = plt.subplots(3, 4, figsize=(14, 8), sharex=True)
    x = np.arange(steps)
    for ax, (title, schedule) in zip(axes.flat, GALLERY.items()):
        ax.plot(x, schedule(x))
        ax.set_title(title, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


FLOOR = 1e-6


def plot_optimizers(path, kappa=1000.0):
    """Distance to the minimum per step on ½(x² + κy²), each optimizer at its best rate."""
    plt = pyplot()
    table = demo.compare_optimizers()
    problem = demo.quadratic(kappa)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, make in demo.OPTIMIZERS.items():
        best = table[name][f"quadratic k={kappa:g}"]
        lr = best[1] if best else min(demo.LR_GRID)
        start, gradient, minimum = problem
        p, state, errors = start.copy(), make(lr), []
        for _ in range(200):
            errors.append(np.max(np.abs(p - minimum)))
            if errors[-1] < FLOOR:          # converged: the rest would only be rounding
                break
            lrcore.step(p, gradient(p), state)
        ax.plot(errors, label=f"{name} (lr {lr:g})")
    ax.set(yscale="log", ylim=(FLOOR, 10), xlabel="step", ylabel="max |x - x*|",
           title=f"(x^2 + {kappa:g} y^2) / 2 from (2, 1.3), each at its best lr")
    ax.axhline(demo.TOLERANCE, color="gray", linewidth=0.8, linestyle="--")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_demo(directory):
    """The demo's pictures; returns the files written."""
    os.makedirs(directory, exist_ok=True)
    files = {"seed_runs.png": plot_seed_runs, "schedules.png": plot_schedules,
             "optimizers.png": plot_optimizers}
    written = []
    for name, draw in files.items():
        path = os.path.join(directory, name)
        draw(path)
        written.append(path)
    return written
