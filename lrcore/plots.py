"""Pictures of the demo's gradient-descent runs, the schedules and the optimizer comparison (optional:
matplotlib, `pip install 'lrcore[plot]'`)."""
import os
import textwrap

import numpy as np

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


# The seed runs, each in its own colour, marker and line style: lr 1 sits on w = 5 every other
# step and at loss 36 throughout, where lr 0.0001 creeps, so the two must differ in shape too.
SEED_STYLES = (
    (0.2, dict(color="tab:blue", marker="o", markersize=4, linestyle="-")),
    (0.3, dict(color="tab:orange", marker="s", markersize=4, linestyle="--")),
    (1.0, dict(color="tab:red", marker="o", markersize=9, markerfacecolor="none",
               linestyle=":", linewidth=1)),
    (0.0001, dict(color="tab:green", marker="x", markersize=5, linestyle="-", linewidth=2.5)),
    (demo.SEED_DECAY, dict(color="tab:purple", marker="^", markersize=4, linestyle="-.")),
)


def seed_label(lr):
    return "lr = 0.1 * 0.99^step (decay)" if isinstance(lr, schedules.LearningRateSchedule) \
        else f"lr = {lr:g}"


def save(fig, path):
    """Write `fig` to `path` and release it."""
    try:
        fig.savefig(path)
    finally:
        pyplot().close(fig)


def plot_seed_runs(path):
    save(seed_runs_figure(), path)


def seed_runs_figure():
    """w and the loss over the 40 steps of every seed run (lr 0.2, 0.3, 1, 0.0001 and the
    decaying rate). The loss is on a log axis, with a strip under it for losses that are
    exactly 0 (float32 w reaches −1 exactly at lr 0.3), and a linear close-up near 36
    separates lr 1 (stuck at 36) from lr 0.0001 (creeping down from 36)."""
    plt = pyplot()
    fig = plt.figure(figsize=(15, 5.5), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=(9, 1))
    w_ax = fig.add_subplot(grid[:, 0])
    loss_ax = fig.add_subplot(grid[0, 1])
    zero_ax = fig.add_subplot(grid[1, 1], sharex=loss_ax)
    top_ax = fig.add_subplot(grid[:, 2])
    for lr, style in SEED_STYLES:
        trace = demo.descend(lr)
        steps = np.array([k for k, *_ in trace])
        w = np.array([w for _, w, _, _ in trace])
        loss = np.array([loss for _, _, loss, _ in trace], dtype=np.float64)
        label = seed_label(lr)
        w_ax.plot(steps, w, label=label, **style)
        loss_ax.plot(steps, np.where(loss > 0, loss, np.nan), **style)
        zero = loss == 0
        zero_ax.plot(steps[zero], loss[zero], **dict(style, linestyle="none"))
        if loss.min() > 30:
            top_ax.plot(steps, loss, **style)
    w_ax.axhline(-1, color="gray", linewidth=0.8)
    w_ax.set(xlabel="step", ylabel="w", title="w (minimum at w = -1)")
    loss_ax.set(yscale="log", ylabel="loss (w + 1)^2", title="loss (log scale; exact 0 below)")
    loss_ax.tick_params(bottom=False, labelbottom=False)
    loss_ax.spines["bottom"].set_visible(False)
    zero_ax.set(ylim=(-1, 1), yticks=[0], yticklabels=["0"], xlabel="step")
    zero_ax.spines["top"].set_visible(False)
    for ax, y in ((loss_ax, 0), (zero_ax, 1)):         # the axis break between log and 0
        ax.plot([-0.01, 0.01], [y - 0.02, y + 0.02], transform=ax.transAxes, color="k",
                clip_on=False, linewidth=0.8)
    top_ax.set(xlabel="step", ylabel="loss (w + 1)^2",
               title="loss near 36 (linear): lr 1 stays, lr 0.0001 creeps")
    fig.suptitle("Gradient descent on (w + 1)^2 from w = 5: lrcore.SGD in float32, 40 steps")
    fig.legend(loc="outside lower center", ncols=len(SEED_STYLES))
    return fig


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


