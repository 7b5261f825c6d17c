"""The learning-rate range test: sweep the rate upward over a short run, watch the
loss, and pick a starting rate from the curve.

    result = lrcore.find_lr(fn, params, state)       # fn(params) -> (loss, grads)
    result.suggestion, result.steepest; result.plot("lr.png")

The sweep runs on a copy of `state` (its lr replaced by the sweep's) and updates `params` in
place, then puts params back exactly as they were; `state` is never touched.
"""
import math

import numpy as np

import lrcore
from lrcore import _validate, optimizers

SMOOTHING = 0.98      # weight of the running loss average (bias-corrected), as fastai
DIVERGED = 4.0        # stop once the smoothed loss exceeds its minimum by (DIVERGED − 1)·|min|


class LRFinderResult:
    """lrs: the rates tried; losses: the smoothed loss at each (a non-finite one ends the sweep);
    suggestion: the rate of the minimum smoothed loss / 10; steepest: the rate where the
    smoothed loss falls fastest against log(lr); stopped_early: the loss diverged."""

    def __init__(self, lrs, losses, stopped_early):
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.stopped_early = stopped_early
        if len(self.lrs) == 0:
            raise ValueError("fn returned no finite loss during the sweep")
        self.suggestion = float(self.lrs[np.argmin(self.losses)] / 10)
        if len(self.lrs) > 2:
            slope = np.gradient(self.losses, np.log(self.lrs))
            self.steepest = float(self.lrs[np.argmin(slope)])
        else:
            self.steepest = float(self.lrs[0])

    def plot(self, path):
        """Write the smoothed loss against lr (log axis) to `path`, marking both picks."""
        from lrcore.plots import pyplot
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="tab:blue", label="smoothed loss")
        ax.set_xscale("log")
        low, start = self.losses.min(), self.losses[0]
        if start > low:      # the divergence at the end would flatten the informative part
            ax.set_ylim(low - 0.1 * (start - low), start + 0.5 * (start - low))
        ax.axvline(self.suggestion, color="tab:green", linestyle="--",
                   label=f"suggestion {self.suggestion:.2g} (min / 10)")
        ax.axvline(self.steepest, color="tab:red", linestyle=":",
                   label=f"steepest descent {self.steepest:.2g}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("LR range test")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def __repr__(self):
        return (f"LRFinderResult(suggestion={self.suggestion:.3g}, steepest={self.steepest:.3g}, "
                f"steps={len(self.lrs)}, stopped_early={self.stopped_early})")


def find_lr(fn, params, state, start_lr=1e-7, end_lr=10.0, num_steps=100, mode="exp"):
    """Run an LR range test: num_steps updates at rates from start_lr to end_lr, spaced
    geometrically ("exp") or evenly ("linear"), each after evaluating fn(params) ->
    (loss, grads). The losses are smoothed by a bias-corrected running average. The sweep
    stops early once the loss diverges: a NaN or infinite loss (left out of the result), or a
    smoothed loss above DIVERGED times its minimum. params and state are as they were
    afterwards."""
    if not callable(fn):
        raise TypeError(f"fn must be a callable params -> (loss, grads), got {type(fn).__name__}")
    if not isinstance(state, optimizers.Optimizer):
        raise TypeError(f"state must be an lrcore optimizer state, got {type(state).__name__}")
    start_lr = _validate.real(start_lr, "start_lr")
    end_lr = _validate.real(end_lr, "end_lr")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"start_lr and end_lr must satisfy 0 < start_lr < end_lr, got "
                         f"{start_lr!r} and {end_lr!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if mode == "exp":
        rates = np.geomspace(start_lr, end_lr, num_steps)
    elif mode == "linear":
        rates = np.linspace(start_lr, end_lr, num_steps)
    else:
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")

    arrays = params if isinstance(params, (list, tuple)) else [params]
    saved = [np.array(p, copy=True) for p in arrays]
    trial = type(state)()
    trial.load_state_dict(state.state_dict())
    lrs, losses, average, best, stopped_early = [], [], 0.0, math.inf, False
    try:
        for rate in rates:
            loss, grads = fn(params)
            loss = float(loss)
            if not math.isfinite(loss):
                stopped_early = True
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (len(losses) + 1))
            lrs.append(float(rate))
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed - best > (DIVERGED - 1) * abs(best):
                stopped_early = True
                break
            trial.lr = float(rate)
            lrcore.step(params, grads, trial)
    finally:
        for p, s in zip(arrays, saved):
            p[...] = s
    return LRFinderResult(lrs, losses, stopped_early)
