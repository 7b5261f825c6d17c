"""Learning-rate schedules: TensorFlow v1 decays / Keras 3 schedules, and Hugging Face
transformers' (Linear, InverseSqrt, WarmupStableDecay; get() for get_scheduler's names),
evaluated in compiled code.

Each schedule is a small object whose value at step s (an int >= 0) is given by the formula in
its docstring. Passed as an optimizer's `lr`, a schedule is evaluated in C inside
lrcore.step from the state's step count (src/schedules.h): no Python call per step. Calling
it, `schedule(step)` or vectorized `schedule(np.arange(n))`, runs the same C code, so the
values a user plots are the values the step uses. Under the numpy backend both use the numpy
evaluation written beside each formula here (`_reference`), which the tests hold to the same
closed forms.

    lr = ExponentialDecay(0.1, decay_steps=1, decay_rate=0.99, staircase=True)
    lr(0), lr(np.arange(5))             # 0.1, array([0.1, 0.099, 0.09801, ...])
    state = lrcore.SGD(lr=lr)

Every schedule has get_config() / from_config(config) (Keras style) and a repr that
rebuilds it; serialize() / deserialize() handle any of them, Warmup's inner schedule and
Sequence's pieces included.
"""
import math
import numbers
import reprlib

import numpy as np

from lrcore import _backend, _validate

__all__ = ["LearningRateSchedule", "Constant", "PiecewiseConstant", "ExponentialDecay",
           "NaturalExpDecay", "InverseTimeDecay", "PolynomialDecay", "CosineDecay",
           "CosineDecayRestarts", "LinearCosineDecay", "NoisyLinearCosineDecay", "Warmup",
           "serialize", "deserialize",
           "Linear", "InverseSqrt", "WarmupStableDecay", "get",
           "OneCycle", "Cyclic", "Sequence"]


class LearningRateSchedule:
    """Base of the built-in schedules: a pure function of the step."""

    _arguments = ()     # constructor arguments, in order: what get_config() returns

    def __call__(self, step):
        """The rate at `step`: an int gives a float, an integer ndarray a float64 ndarray."""
        steps, scalar = _as_steps(step)
        if _backend.active == "cython":
            compiled = self._compiled()
            if scalar:
                return compiled.value(int(steps))
            return compiled.values(steps)
        with np.errstate(over="ignore", under="ignore"):    # inf / 0 are values, as in C
            values = self._reference(steps.reshape(-1)).reshape(steps.shape)
        return float(values[()]) if scalar else values

    def __getstate__(self):
        """For pickle and copy: the schedule's fields, without the compiled evaluator (a C
        struct, rebuilt on first use), so that a schedule in use (torch deep-copies param
        groups in load_state_dict) copies."""
        state = self.__dict__.copy()
        state.pop("_compiled_cache", None)
        return state

    def _compiled(self):
        """The CompiledSchedule the kernels evaluate, built on first use."""
        compiled = self.__dict__.get("_compiled_cache")
        if compiled is None:
            compiled = _backend._kernels.CompiledSchedule(type(self).__name__, **self._fields())
            self.__dict__["_compiled_cache"] = compiled
        return compiled

    def _fields(self):
        """Keyword arguments of CompiledSchedule (lrc_schedule's fields in src/schedules.h)."""
        raise NotImplementedError

    def _reference(self, s):
        """numpy evaluation at an int64 array of steps."""
        raise NotImplementedError

    def get_config(self):
        return {name: getattr(self, name) for name in self._arguments}

    @classmethod
    def from_config(cls, config):
        _check_config(cls, config)
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


def _check_config(cls, config):
    """A config (as from a checkpoint) is a dict of cls's constructor arguments only."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of {cls.__name__}'s arguments, got "
                         f"{_short_repr(config)}")
    unknown = [k for k in config if k not in cls._arguments]
    if unknown:
        raise ValueError(f"config must only hold {cls.__name__}'s arguments "
                         f"{list(cls._arguments)}, got unknown keys {_short_repr(unknown)}")


def _as_steps(step):
    """(int64 ndarray, was it a scalar) for an int or integer array of steps >= 0."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (numbers.Integral, np.ndarray)):
        raise TypeError(f"step must be an int or an integer ndarray, got {type(step).__name__}")
    if isinstance(step, np.ndarray) and step.dtype.kind not in "iu":
        raise TypeError(f"step must be an int or an integer ndarray, got dtype {step.dtype}")
    if isinstance(step, numbers.Integral) and not -2**63 <= int(step) < 2**63:
        raise ValueError(f"step must fit in int64, got {step}")
    if isinstance(step, np.ndarray) and step.dtype == np.uint64 and step.size \
            and step.max() >= 2**63:
        raise ValueError("step must fit in int64")
    steps = np.asarray(step, dtype=np.int64)
    if not steps.flags.c_contiguous:
        steps = np.ascontiguousarray(steps)
    if steps.size and steps.min() < 0:
        raise ValueError(f"step must be >= 0, got {int(steps.min())}")
    return steps, not isinstance(step, np.ndarray)


def _rate(value, name):
    return _validate.real(value, name)


def _steps(value, name, low=0.0):
    """A step count (decay_steps ...): finite and > 0 (>= low when low > 0), kept an int when
    given one; an int too large for a float is a ValueError like any non-finite count."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:                   # e.g. 10**400
        number, value = math.inf, "an int too large for a float"
    if not (math.isfinite(number) and (number >= low if low else number > 0)):
        shown = value if isinstance(value, str) else repr(value)
        raise ValueError(f"{name} must be a finite number {f'>= {low:g}' if low else '> 0'}, "
                         f"got {shown}")
    return int(value) if isinstance(value, numbers.Integral) else number


def _count(value, name, low=0):
    """A whole number of steps (warmup_steps ...): an int in [low, 2**63)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {low} and < 2**63, got "
                        f"{type(value).__name__} {_short_repr(value)}")
    if not low <= value < 2**63:
        shown = "an int >= 2**63" if value >= 2**63 else repr(int(value))
        raise ValueError(f"{name} must be an int >= {low} and < 2**63, got {shown}")
    return int(value)


# ---- Exact arithmetic of the step-indexed schedules: src/schedules.h's lrc_* helpers, operation
# for operation on float64 arrays (Dekker's product instead of fma: both give the exact
# product), so both backends find the same restart index and cycle. A dd is a pair (hi, lo).

def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _quick_two_sum(a, b):       # |a| >= |b|
    s = a + b
    return s, b - (s - a)


def _split(a):
    c = 134217729.0 * a         # 2**27 + 1: Veltkamp's split into two 26-bit halves
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_add(a, b):
    s = _two_sum(a[0], b[0])
    t = _two_sum(a[1], b[1])
    s = _quick_two_sum(s[0], s[1] + t[0])
    return _quick_two_sum(s[0], s[1] + t[1])


def _dd_mul(a, b):
    p = _two_prod(a[0], b[0])
    return _quick_two_sum(p[0], p[1] + (a[0] * b[1] + a[1] * b[0]) + a[1] * b[1])


def _dd_from_int(s):
    """An int64 array >= 0 as an exact dd: top 31 and bottom 32 bits are exact doubles."""
    return _two_sum((s >> 32).astype(np.float64) * 2.0**32, (s & 0xFFFFFFFF).astype(np.float64))