def schedule_parameters(schedule, width=46):
    """repr(schedule) without the class name, wrapped to `width` columns."""
    text = repr(schedule)
    return textwrap.fill(text[text.index("(") + 1:-1], width, break_long_words=False)


# The schedules people train with today (warmup + cosine / linear, warmup-stable-decay,
# one-cycle, cyclical rates, inverse square root, Hugging Face's names), over 1000 steps.
GALLERY_TODAY = {
    "Linear": schedules.Linear(0.1, 0.001, 800),
    "get('linear') (Hugging Face)": schedules.get("linear", 0.1, num_warmup_steps=100,
                                                  num_training_steps=1000),
    "CosineDecay, Keras 3 warmup": schedules.CosineDecay(0.0, 900, warmup_target=0.1,
                                                         warmup_steps=100),
    "WarmupStableDecay linear": schedules.WarmupStableDecay(0.1, 100, 600, 300),
    "WarmupStableDecay 1-sqrt": schedules.WarmupStableDecay(0.1, 100, 500, 400, decay="1-sqrt",
                                                            end_learning_rate=0.01),
    "OneCycle (torch's OneCycleLR)": schedules.OneCycle(0.1, 1000),
    "OneCycle three_phase linear": schedules.OneCycle(0.1, 1000, anneal="linear",
                                                      three_phase=True),
    "Cyclic triangular2 (torch's CyclicLR)": schedules.Cyclic(0.01, 0.1, 100, mode="triangular2"),
    "Cyclic exp_range": schedules.Cyclic(0.01, 0.1, 100, mode="exp_range", gamma=0.998),
    "InverseSqrt": schedules.InverseSqrt(0.1, 100),
    "get('cosine_with_restarts')": schedules.get("cosine_with_restarts", 0.1,
                                                 num_warmup_steps=50, num_training_steps=1000,
                                                 num_cycles=3),
    "Sequence (optax join_schedules)": schedules.Sequence(
        [schedules.Linear(0.0, 0.1, 100), 0.1, schedules.CosineDecay(0.1, 500)], [100, 500]),
}


def plot_schedules(path, steps=1000):
    save(schedules_figure(steps), path)


def plot_schedules_today(path, steps=1000):
    save(schedules_figure(steps, today=True), path)


def schedules_figure(steps=1000, today=False):
    """Every schedule of GALLERY (GALLERY_TODAY with `today`) against the step, one panel
    each, titled with its name and parameters."""
    gallery, title = ((GALLERY_TODAY, "Schedules in use today, in lrcore.schedules") if today
                      else (GALLERY, "The learning-rate schedules of lrcore.schedules"))
    plt = pyplot()
    fig, axes = plt.subplots(3, 4, figsize=(16, 11), sharex=True, layout="constrained")
    x = np.arange(steps)
    for ax, (name, schedule) in zip(axes.flat, gallery.items()):
        ax.plot(x, schedule(x))
        ax.set_title(f"{name}\n{schedule_parameters(schedule)}", fontsize=8)
        ax.set_ylabel("learning rate")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"{title}, steps 0 to {steps - 1}")
    return fig


FLOOR = 1e-12        # errors below it (an exact 0 included) are drawn on it
CEILING = 1e8        # above the axes; clipping there keeps an overflowed run finite for the log axis
OPTIMIZER_STYLES = {
    "SGD": dict(color="tab:blue", linestyle="-", marker="o"),
    "Momentum": dict(color="tab:orange", linestyle="--", marker="s"),
    "Adagrad": dict(color="tab:green", linestyle="-.", marker="^"),
    "RMSprop": dict(color="tab:red", linestyle=":", marker="D"),
    "Adam": dict(color="tab:purple", linestyle=(0, (5, 1, 1, 1, 1, 1)), marker="v"),
}
STEP_TICKS = (0, 1, 10, 100, 1000, 2000)


def first_within(errors):
    """The first step within TOLERANCE (whether or not the run stays), or None."""
    inside = np.flatnonzero(errors < demo.TOLERANCE)
    return int(inside[0]) if len(inside) else None


