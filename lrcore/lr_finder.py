"""The learning-rate range test: sweep the rate upward over a short run, watch the
loss, and pick a starting rate from the curve.

    result = lrcore.find_lr(fn, params, state)       # fn(params) -> (loss, grads)
    result.suggestion, result.suggestions; result.plot("lr.png")

The sweep runs on a copy of `state` (its lr replaced by the sweep's) and updates `params` in
place, then puts params back exactly as they were; `state` is never touched.

The suggestion rules are fastai's (`fastai.callback.schedule`: valley, minimum, steep, slide),
read on the smoothed loss after the same burn-in fastai's `lr_find` leaves out: the first
num_steps // 10 rates and the last 5.
"""
import math
import numbers

import numpy as np

import lrcore
from lrcore import _validate, optimizers

RULES = ("valley", "minimum", "steep", "slide")
SKIP_END = 5            # rates left out at the end: where the loss blows up (fastai)
MIN_POINTS = 10         # rates the rules need after the burn-in to say anything
SLIDE_SPAN = 15         # slide: compares the slopes this many points apart (fastai's lr_diff)
SLIDE_THRESH = 0.005    # slide: ... until they differ by at most this (fastai's thresh)
MIN_DECREASE = 0.01     # the loss must fall this fraction of its magnitude for a suggestion


def _valley(losses):
    """fastai's valley: index of the point ⌊L/3⌋ + ⌊L/6⌋ past the start of the longest
    decreasing subsequence (the first such, ending at index e, with L its length), where
    fastai takes e − L as the start (one before its earliest possible first point; −1, which
    Python reads as the last index, when it starts at 0 and L < 3)."""
    n = len(losses)
    lds = np.ones(n, dtype=np.int64)        # length of the longest decreasing run ending at i
    for i in range(1, n):
        lds[i] = 1 + np.max(lds[:i], where=losses[:i] > losses[i], initial=0)
    end = int(np.argmax(lds))
    start = end - int(lds[end])
    sections = (end - start) / 3
    return start + int(sections) + int(sections / 2)


def _slide(losses):
    """fastai's slide: index of the rate where, walking down from the end, the per-point
    slope first matches the slope SLIDE_SPAN points higher within SLIDE_THRESH."""
    grad = np.gradient(losses)
    right, left = -1, -1 - SLIDE_SPAN
    found = left
    while left >= -len(losses) and abs(grad[right] - grad[left]) > SLIDE_THRESH:
        found = left
        right -= 1
        left -= 1
    return found


def _suggest(lrs, losses):
    """{rule: lr or None} and {rule: reason or None} for a window of the curve whose rates
    are evenly spaced in log lr."""
    n = len(lrs)
    if n < MIN_POINTS:
        raise _Unreliable(n)
    start = losses[0]
    if not losses.min() < start - MIN_DECREASE * abs(start):
        raise _Flat()
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    out = {"valley": float(lrs[_valley(losses)]),
           "minimum": float(lrs[int(np.argmin(losses))] / 10),
           "steep": float(lrs[int(np.argmin(slopes))]),
           "slide": float(lrs[_slide(losses)]) if n > SLIDE_SPAN else None}
    reasons = dict.fromkeys(RULES)
    if out["slide"] is None:
        reasons["slide"] = (f"slide compares slopes {SLIDE_SPAN} rates apart and needs at least "
                            f"{SLIDE_SPAN + 1} rates after the burn-in, {n} are left to read")
    return out, reasons


class _Unreliable(Exception):
    def __init__(self, n):
        super().__init__(n)
        self.n = n


class _Flat(Exception):
    pass


def _even_in_log(lrs, losses):
    """The curve at rates evenly spaced in log lr: as it is when its rates already are (an
    "exp" sweep), else the loss interpolated linearly against log lr at as many rates."""
    logs = np.log(lrs)
    if len(lrs) < 3:
        return lrs, losses
    steps = np.diff(logs)
    if np.allclose(steps, steps.mean(), rtol=1e-6, atol=0):
        return lrs, losses
    grid = np.linspace(logs[0], logs[-1], len(lrs))
    return np.exp(grid), np.interp(grid, logs, losses)