def _dd_where(mask, a, b):
    return np.where(mask, a[0], b[0]), np.where(mask, a[1], b[1])


_DD_BIG = 2.0**200              # past any step: sums/powers beyond it saturate here
_MAX_RESTART = 2**53            # construction keeps every restart index below 2**51


def _geometric(t, i):
    """(G_i, t^i) as dds, G_i = 1 + t + ... + t^(i−1), by binary powering (lrc_geometric)."""
    zero = np.zeros(i.shape)
    g, p = (zero, zero), (zero + 1.0, zero)
    for bit in range(int(i.max(initial=0)).bit_length() - 1, -1, -1):
        g = _dd_mul(g, _dd_add(p, (1.0, 0.0)))
        p = _dd_mul(p, p)
        odd = ((i >> bit) & 1).astype(bool)
        g = _dd_where(odd, _dd_add(g, p), g)
        p = _dd_where(odd, _dd_mul(p, (t, 0.0)), p)
        g = _dd_where(g[0] < _DD_BIG, g, (_DD_BIG, 0.0))
        p = _dd_where(p[0] < _DD_BIG, p, (_DD_BIG, 0.0))
    return g, p


def _restart_gap(first, t, i, s):
    """(s − F·G_i as a dd, t^i as a dd): lrc_restart_gap."""
    G, T = _geometric(t, i)
    p = _two_prod(first, G[0])
    p = _quick_two_sum(p[0], p[1] + first * G[1])
    s_dd = _dd_from_int(s)
    gap = _dd_add(s_dd, (-p[0], -p[1]))
    gap = _dd_where(first * G[0] > 2.0**64, (-1.0, 0.0), gap)
    return _dd_where(i == 0, s_dd, gap), T


def _divmod(D, s):
    """(q, num, den, comp) with q = ⌊s/D⌋ (D >= 1, int64 array s) and s − D·q = D·num/den
    exactly, comp = den − num: lrc_divmod's long division by D = n·2^k."""
    if D >= 2.0**63:
        comp = (D - 2.0**63) + (np.uint64(2**63) - s.astype(np.uint64)).astype(np.float64)
        return np.zeros_like(s), s.astype(np.float64), D, comp
    m, e = math.frexp(D)
    n, k = int(math.ldexp(m, 53)), e - 53
    while k < 0 and not n & 1:
        n, k = n >> 1, k + 1
    if k > 0:
        n, k = n << k, 0
    q, r = s // n, s % n
    for shift in range(-k, 0, -8):
        c = min(shift, 8)
        r = r << c
        q = (q << c) + r // n
        r = r % n
    return q, r.astype(np.float64), float(n), (n - r).astype(np.float64)


def _restart(first, t, s):
    """(restart index, f) at int64 steps s: lrc_restart, the same probes then bisection."""
    if t == 1.0:
        q, num, den, _ = _divmod(first, s)
        return q.astype(np.float64), num / den
    with np.errstate(all="ignore"):     # saturated / overflowing candidates are masked
        x = s.astype(np.float64) * (t - 1.0) / first   # t^i ≈ 1 + x; overflow: through logs
        log_x = np.where(np.isinf(x), np.log(s.astype(np.float64)) + math.log(t - 1.0)
                         - math.log(first), np.log1p(x))
        guess = np.floor(log_x / math.log1p(t - 1.0))
        probe = np.where(guess >= 1.0, np.minimum(guess, _MAX_RESTART - 1.0), 1.0).astype(np.int64)
        lo, hi = np.zeros_like(s), np.full_like(s, _MAX_RESTART)
        gap_lo, T_lo = _dd_from_int(s), (np.ones(s.shape), np.zeros(s.shape))
        for k in range(8 + 64):
            active = np.flatnonzero(hi - lo > 1)
            if not active.size:
                break
            if k >= 8:
                probe[active] = lo[active] + (hi[active] - lo[active]) // 2
            gap, T = _restart_gap(first, t, probe[active], s[active])
            started = gap[0] >= 0.0
            now_lo, now_hi = active[started], active[~started]
            lo[now_lo], hi[now_hi] = probe[now_lo], probe[now_hi]
            for held, new in ((gap_lo, gap), (T_lo, T)):
                held[0][now_lo], held[1][now_lo] = new[0][started], new[1][started]
            probe[active] = np.where(started, lo[active] + 1, hi[active] - 1)
        return lo.astype(np.float64), (gap_lo[0] + gap_lo[1]) / (first * T_lo[0])


class Constant(LearningRateSchedule):
    """lr(s) = learning_rate."""

    _arguments = ("learning_rate",)

    def __init__(self, learning_rate):
        self.learning_rate = _rate(learning_rate, "learning_rate")

    def _fields(self):
        return dict(initial=self.learning_rate)

    def _reference(self, s):
        return np.full(s.shape, self.learning_rate)


class PiecewiseConstant(LearningRateSchedule):
    """lr(s) = values[0] for s <= boundaries[0]; values[i] for boundaries[i−1] < s <=
    boundaries[i]; values[-1] for s > boundaries[-1] (right-inclusive, as Keras)."""

    _arguments = ("boundaries", "values")

    def __init__(self, boundaries, values):
        if not isinstance(boundaries, (list, tuple, np.ndarray)):
            raise TypeError(f"boundaries must be a list of steps, got {type(boundaries).__name__}")
        if not isinstance(values, (list, tuple, np.ndarray)):
            raise TypeError(f"values must be a list of rates, got {type(values).__name__}")
        boundaries = [_validate.real(b, f"boundaries[{i}]", low=-math.inf)
                      for i, b in enumerate(boundaries)]
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"values must hold len(boundaries) + 1 = {len(boundaries) + 1} "
                             f"rates, got {len(values)}")
        self.boundaries = [int(b) if b.is_integer() else b for b in boundaries]
        self.values = [_rate(v, f"values[{i}]") for i, v in enumerate(values)]

    def _fields(self):
        return dict(boundaries=self.boundaries, values=self.values)

    def _reference(self, s):
        # index = how many boundaries lie strictly below s
        index = np.searchsorted(np.asarray(self.boundaries, dtype=np.float64), s, side="left")
        return np.asarray(self.values, dtype=np.float64)[index]


class _Decay(LearningRateSchedule):
    """Shared arguments of the exponential, natural-exp and inverse-time decays, where
    p = s / decay_steps, floored when staircase."""

    _arguments = ("initial_learning_rate", "decay_steps", "decay_rate", "staircase")

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.decay_rate = _rate(decay_rate, "decay_rate")
        self.staircase = _validate.flag(staircase, "staircase")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.decay_steps,
                    rate=self.decay_rate, staircase=self.staircase)

    def _progress(self, s):
        p = s / float(self.decay_steps)
        return np.floor(p) if self.staircase else p


class ExponentialDecay(_Decay):
    """lr(s) = initial_learning_rate · decay_rate^p."""

    def _reference(self, s):
        return self.initial_learning_rate * np.power(self.decay_rate, self._progress(s))


class NaturalExpDecay(_Decay):
    """lr(s) = initial_learning_rate · exp(−decay_rate · p)."""

    def _reference(self, s):
        return self.initial_learning_rate * np.exp(-self.decay_rate * self._progress(s))