def illustrations(by_optimizer):
    """Two runs of one problem worth showing beside the best ones, as (name, lr, label):
    SGD at the smallest grid lr where it diverges, and the run that gets within tolerance
    earliest but leaves it again (what counting the first arrival would have picked)."""
    shown = []
    diverging = [lr for lr, e in by_optimizer["SGD"].items() if not e[-1] <= e[0]]
    if diverging:
        shown.append(("SGD", min(diverging), f"SGD lr {min(diverging):g}: diverges"))
    leaving = [(first_within(e), name, lr) for name, by_lr in by_optimizer.items()
               for lr, e in by_lr.items()
               if first_within(e) is not None and demo.converged_step(e) is None]
    if leaving:
        step, name, lr = min(leaving)
        shown.append((name, lr, f"{name} lr {lr:g}: within {demo.TOLERANCE:g} at step {step}, "
                                f"leaves again"))
    return shown


def plot_optimizers(path, runs=None):
    save(optimizers_figure(runs), path)


def optimizers_figure(runs=None):
    """max |x − x*| over the whole run (MAX_STEPS) on each problem of the demo, each optimizer
    at the lr of the demo's table (★ at its converged step; a 'not reached' optimizer at its
    lr of the smallest final error), with SGD diverging and a run that leaves the tolerance
    again drawn thin and grey-edged for contrast."""
    plt = pyplot()
    runs = demo.optimizer_runs() if runs is None else runs
    table = demo.compare_optimizers(runs)
    fig, axes = plt.subplots(1, len(demo.PROBLEMS), figsize=(18, 6.5), sharey=True,
                             layout="constrained")
    steps = np.arange(demo.MAX_STEPS + 1)
    for ax, title in zip(axes, demo.PROBLEMS):
        for name, style in OPTIMIZER_STYLES.items():
            by_lr = runs[name][title]
            best = table[name][title]
            if best:
                lr, label = best[1], f"{name} lr {best[1]:g}: converged at step {best[0]}"
            else:
                lr = min(by_lr, key=lambda r: np.nan_to_num(by_lr[r][-1], nan=np.inf))
                label = f"{name} lr {lr:g}: not reached (closest)"
            errors = np.clip(by_lr[lr], FLOOR, CEILING)
            ax.plot(steps, errors, label=label, markevery=0.08, markersize=5, **style)
            if best:
                ax.plot(best[0], errors[best[0]], marker="*", markersize=14, color=style["color"],
                        markeredgecolor="k", linestyle="none")
        for name, lr, label in illustrations({n: runs[n][title] for n in OPTIMIZER_STYLES}):
            style = dict(OPTIMIZER_STYLES[name], linestyle="-", linewidth=0.8, alpha=0.6)
            ax.plot(steps, np.clip(runs[name][title][lr], FLOOR, CEILING), label=label,
                    markevery=0.08, markersize=4, markerfacecolor="none", **style)
        ax.axhline(demo.TOLERANCE, color="gray", linewidth=0.8, linestyle="--",
                   label=f"tolerance {demo.TOLERANCE:g}")
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xticks(STEP_TICKS, [str(t) for t in STEP_TICKS])
        ax.set(xlim=(0, demo.MAX_STEPS), yscale="log", ylim=(FLOOR / 3, 1e4),
               xlabel="step (log scale past 1)", title=title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    axes[0].set_ylabel(f"max |x - x*|  (below {FLOOR:g}, or 0: drawn at {FLOOR:g})")
    fig.suptitle(f"Whole runs of {demo.MAX_STEPS} steps, each optimizer at its lr of the table "
                 f"(star: the step from which it stays within {demo.TOLERANCE:g})")
    return fig


def plot_demo(directory, runs=None):
    """The demo's pictures; returns the files written. `runs`: demo.optimizer_runs(), if
    already computed."""
    os.makedirs(directory, exist_ok=True)
    files = {"seed_runs.png": plot_seed_runs, "schedules.png": plot_schedules,
             "schedules_today.png": plot_schedules_today,
             "optimizers.png": lambda path: plot_optimizers(path, runs)}
    written = []
    for name, draw in files.items():
        path = os.path.join(directory, name)
        draw(path)
        written.append(path)
    return written