class LRFinderResult:
    """The sweep's curve and the rules' reading of it.

    lrs: the rates tried; losses: the smoothed loss at each (a non-finite one ends the sweep);
    stopped_early: the loss diverged; rule: the rule asked for; suggestions: {rule: lr or
    None} for every rule; suggestion: the asked rule's lr, or None with `reason` saying why;
    steepest: suggestions["steep"].

    The rules read the curve without its first `skip_start` and last `skip_end` points.
    """

    def __init__(self, lrs, losses, stopped_early=False, suggest="valley", skip_start=0,
                 skip_end=SKIP_END):
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        if self.lrs.ndim != 1 or self.lrs.shape != self.losses.shape:
            raise ValueError(f"lrs and losses must be 1-d arrays of the same length, got shapes "
                             f"{self.lrs.shape} and {self.losses.shape}")
        if len(self.lrs) == 0:
            raise ValueError("fn returned no finite loss during the sweep")
        if not (np.all(self.lrs > 0) and np.all(np.diff(self.lrs) > 0)
                and np.all(np.isfinite(self.lrs)) and np.all(np.isfinite(self.losses))):
            raise ValueError("lrs must be finite, positive and increasing and losses finite")
        _check_rule(suggest)
        for name, value in (("skip_start", skip_start), ("skip_end", skip_end)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.stopped_early = bool(stopped_early)
        self.rule = suggest
        self.window = (int(skip_start), max(int(skip_start), len(self.lrs) - int(skip_end)))
        lo, hi = self.window
        try:
            self.suggestions, reasons = _suggest(*_even_in_log(self.lrs[lo:hi], self.losses[lo:hi]))
        except _Unreliable as short:
            diverged = " before the loss diverged" if self.stopped_early else ""
            reason = (f"too few rates to read: the sweep kept {len(self.lrs)}{diverged}, and "
                      f"without the first {lo} (burn-in) and the last {skip_end} {short.n} remain, "
                      f"fewer than {MIN_POINTS}; start lower (start_lr) or take more steps "
                      f"(num_steps)")
            self.suggestions, reasons = dict.fromkeys(RULES), dict.fromkeys(RULES, reason)
        except _Flat:
            first, last = self.lrs[lo], self.lrs[hi - 1]
            reason = (f"the smoothed loss did not decrease between lr {first:.3g} and {last:.3g} "
                      f"(never {MIN_DECREASE:.0%} below its value at {first:.3g}): no rate of the "
                      f"sweep trains (if the loss rose from the start, start lower: start_lr)")
            self.suggestions, reasons = dict.fromkeys(RULES), dict.fromkeys(RULES, reason)
        self.suggestion = self.suggestions[suggest]
        self.reason = reasons[suggest]
        self.steepest = self.suggestions["steep"]

    def plot(self, path):
        """Write the smoothed loss against lr (log axis) to `path`, marking the suggestion and
        naming its rule (or saying why there is none)."""
        from lrcore.plots import pyplot
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="tab:blue", label="smoothed loss")
        ax.set_xscale("log")
        low, start = self.losses.min(), self.losses[0]
        if start > low:      # the divergence at the end would flatten the informative part
            ax.set_ylim(low - 0.1 * (start - low), start + 0.5 * (start - low))
        logs = np.log(self.lrs)
        for rule, color in zip(RULES, ("tab:green", "tab:purple", "tab:red", "tab:orange")):
            lr = self.suggestions[rule]
            if lr is None:
                continue
            loss = np.interp(np.log(lr), logs, self.losses)
            if rule == self.rule:
                ax.axvline(lr, color=color, linestyle="--")
                ax.plot([lr], [loss], "o", color=color, markersize=8,
                        label=f"suggestion ({rule}): {lr:.2g}")
            else:
                ax.plot([lr], [loss], "x", color=color, label=f"{rule}: {lr:.2g}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        if self.suggestion is None:
            ax.set_title(f"LR range test: no {self.rule} suggestion", fontsize=10)
            ax.text(0.02, 0.02, self.reason, transform=ax.transAxes, fontsize=7, wrap=True,
                    va="bottom")
        else:
            ax.set_title(f"LR range test: {self.rule} suggests {self.suggestion:.2g}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def __repr__(self):
        shown = "None" if self.suggestion is None else f"{self.suggestion:.3g}"
        return (f"LRFinderResult(rule={self.rule!r}, suggestion={shown}, steps={len(self.lrs)}, "
                f"stopped_early={self.stopped_early})")


def _check_rule(suggest):
    if suggest not in RULES:
        raise ValueError(f"suggest must be one of {', '.join(map(repr, RULES))}, got {suggest!r}")


def _positive_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _average_grads(calls):
    """The element-wise mean of the grads of several fn calls, in each grad's dtype."""
    first = calls[0]
    if len(calls) == 1:
        return first
    single = isinstance(first, np.ndarray)
    lists = [[g] if single else g for g in calls]
    for grads in lists:
        if not isinstance(grads, (list, tuple)) or len(grads) != len(lists[0]):
            raise ValueError("fn must return grads of the same structure at every call")
    out = []
    for i, column in enumerate(zip(*lists)):
        if all(g is None for g in column):
            out.append(None)
            continue
        if any(g is None for g in column):
            raise ValueError(f"fn returned grads[{i}] as None at some calls and not others")
        arrays = [np.asarray(g) for g in column]
        total = np.zeros(arrays[0].shape, dtype=np.float64)
        for a in arrays:
            total += a
        out.append((total / len(arrays)).astype(arrays[0].dtype))
    return out[0] if single else out


def find_lr(fn, params, state, start_lr=1e-7, end_lr=10.0, num_steps=100, mode="exp", *,
            suggest="valley", diverge_threshold=4.0, smoothing=0.98, batches_per_lr=1):
    """Run an LR range test: num_steps updates at rates from start_lr to end_lr, spaced
    geometrically ("exp") or evenly ("linear"). At each rate fn(params) -> (loss, grads) is
    called batches_per_lr times at the same params; the losses and the grads are averaged
    and one step is taken. The losses are smoothed by a bias-corrected running average of
    weight `smoothing`. The sweep stops early once the loss diverges: a NaN or infinite loss
    (left out of the result), or a smoothed loss above its minimum by (diverge_threshold −
    1)·|minimum|. params and state are as they were afterwards."""
    if not callable(fn):
        raise TypeError(f"fn must be a callable params -> (loss, grads), got {type(fn).__name__}")
    arrays = [params] if isinstance(params, np.ndarray) else params
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"params must be a numpy.ndarray or a list/tuple of them, got "
                        f"{type(params).__name__}")
    if not arrays:
        raise ValueError("params must hold at least one array, got an empty sequence")
    for i, p in enumerate(arrays):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__}")
    if not isinstance(state, optimizers.Optimizer):
        raise TypeError(f"state must be an lrcore optimizer state, got {type(state).__name__}")
    start_lr = _validate.real(start_lr, "start_lr")
    end_lr = _validate.real(end_lr, "end_lr")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"start_lr and end_lr must satisfy 0 < start_lr < end_lr, got "
                         f"{start_lr!r} and {end_lr!r}")
    num_steps = _positive_int(num_steps, "num_steps", 2)
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    _check_rule(suggest)
    if isinstance(diverge_threshold, bool) or not isinstance(diverge_threshold, numbers.Real):
        raise TypeError(f"diverge_threshold must be a real number, got "
                        f"{type(diverge_threshold).__name__}")
    if not float(diverge_threshold) > 1:        # NaN fails too; math.inf never stops
        raise ValueError(f"diverge_threshold must be a number > 1 (math.inf: never stop on a "
                         f"rising loss), got {diverge_threshold!r}")
    diverge_threshold = float(diverge_threshold)
    smoothing = _validate.real(smoothing, "smoothing", high=1.0, high_open=True)
    batches_per_lr = _positive_int(batches_per_lr, "batches_per_lr", 1)

    rates = (np.geomspace(start_lr, end_lr, num_steps) if mode == "exp"
             else np.linspace(start_lr, end_lr, num_steps))
    saved = [np.array(p, copy=True) for p in arrays]
    trial = type(state)()
    trial.load_state_dict(state.state_dict())
    lrs, losses, average, best, stopped_early = [], [], 0.0, math.inf, False
    try:
        for rate in rates:
            calls = [fn(params) for _ in range(batches_per_lr)]
            loss = sum(float(c[0]) for c in calls) / batches_per_lr
            if not math.isfinite(loss):
                stopped_early = True
                break
            average = smoothing * average + (1 - smoothing) * loss
            smoothed = average / (1 - smoothing ** (len(losses) + 1))
            lrs.append(float(rate))
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed - best > (diverge_threshold - 1) * abs(best):
                stopped_early = True
                break
            trial.lr = float(rate)
            lrcore.step(params, _average_grads([c[1] for c in calls]), trial)
    finally:
        for p, s in zip(arrays, saved):
            p[...] = s
    return LRFinderResult(lrs, losses, stopped_early, suggest=suggest,
                          skip_start=num_steps // 10)