class InverseTimeDecay(_Decay):
    """lr(s) = initial_learning_rate / (1 + decay_rate · p)."""

    def _reference(self, s):
        return self.initial_learning_rate / (1.0 + self.decay_rate * self._progress(s))


class PolynomialDecay(LearningRateSchedule):
    """lr(s) = (initial − end) · (1 − s'/D)^power + end, with D = decay_steps and
    s' = min(s, D) without cycle; with cycle s' = s and D = decay_steps · max(1, ⌈s /
    decay_steps⌉), so the rate climbs back at each multiple (and is the initial rate at 0).
    The ceiling is of the exact quotient of s and the double decay_steps, and 1 − s/D is
    evaluated as (D − s)/D without cancellation; cycle needs decay_steps >= 1."""

    _arguments = ("initial_learning_rate", "decay_steps", "end_learning_rate", "power", "cycle")

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=1e-4, power=1.0,
                 cycle=False):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.cycle = _validate.flag(cycle, "cycle")
        # with cycle, ⌈s/decay_steps⌉ must fit the int64 of the exact division
        self.decay_steps = _steps(decay_steps, "decay_steps", low=1.0 if self.cycle else 0.0)
        self.end_learning_rate = _rate(end_learning_rate, "end_learning_rate")
        self.power = _validate.real(power, "power")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.decay_steps,
                    end=self.end_learning_rate, power=self.power, cycle=self.cycle)

    def _reference(self, s):
        D = float(self.decay_steps)
        if self.cycle:      # D·c − s = D·comp/den when s is not a multiple (num > 0)
            q, num, den, comp = _divmod(D, s)
            base = np.where(s == 0, 1.0, np.where(num == 0.0, 0.0, comp / (den * (q + 1).astype(np.float64))))
        else:
            base = 1.0 - np.minimum(s, D) / D
        return ((self.initial_learning_rate - self.end_learning_rate)
                * np.power(base, self.power) + self.end_learning_rate)


class CosineDecay(LearningRateSchedule):
    """Keras 3's CosineDecay. Without warmup_target (the default):
        lr(s) = initial · ((1 − α) · ½(1 + cos(π s'/D)) + α),  s' = min(s, D), D = decay_steps.
    With warmup_target, a linear warmup from initial_learning_rate to warmup_target over
    W = warmup_steps, then the cosine decay from warmup_target, with s' = min(s, W + D):
        s' < W:  initial + (warmup_target − initial) · s'/W
        s' ≥ W:  warmup_target · ((1 − α) · ½(1 + cos(π (s' − W)/D)) + α).
    As in Keras, warmup_steps is ignored when warmup_target is None."""

    _arguments = ("initial_learning_rate", "decay_steps", "alpha", "warmup_target",
                  "warmup_steps")

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.alpha = _validate.real(alpha, "alpha")
        self.warmup_target = None if warmup_target is None else _rate(warmup_target,
                                                                      "warmup_target")
        self.warmup_steps = _count(warmup_steps, "warmup_steps")

    def _fields(self):
        fields = dict(initial=self.initial_learning_rate, steps=self.decay_steps,
                      alpha=self.alpha)
        if self.warmup_target is not None:
            fields.update(has_target=True, peak=self.warmup_target,
                          warmup_steps=self.warmup_steps)
        return fields

    def _reference(self, s):
        D = float(self.decay_steps)
        if self.warmup_target is None:
            done = np.minimum(s, D) / D
            cosine = 0.5 * (1.0 + np.cos(math.pi * done))
            return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)
        W, target = float(self.warmup_steps), self.warmup_target
        clamped = np.minimum(s, D + W)
        ramp = (target - self.initial_learning_rate) * (clamped / max(W, 1.0)) \
            + self.initial_learning_rate
        cosine = 0.5 * (1.0 + np.cos(math.pi * ((clamped - W) / D)))
        return np.where(clamped < W, ramp, target * ((1.0 - self.alpha) * cosine + self.alpha))


class CosineDecayRestarts(LearningRateSchedule):
    """SGDR, as TensorFlow's cosine_decay_restarts. With F = first_decay_steps and t = t_mul,
    restart i starts at F·G_i, G_i = (t^i − 1)/(t − 1) = 1 + t + ... + t^(i−1) (F·i when
    t = 1), and lasts F·t^i steps; f = (s − F·G_i)/(F·t^i):
        lr(s) = initial · ((1 − α) · m_mul^i · ½(1 + cos πf) + α).
    i is the largest integer with F·G_i <= s for the given doubles F and t, found exactly:
    t = 1 by exact integer division; otherwise G_i is summed in double-double arithmetic
    (positive terms, no cancellation, relative error below 2^-96) and compared with s, ties
    (F·G_i = s) exactly (src/schedules.h, lrc_restart). The arguments must keep that bounded:
    first_decay_steps >= 1 and, when t_mul > 1, fewer than 2**51 restarts before step 2**63."""

    _arguments = ("initial_learning_rate", "first_decay_steps", "t_mul", "m_mul", "alpha")

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        # >= 1: with t_mul = 1 the index ⌊s/F⌋ must fit int64, and ties stay exact in dd
        self.first_decay_steps = _steps(first_decay_steps, "first_decay_steps", low=1.0)
        self.t_mul = _validate.real(t_mul, "t_mul", low=1.0)
        self.m_mul = _validate.real(m_mul, "m_mul")
        self.alpha = _validate.real(alpha, "alpha")
        if self.t_mul > 1.0 and _last_restart(float(self.first_decay_steps), self.t_mul) > 2**51:
            raise ValueError(f"t_mul must be 1.0 or far enough from 1 that fewer than 2**51 "
                             f"restarts start before step 2**63 (first_decay_steps="
                             f"{self.first_decay_steps!r}), got {self.t_mul!r}")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.first_decay_steps,
                    t_mul=self.t_mul, m_mul=self.m_mul, alpha=self.alpha)

    def _reference(self, s):
        i, done = _restart(float(self.first_decay_steps), self.t_mul, s)
        cosine = np.power(self.m_mul, i) * 0.5 * (1.0 + np.cos(math.pi * done))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


def _last_restart(first, t):
    """About the restart index at step 2**63 (t > 1): log(1 + 2^63·(t − 1)/F) / log(t),
    through logs so that no intermediate overflows."""
    log_x = 63 * math.log(2.0) + math.log(t - 1.0) - math.log(first)
    log1p_x = log_x if log_x > 40 else math.log1p(math.exp(log_x))
    return log1p_x / math.log1p(t - 1.0)


class LinearCosineDecay(LearningRateSchedule):
    """With s' = min(s, D), D = decay_steps: lin = (D − s')/D,
    cos = ½(1 + cos(2π · num_periods · s'/D)); lr(s) = initial · ((α + lin) · cos + β)."""

    _arguments = ("initial_learning_rate", "decay_steps", "num_periods", "alpha", "beta")

    def __init__(self, initial_learning_rate, decay_steps, num_periods=0.5, alpha=0.0, beta=0.001):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.num_periods = _validate.real(num_periods, "num_periods")
        self.alpha = _validate.real(alpha, "alpha")
        self.beta = _validate.real(beta, "beta")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.decay_steps,
                    num_periods=self.num_periods, alpha=self.alpha, beta=self.beta)

    def _linear(self, s, clipped):
        return (float(self.decay_steps) - clipped) / float(self.decay_steps)

    def _reference(self, s):
        clipped = np.minimum(s, float(self.decay_steps))
        cosine = 0.5 * (1.0 + np.cos(2.0 * math.pi * self.num_periods * clipped
                                     / float(self.decay_steps)))
        return self.initial_learning_rate * ((self.alpha + self._linear(s, clipped)) * cosine
                                             + self.beta)


class NoisyLinearCosineDecay(LinearCosineDecay):
    """LinearCosineDecay with noise on the linear term: lr(s) = initial · ((α + lin + ε) · cos
    + β), ε ~ N(0, initial_variance / (1 + s')^variance_decay), s' = min(s, D), as TensorFlow.

    ε is a pure function of (seed, s): a counter-based generator (SplitMix64 applied to the
    counters 2s and 2s + 1 offset by the mixed seed, then Box–Muller), so a replay or a
    resumed run sees exactly the same rates, and schedule(steps) shows the rates the step
    will use. Like TensorFlow's, the rate can dip below zero when the noise exceeds the decayed
    term (the step then ascends); keep initial_variance small to avoid that.
    """

    _arguments = ("initial_learning_rate", "decay_steps", "initial_variance", "variance_decay",
                  "num_periods", "alpha", "beta", "seed")

    def __init__(self, initial_learning_rate, decay_steps, initial_variance=1.0,
                 variance_decay=0.55, num_periods=0.5, alpha=0.0, beta=0.001, seed=0):
        super().__init__(initial_learning_rate, decay_steps, num_periods, alpha, beta)
        self.initial_variance = _validate.real(initial_variance, "initial_variance")
        self.variance_decay = _validate.real(variance_decay, "variance_decay")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {_short_repr(seed)}")
        self.seed = int(seed)

    def _fields(self):
        return dict(super()._fields(), initial_variance=self.initial_variance,
                    variance_decay=self.variance_decay, seed=self.seed)

    def _linear(self, s, clipped):
        variance = self.initial_variance / np.power(1.0 + clipped, self.variance_decay)
        return super()._linear(s, clipped) + np.sqrt(variance) * normal_noise(self.seed, s)


def _mix64(x):
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def normal_noise(seed, steps):
    """The standard normal draws of NoisyLinearCosineDecay at `steps` (int64 array): a pure
    function of (seed, step), identical to lrc_normal() in src/schedules.h."""
    steps = np.atleast_1d(np.asarray(steps, dtype=np.int64))
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed], dtype=np.uint64)) + np.uint64(2) * steps.astype(np.uint64)
        u1 = ((_mix64(base) >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
        u2 = (_mix64(base + np.uint64(1)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


MAX_WARMUP_NESTING = 32


class Warmup(LearningRateSchedule):
    """A warmup of W = warmup_steps before `schedule` (Keras 3 convention: the wrapped
    schedule starts after the warmup):
        s < W:  "linear": initial_learning_rate + (schedule(0) − initial_learning_rate) · s/W;
                "constant": initial_learning_rate
        s ≥ W:  schedule(s − W)
    `schedule` is any lrcore schedule or a number (a constant rate). Warmups nest at most
    MAX_WARMUP_NESTING = 32 deep: the C evaluation, repr and serialization recurse."""

    _arguments = ("schedule", "warmup_steps", "initial_learning_rate", "mode")

    def __init__(self, schedule, warmup_steps, initial_learning_rate=0.0, mode="linear"):
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            schedule = Constant(schedule)
        if not isinstance(schedule, LearningRateSchedule):
            raise TypeError(f"schedule must be an lrcore schedule or a number, "
                            f"got {type(schedule).__name__}")
        if isinstance(warmup_steps, (bool, np.bool_)) or not isinstance(warmup_steps, numbers.Integral) \
                or not 0 <= warmup_steps < 2**63:
            shown = "an int >= 2**63" if isinstance(warmup_steps, numbers.Integral) \
                and warmup_steps >= 2**63 else repr(warmup_steps)
            raise ValueError(f"warmup_steps must be an int >= 0 and < 2**63, got {shown}")
        if _warmup_depth(schedule) >= MAX_WARMUP_NESTING:
            raise ValueError(f"schedule must not nest Warmups more than {MAX_WARMUP_NESTING} "
                             f"deep (Warmups and Sequences count together), got "
                             f"{MAX_WARMUP_NESTING} nested levels inside this one")
        if mode not in ("linear", "constant"):
            raise ValueError(f"mode must be 'linear' or 'constant', got {mode!r}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.mode = mode

    def _fields(self):
        return dict(inner=self.schedule._compiled(), warmup_steps=self.warmup_steps,
                    initial=self.initial_learning_rate, linear=self.mode == "linear")

    def _reference(self, s):
        # one inner evaluation per level (steps after the warmup, then step 0): two would
        # cost 2^depth through nested Warmups
        inner = self.schedule._reference(np.append(np.maximum(s - self.warmup_steps, 0), 0))
        after, target = inner[:-1], inner[-1]
        if self.mode == "linear":
            ramp = self.initial_learning_rate + (target - self.initial_learning_rate) * (
                s / max(self.warmup_steps, 1))
        else:
            ramp = np.full(s.shape, self.initial_learning_rate)
        return np.where(s < self.warmup_steps, ramp, after)

    def get_config(self):
        config = super().get_config()
        config["schedule"] = serialize(self.schedule)
        return config

    @classmethod
    def from_config(cls, config):
        _check_config(cls, config)
        if "schedule" not in config:
            raise ValueError(f"config must hold a 'schedule' entry, got {_short_repr(config)}")
        return cls(**dict(config, schedule=deserialize(config["schedule"])))

    def __repr__(self):
        return (f"Warmup(schedule={self.schedule!r}, warmup_steps={self.warmup_steps!r}, "
                f"initial_learning_rate={self.initial_learning_rate!r}, mode={self.mode!r})")


def _warmup_depth(schedule):
    """How many Warmups and Sequences are nested in `schedule` (0 for any other schedule):
    1 + the depth of a Warmup's schedule or of a Sequence's deepest piece. Level by level,
    without recursion, each distinct object once per level (shared pieces do not multiply
    the work), stopping past MAX_WARMUP_NESTING."""
    depth, level = 0, [schedule]
    while depth <= MAX_WARMUP_NESTING:
        nested = [node for node in level if isinstance(node, (Warmup, Sequence))]
        if not nested:
            break
        depth += 1
        inner = {}
        for node in nested:
            for child in [node.schedule] if isinstance(node, Warmup) else node.schedules:
                inner[id(child)] = child
        level = list(inner.values())
    return depth


# ---- Schedules of current training recipes (Hugging Face transformers' names) ----------------

class Linear(LearningRateSchedule):
    """lr(s) = initial + (end − initial) · s/D for s < D = decay_steps; end_learning_rate from
    D on (the end rate itself, not a rounded initial + (end − initial))."""

    _arguments = ("initial_learning_rate", "end_learning_rate", "decay_steps")

    def __init__(self, initial_learning_rate, end_learning_rate, decay_steps):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.end_learning_rate = _rate(end_learning_rate, "end_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, end=self.end_learning_rate,
                    steps=self.decay_steps)

    def _reference(self, s):
        D, lr0 = float(self.decay_steps), self.initial_learning_rate
        return np.where(s >= D, self.end_learning_rate,
                        lr0 + (self.end_learning_rate - lr0) * (s / D))


INVERSE_SQRT_TIMESCALE = 10_000     # Hugging Face's timescale when there is no warmup


class InverseSqrt(LearningRateSchedule):
    """Hugging Face's get_inverse_sqrt_schedule, with W = warmup_steps:
        s < W:  peak · s/W
        s ≥ W:  peak / √((s + T − W)/T) = peak · √(W/s),  T = W.
    With warmup_steps = 0 there is no warmup and T is Hugging Face's default timescale,
    10 000: lr(s) = peak · √(10000/(s + 10000))."""

    _arguments = ("peak_learning_rate", "warmup_steps")

    def __init__(self, peak_learning_rate, warmup_steps):
        self.peak_learning_rate = _rate(peak_learning_rate, "peak_learning_rate")
        self.warmup_steps = _count(warmup_steps, "warmup_steps")

    @property
    def _timescale(self):
        return float(self.warmup_steps or INVERSE_SQRT_TIMESCALE)

    def _fields(self):
        return dict(peak=self.peak_learning_rate, warmup_steps=self.warmup_steps,
                    timescale=self._timescale)

    def _reference(self, s):
        W, T, peak = self.warmup_steps, self._timescale, self.peak_learning_rate
        ramp = peak * (s / float(max(W, 1)))
        after = np.maximum(s, W).astype(np.float64)     # the decay's steps, never 0 for W > 0
        decay = peak * (1.0 / np.sqrt((after + (T - float(W))) / T))
        return np.where(s < W, ramp, decay)


DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


class WarmupStableDecay(LearningRateSchedule):
    """Warmup-stable-decay (WSD), as Hugging Face's get_wsd_schedule. With W, S, D the
    warmup, stable and decay steps, p = (s − W − S)/D the fraction of the decay elapsed:
        s < W:              initial + (peak − initial) · s/W
        W ≤ s < W + S:      peak
        W + S ≤ s < W+S+D:  end + (peak − end) · g(p),  g = 1 − p ("linear"),
                            ½(1 + cos πp) ("cosine") or 1 − √p ("1-sqrt")
        s ≥ W + S + D:      end.
    Hugging Face's min_lr_ratio m is end = initial = m · peak (its warmup starts at m · peak).
    W + S + D must be below 2**63."""

    _arguments = ("peak_learning_rate", "warmup_steps", "stable_steps", "decay_steps", "decay",
                  "end_learning_rate", "initial_learning_rate")

    def __init__(self, peak_learning_rate, warmup_steps, stable_steps, decay_steps,
                 decay="linear", end_learning_rate=0.0, initial_learning_rate=0.0):
        self.peak_learning_rate = _rate(peak_learning_rate, "peak_learning_rate")
        self.warmup_steps = _count(warmup_steps, "warmup_steps")
        self.stable_steps = _count(stable_steps, "stable_steps")
        self.decay_steps = _count(decay_steps, "decay_steps")
        if self.warmup_steps + self.stable_steps + self.decay_steps >= 2**63:
            raise ValueError(f"warmup_steps + stable_steps + decay_steps must be < 2**63, got "
                             f"{self.warmup_steps + self.stable_steps + self.decay_steps}")
        if not isinstance(decay, str) or decay not in DECAY_SHAPES:
            raise ValueError(f"decay must be 'linear', 'cosine' or '1-sqrt', got "
                             f"{_short_repr(decay)}")
        self.decay = decay
        self.end_learning_rate = _rate(end_learning_rate, "end_learning_rate")
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")

    def _fields(self):
        return dict(peak=self.peak_learning_rate, warmup_steps=self.warmup_steps,
                    stable_steps=self.stable_steps, steps=float(self.decay_steps),
                    decay_shape=DECAY_SHAPES.index(self.decay), end=self.end_learning_rate,
                    initial=self.initial_learning_rate)

    def _reference(self, s):
        W, S, D = self.warmup_steps, self.stable_steps, self.decay_steps
        peak, end, lr0 = self.peak_learning_rate, self.end_learning_rate, self.initial_learning_rate
        ramp = lr0 + (peak - lr0) * (s / float(max(W, 1)))
        into_decay = s - W - S                      # no overflow: W + S < 2**63, s >= 0
        p = np.clip(into_decay, 0, D).astype(np.float64) / float(max(D, 1))
        if self.decay == "cosine":
            g = 0.5 * (1.0 + np.cos(math.pi * p))
        elif self.decay == "1-sqrt":
            g = 1.0 - np.sqrt(p)
        else:
            g = 1.0 - p
        decayed = np.where(into_decay >= D, end, end + (peak - end) * g)
        return np.where(s < W, ramp, np.where(into_decay < 0, peak, decayed))


# get(): Hugging Face's scheduler names, each with the keywords its get_*_schedule takes
HF_SCHEDULES = {
    "linear": (), "cosine": ("num_cycles",), "cosine_with_restarts": ("num_cycles",),
    "polynomial": ("lr_end", "power"), "constant": (), "constant_with_warmup": (),
    "inverse_sqrt": (), "cosine_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate"),
    "warmup_stable_decay": ("num_decay_steps", "num_stable_steps", "warmup_type",
                            "decay_type", "min_lr_ratio", "num_cycles"),
}


def get(name, learning_rate, num_warmup_steps=None, num_training_steps=None, **kwargs):
    """The lrcore schedule of Hugging Face's `transformers.get_scheduler(name, optimizer,
    num_warmup_steps, num_training_steps, scheduler_specific_kwargs=kwargs)` for an optimizer
    whose lr is learning_rate: at every step 0..num_training_steps its value is
    learning_rate × the multiplier of Hugging Face's LambdaLR. W = num_warmup_steps,
    N = num_training_steps, D = max(1, N − W):

    "constant": Constant (num_warmup_steps and num_training_steps unused, as in HF).
    "constant_with_warmup": Warmup(Constant(learning_rate), W).
    "linear": WarmupStableDecay(learning_rate, W, 0, max(N − W, 0)); 0 after N, as HF.
    "cosine" (num_cycles=0.5), "cosine_with_min_lr" (num_cycles=0.5, min_lr or min_lr_rate,
        one of them required): Warmup(CosineDecay(learning_rate, D/(2·num_cycles),
        alpha=min_lr_rate), W), with 0 < num_cycles ≤ 0.5. After the cosine's trough
        (step W + D/(2·num_cycles), N for the default 0.5) the rate holds its minimum, where
        HF's multiplier follows the cosine back up.
    "cosine_with_restarts" (num_cycles=1): Warmup(CosineDecayRestarts(learning_rate,
        D/num_cycles, t_mul=1.0, m_mul=0.0 if num_cycles == 1 else 1.0), W), with
        1 ≤ D/num_cycles. HF's rate is 0 from step N on; so is this one with num_cycles = 1,
        while with other num_cycles it goes on restarting from step N (equal to HF at steps
        0..N − 1). The restart index is exact (CosineDecayRestarts).
    "polynomial" (lr_end=1e-7, power=1.0): Warmup(PolynomialDecay(learning_rate, N − W,
        lr_end, power), W); lr_end < learning_rate and N > W required (HF divides by N − W);
        lr_end after N (learning_rate, where HF drops to lr_end, when power = 0).
    "inverse_sqrt": InverseSqrt(learning_rate, W) (HF's timescale: W, or 10 000 for W = 0).
    "warmup_stable_decay" (num_decay_steps required; num_stable_steps, default
        N − W − num_decay_steps; decay_type="cosine", min_lr_ratio=0, warmup_type="linear",
        num_cycles=0.5): WarmupStableDecay(learning_rate, W, num_stable_steps,
        num_decay_steps, decay_type, min_lr_ratio·learning_rate, min_lr_ratio·learning_rate).
        Only HF's linear warmup and, for the cosine decay, num_cycles = 0.5 have an lrcore
        equivalent; num_stable_steps must be >= 0.

    A required argument left None is a ValueError naming it (HF's message); a keyword the
    named schedule does not take is a TypeError; an argument outside the ranges above a
    ValueError naming it."""
    if not isinstance(name, str) or name not in HF_SCHEDULES:
        raise ValueError(f"name must be one of {list(HF_SCHEDULES)}, got {_short_repr(name)}")
    lr = _rate(learning_rate, "learning_rate")
    unknown = [k for k in kwargs if k not in HF_SCHEDULES[name]]
    if unknown:
        raise TypeError(f"{name!r} takes no keyword {unknown[0]!r}; its keywords are "
                        f"{list(HF_SCHEDULES[name])}")
    if name == "constant":
        return Constant(lr)

    def required(value, argument):
        if value is None:
            raise ValueError(f"{name} requires `{argument}`, please provide that argument.")
        return _count(value, argument)

    W = required(num_warmup_steps, "num_warmup_steps")
    if name == "constant_with_warmup":
        return Warmup(Constant(lr), W)
    if name == "inverse_sqrt":
        return InverseSqrt(lr, W)
    if name == "warmup_stable_decay":
        return _hf_wsd(lr, W, num_training_steps, **kwargs)
    N = required(num_training_steps, "num_training_steps")
    D = max(1, N - W)
    if name == "linear":
        return WarmupStableDecay(lr, W, 0, max(N - W, 0), "linear")
    if name in ("cosine", "cosine_with_min_lr"):
        cycles = _validate.real(kwargs.get("num_cycles", 0.5), "num_cycles")
        if not 0 < cycles <= 0.5:
            raise ValueError(f"num_cycles must be > 0 and <= 0.5 (a cosine down to its trough),"
                             f" got {cycles!r}")
        alpha = 0.0
        if name == "cosine_with_min_lr":
            alpha = _min_lr_rate(lr, kwargs.get("min_lr"), kwargs.get("min_lr_rate"))
        steps = D if cycles == 0.5 else D / (2.0 * cycles)
        return Warmup(CosineDecay(lr, steps, alpha=alpha), W)
    if name == "cosine_with_restarts":
        cycles = _validate.real(kwargs.get("num_cycles", 1), "num_cycles")
        if not 0 < cycles <= D:
            raise ValueError(f"num_cycles must be > 0 and <= max(1, num_training_steps - "
                             f"num_warmup_steps) = {D} (restarts at least one step long), "
                             f"got {cycles!r}")
        first = D if cycles == 1 else D / cycles
        return Warmup(CosineDecayRestarts(lr, first, t_mul=1.0,
                                          m_mul=0.0 if cycles == 1 else 1.0), W)
    # polynomial
    lr_end = _rate(kwargs.get("lr_end", 1e-7), "lr_end")
    power = _validate.real(kwargs.get("power", 1.0), "power")
    if not lr > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than learning_rate ({lr})")
    if N <= W:
        raise ValueError(f"num_training_steps must be > num_warmup_steps = {W} for "
                         f"'polynomial', got {N}")
    return Warmup(PolynomialDecay(lr, N - W, end_learning_rate=lr_end, power=power), W)


def _min_lr_rate(lr, min_lr, min_lr_rate):
    """cosine_with_min_lr's floor as a fraction of lr, from exactly one of its keywords."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set")
    if min_lr is not None:
        min_lr = _rate(min_lr, "min_lr")
        if lr == 0:
            raise ValueError("learning_rate must be > 0 when min_lr is given (min_lr_rate = "
                             "min_lr / learning_rate)")
        return min_lr / lr
    if min_lr_rate is None:
        raise ValueError("cosine_with_min_lr requires `min_lr` or `min_lr_rate`, please "
                         "provide one of them.")
    return _validate.real(min_lr_rate, "min_lr_rate")


def _hf_wsd(lr, W, num_training_steps, num_decay_steps=None, num_stable_steps=None,
            warmup_type="linear", decay_type="cosine", min_lr_ratio=0.0, num_cycles=0.5):
    """get("warmup_stable_decay", ...): Hugging Face's get_wsd_schedule."""
    if num_decay_steps is None:
        raise ValueError("warmup_stable_decay requires `num_decay_steps`, please provide that "
                         "argument.")
    D = _count(num_decay_steps, "num_decay_steps")
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("warmup_stable_decay requires `num_training_steps` or "
                         "`num_stable_steps`, please provide one of them.")
    if num_stable_steps is None:
        N = _count(num_training_steps, "num_training_steps")
        if N < W + D:
            raise ValueError(f"num_training_steps must be >= num_warmup_steps + "
                             f"num_decay_steps = {W + D} when num_stable_steps is not given, "
                             f"got {N}")
        num_stable_steps = N - W - D
    if warmup_type != "linear":
        raise ValueError(f"warmup_type must be 'linear' (the warmup lrcore's WarmupStableDecay "
                         f"has), got {_short_repr(warmup_type)}")
    if not isinstance(decay_type, str) or decay_type not in DECAY_SHAPES:
        raise ValueError(f"decay_type must be 'linear', 'cosine' or '1-sqrt', got "
                         f"{_short_repr(decay_type)}")
    if decay_type == "cosine" and _validate.real(num_cycles, "num_cycles") != 0.5:
        raise ValueError(f"num_cycles must be 0.5 (a half cosine to the end rate), got "
                         f"{num_cycles!r}")
    floor = lr * _validate.real(min_lr_ratio, "min_lr_ratio")
    return WarmupStableDecay(lr, W, num_stable_steps, D, decay=decay_type,
                             end_learning_rate=floor, initial_learning_rate=floor)


def _short_repr(obj):
    """repr bounded in length and depth: a hostile config's repr must not recurse deeply."""
    return _REPR.repr(obj)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 200, 200


# ---- torch's cyclical rates and optax's join_schedules ---------------------------------------

def _positive(value, name):
    """A finite real number > 0, as a float."""
    number = _validate.real(value, name, low=-math.inf)
    if not number > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {number!r}")
    return number


def _int_in(value, name, low, high):
    """An int in [low, high] (numpy integers included): TypeError for another type,
    ValueError outside the range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        shown = f"{value}" if abs(value) < 2**80 else "an int out of range"
        raise ValueError(f"{name} must be an int >= {low} and <= {_power_of_two(high)}, "
                         f"got {shown}")
    return int(value)


def _power_of_two(n):
    """n shown as 2**k or 2**k - 1 when it is one of those."""
    for k in range(1, 65):
        if n == 2**k:
            return f"2**{k}"
        if n == 2**k - 1:
            return f"2**{k} - 1"
    return str(n)


def _libm(function, x):
    """`function` (a math-module function: the C library's, which src/schedules.h calls)
    applied to each element of a float64 array: numpy's own cos and pow may differ from the
    C library's in the last bit, and one-cycle's cos(πp) + 1 cancels near its end."""
    x = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(function, x.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def _anneal(cosine, start, end, pct):
    """torch's OneCycleLR._annealing_cos / _annealing_linear on an array of fractions."""
    if cosine:
        cos_out = _libm(math.cos, math.pi * pct) + 1.0
        return end + (start - end) / 2.0 * cos_out
    return (end - start) * pct + start


class OneCycle(LearningRateSchedule):
    """The learning rate of torch.optim.lr_scheduler.OneCycleLR (momentum cycling is not
    part of it: it is a learning-rate schedule). With T = total_steps, p = pct_start,
    initial = max_learning_rate / div_factor and minimum = initial / final_div_factor, the
    phases end at torch's steps
        two phases:   e1 = p·T − 1, e2 = T − 1
        three_phase:  e1 = p·T − 1, e2 = 2p·T − 2, e3 = T − 1
    (p·T and 2p·T rounded to doubles as torch does). At step s the first phase k with s ≤ e_k
    (the last phase otherwise) runs from step e_(k−1) (0 for the first) with
    f = (s − e_(k−1)) / (e_k − e_(k−1)):
        lr(s) = anneal(from_k, to_k, f),
        anneal "cos": to + (from − to)/2 · (cos(πf) + 1);  "linear": (to − from)·f + from,
    phases initial → max → minimum, or with three_phase initial → max → initial → minimum.
    Each value is torch's double at steps 0 … T − 1 (the same operations in the same order);
    from step T on the rate stays at its final value lr(T − 1) (torch's scheduler raises
    past step T). p·T = 1 (torch divides 0 by 0 at step 0) is a ValueError, as is any
    total_steps above 2**53, where steps stop being exact doubles."""

    _arguments = ("max_learning_rate", "total_steps", "pct_start", "anneal", "div_factor",
                  "final_div_factor", "three_phase")

    def __init__(self, max_learning_rate, total_steps, pct_start=0.3, anneal="cos",
                 div_factor=25.0, final_div_factor=1e4, three_phase=False):
        self.max_learning_rate = _rate(max_learning_rate, "max_learning_rate")
        self.total_steps = _int_in(total_steps, "total_steps", 1, 2**53)
        self.pct_start = _validate.real(pct_start, "pct_start", high=1.0)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {_short_repr(anneal)}")
        self.anneal = anneal
        self.div_factor = _positive(div_factor, "div_factor")
        self.final_div_factor = _positive(final_div_factor, "final_div_factor")
        self.three_phase = _validate.flag(three_phase, "three_phase")
        if float(self.pct_start * self.total_steps) == 1.0:
            raise ValueError(f"pct_start * total_steps must not be 1 (the first phase would "
                             f"end at step 0, a division of 0 by 0), got pct_start="
                             f"{self.pct_start!r} with total_steps={self.total_steps}")
        if not math.isfinite(self._initial()):
            raise ValueError(f"div_factor must leave max_learning_rate / div_factor finite, "
                             f"got {self.div_factor!r}")

    def _initial(self):
        return self.max_learning_rate / self.div_factor

    def _ends(self):
        """torch's phase end steps, computed as torch computes them."""
        T, p = self.total_steps, self.pct_start
        if self.three_phase:
            return (float(p * T) - 1, float(2 * p * T) - 2, float(T - 1))
        return (float(p * T) - 1, float(T - 1))

    def _rates(self):
        """(from, to) of each phase."""
        initial = self._initial()
        minimum = initial / self.final_div_factor
        top = self.max_learning_rate
        if self.three_phase:
            return ((initial, top), (top, initial), (initial, minimum))
        return ((initial, top), (top, minimum))

    def _fields(self):
        initial = self._initial()
        return dict(lr_low=initial, lr_high=self.max_learning_rate,
                    lr_min=initial / self.final_div_factor, ends=self._ends(),
                    anneal_cos=self.anneal == "cos")

    def _reference(self, s):
        n = np.minimum(s, self.total_steps - 1).astype(np.float64)
        out = np.empty(s.shape)
        done = np.zeros(s.shape, dtype=bool)
        ends, start_step = self._ends(), 0.0
        for i, (end_step, (start, end)) in enumerate(zip(ends, self._rates())):
            take = ~done & ((n <= end_step) | (i == len(ends) - 1))
            pct = (n[take] - start_step) / (end_step - start_step)
            out[take] = _anneal(self.anneal == "cos", start, end, pct)
            done |= take
            start_step = end_step
        return out


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


class Cyclic(LearningRateSchedule):
    """The learning rate of torch.optim.lr_scheduler.CyclicLR (its momentum cycling and
    custom scale_fn are not part of it). With up = step_size_up, down = step_size_down (up
    when None), L = up + down and r = up / L:
        c = ⌊1 + s/L⌋,  x = 1 + s/L − c,
        h = x / r when x ≤ r, else (x − 1) / (r − 1),
        lr(s) = base + (max − base) · h · g,
        g = 1 ("triangular"), 1 / 2^(c−1) ("triangular2"), gamma^s ("exp_range"),
    torch's scale modes (per cycle for the triangular ones, per step for exp_range). Each value
    is torch's double at every step (the same operations in the same order). Where torch's
    float arithmetic raises OverflowError (2^(c−1) past cycle 1025, gamma^s beyond the double
    range), the C library's result is used: 0 for triangular2's factor (the rate is then
    base), inf for a gamma > 1 (a non-finite rate the step refuses)."""

    _arguments = ("base_learning_rate", "max_learning_rate", "step_size_up", "step_size_down",
                  "mode", "gamma")

    def __init__(self, base_learning_rate, max_learning_rate, step_size_up, step_size_down=None,
                 mode="triangular", gamma=1.0):
        self.base_learning_rate = _rate(base_learning_rate, "base_learning_rate")
        self.max_learning_rate = _rate(max_learning_rate, "max_learning_rate")
        self.step_size_up = _steps(step_size_up, "step_size_up")
        if step_size_down is not None:      # 0 is a sawtooth: up, then straight back down
            number = _validate.real(step_size_down, "step_size_down")
            step_size_down = int(step_size_down) if isinstance(step_size_down, numbers.Integral) \
                else number
        self.step_size_down = step_size_down
        if mode not in _CYCLIC_MODES:
            raise ValueError(f"mode must be one of {list(_CYCLIC_MODES)}, got {_short_repr(mode)}")
        self.mode = mode
        self.gamma = _positive(gamma, "gamma")
        if not math.isfinite(self._sizes()[0]):
            raise ValueError(f"step_size_up + step_size_down must be finite, got "
                             f"{self.step_size_up!r} + {self.step_size_down!r}")

    def _sizes(self):
        """torch's total_size and step_ratio."""
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        total = up + down
        return total, up / total

    def _fields(self):
        total, ratio = self._sizes()
        return dict(lr_low=self.base_learning_rate, lr_high=self.max_learning_rate,
                    total_size=total, step_ratio=ratio, gamma=self.gamma,
                    cyclic_mode=_CYCLIC_MODES.index(self.mode))

    def _reference(self, s):
        total, ratio = self._sizes()
        n = s.astype(np.float64)
        q = n / total
        cycle = np.floor(1.0 + q)
        x = 1.0 + q - cycle
        with np.errstate(divide="ignore", invalid="ignore"):    # the branch not taken
            scale = np.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))
        base_height = (self.max_learning_rate - self.base_learning_rate) * scale
        if self.mode == "triangular2":
            factor = 1.0 / _libm(_pow_or_inf(2.0), cycle - 1.0)
        elif self.mode == "exp_range":
            factor = _libm(_pow_or_inf(self.gamma), n)
        else:
            factor = 1.0
        return self.base_learning_rate + base_height * factor


def _pow_or_inf(base):
    """x ↦ base**x as the C library's pow gives it: inf where math.pow raises OverflowError."""
    def power(x):
        try:
            return math.pow(base, x)
        except OverflowError:
            return math.inf
    return power


class Sequence(LearningRateSchedule):
    """optax's join_schedules: with boundaries b (non-decreasing steps, one fewer than
    schedules) and b[−1] = 0,
        lr(s) = schedules[i](s − b[i−1])  for b[i−1] ≤ s < b[i],
    the last piece from b[-1] on. A piece is any lrcore schedule (Sequences and Warmups
    nest) or a number (a Constant). Warmups and Sequences nest at most MAX_WARMUP_NESTING = 32
    deep together: the C evaluation, repr and serialization recurse."""

    _arguments = ("schedules", "boundaries")

    def __init__(self, schedules, boundaries):
        if not isinstance(schedules, (list, tuple)) or not schedules:
            raise TypeError(f"schedules must be a non-empty list of lrcore schedules or "
                            f"numbers, got {_short_repr(schedules)}")
        pieces = []
        for i, piece in enumerate(schedules):
            if isinstance(piece, numbers.Real) and not isinstance(piece, (bool, np.bool_)):
                piece = Constant(piece)
            if not isinstance(piece, LearningRateSchedule):
                raise TypeError(f"schedules[{i}] must be an lrcore schedule or a number, "
                                f"got {type(piece).__name__}")
            pieces.append(piece)
        if not isinstance(boundaries, (list, tuple, np.ndarray)):
            raise TypeError(f"boundaries must be a list of steps, got {type(boundaries).__name__}")
        boundaries = [_int_in(b, f"boundaries[{i}]", 0, 2**63 - 1)
                      for i, b in enumerate(list(boundaries))]
        if len(boundaries) != len(pieces) - 1:
            raise ValueError(f"boundaries must hold len(schedules) - 1 = {len(pieces) - 1} "
                             f"steps, got {len(boundaries)}")
        if any(b > c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be in non-decreasing order, got "
                             f"{_short_repr(boundaries)}")
        self.schedules = pieces
        self.boundaries = boundaries
        if _warmup_depth(self) > MAX_WARMUP_NESTING:
            raise ValueError(f"schedules must not nest Warmups and Sequences more than "
                             f"{MAX_WARMUP_NESTING} deep, got a piece with "
                             f"{MAX_WARMUP_NESTING} or more nested levels")

    def _fields(self):
        return dict(pieces=[piece._compiled() for piece in self.schedules],
                    starts=self.boundaries)

    def _reference(self, s):
        starts = np.asarray(self.boundaries, dtype=np.int64)
        index = np.searchsorted(starts, s, side="right")    # boundaries <= s
        out = np.empty(s.shape)
        for i, piece in enumerate(self.schedules):
            take = index == i
            if take.any():
                out[take] = piece._reference(s[take] - (starts[i - 1] if i else 0))
        return out

    def get_config(self):
        return {"schedules": [serialize(piece) for piece in self.schedules],
                "boundaries": list(self.boundaries)}

    @classmethod
    def from_config(cls, config):
        _check_config(cls, config)
        if "schedules" not in config:
            raise ValueError(f"config must hold a 'schedules' entry, got {_short_repr(config)}")
        pieces = config["schedules"]
        if not isinstance(pieces, (list, tuple)):
            raise ValueError(f"config's schedules must be a list of schedule configs, got "
                             f"{_short_repr(pieces)}")
        # numbers are constant pieces; anything else must be a schedule config
        pieces = [piece if isinstance(piece, numbers.Real) and not isinstance(piece, bool)
                  else deserialize(piece) for piece in pieces]
        return cls(**dict(config, schedules=pieces))

    def __repr__(self):
        return f"Sequence(schedules={self.schedules!r}, boundaries={self.boundaries!r})"


SCHEDULES = {cls.__name__: cls for cls in (
    Constant, PiecewiseConstant, ExponentialDecay, NaturalExpDecay, InverseTimeDecay,
    PolynomialDecay, CosineDecay, CosineDecayRestarts, LinearCosineDecay,
    NoisyLinearCosineDecay, Warmup,
    Linear, InverseSqrt, WarmupStableDecay, OneCycle, Cyclic, Sequence)}


def serialize(schedule):
    """{"class_name": ..., "config": ...} for any lrcore schedule (Keras' layout)."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"schedule must be an lrcore schedule, got {type(schedule).__name__}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config):
    """The schedule serialize() described. A config (e.g. from a hostile checkpoint) nesting
    Warmups and Sequences deeper than MAX_WARMUP_NESTING, or holding more than 2**20 schedule
    configs in all (counting a config shared by several pieces once per use), is a ValueError
    before any recursion."""
    _check_config_nesting(config)
    if not _is_config(config):
        raise ValueError(f"config must be {{'class_name': one of {sorted(SCHEDULES)}, "
                         f"'config': {{...}}}}, got {_short_repr(config)}")
    return SCHEDULES[config["class_name"]].from_config(config["config"])


_MAX_CONFIG_NODES = 2**20


def _check_config_nesting(config):
    """Walk a config level by level, without recursion: its Warmup and Sequence levels must
    be at most MAX_WARMUP_NESTING deep, its schedule configs at most _MAX_CONFIG_NODES."""
    level, depth, nodes = [config], 0, 1
    while level:
        nested = [node for node in level if _is_config(node)
                  and node["class_name"] in ("Warmup", "Sequence")]
        if not nested:
            return
        depth += 1
        if depth > MAX_WARMUP_NESTING:
            raise ValueError(f"config must not nest Warmups more than {MAX_WARMUP_NESTING} "
                             f"deep (Warmups and Sequences count together)")
        level = []
        for node in nested:
            if node["class_name"] == "Warmup":
                level.append(node["config"].get("schedule"))
            elif isinstance(node["config"].get("schedules"), (list, tuple)):
                level.extend(node["config"]["schedules"])
            if nodes + len(level) > _MAX_CONFIG_NODES:
                raise ValueError(f"config must not hold more than {_MAX_CONFIG_NODES} "
                                 f"schedule configs")
        nodes += len(level)


def _is_config(config):
    return (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and config["class_name"] in SCHEDULES
            and isinstance(config.get("config"), dict))
