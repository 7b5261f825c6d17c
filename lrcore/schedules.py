"""Learning-rate schedules: TensorFlow v1 decays / Keras 3 schedules, evaluated in compiled code.

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
rebuilds it; serialize() / deserialize() handle any of them, Warmup's inner schedule
included.
"""
import math
import numbers

import numpy as np

from lrcore import _backend, _validate

__all__ = ["LearningRateSchedule", "Constant", "PiecewiseConstant", "ExponentialDecay",
           "NaturalExpDecay", "InverseTimeDecay", "PolynomialDecay", "CosineDecay",
           "CosineDecayRestarts", "LinearCosineDecay", "NoisyLinearCosineDecay", "Warmup",
           "serialize", "deserialize"]


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
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


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


def _steps(value, name):
    """A positive step count (decay_steps ...): kept an int when given one."""
    number = _validate.real(value, name, low=-math.inf)
    if number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else number


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
        p = s / self.decay_steps
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
    decay_steps⌉), so the rate climbs back at each multiple (and is the initial rate at 0)."""

    _arguments = ("initial_learning_rate", "decay_steps", "end_learning_rate", "power", "cycle")

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=1e-4, power=1.0,
                 cycle=False):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.end_learning_rate = _rate(end_learning_rate, "end_learning_rate")
        self.power = _validate.real(power, "power")
        self.cycle = _validate.flag(cycle, "cycle")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.decay_steps,
                    end=self.end_learning_rate, power=self.power, cycle=self.cycle)

    def _reference(self, s):
        if self.cycle:
            span = self.decay_steps * np.maximum(1.0, np.ceil(s / self.decay_steps))
            clipped = s.astype(np.float64)
        else:
            span = self.decay_steps
            clipped = np.minimum(s, self.decay_steps).astype(np.float64)
        return ((self.initial_learning_rate - self.end_learning_rate)
                * np.power(1.0 - clipped / span, self.power) + self.end_learning_rate)


class CosineDecay(LearningRateSchedule):
    """lr(s) = initial · ((1 − α) · ½(1 + cos(π s'/D)) + α), s' = min(s, D), D = decay_steps."""

    _arguments = ("initial_learning_rate", "decay_steps", "alpha")

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.alpha = _validate.real(alpha, "alpha")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.decay_steps, alpha=self.alpha)

    def _reference(self, s):
        done = np.minimum(s, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + np.cos(math.pi * done))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


class CosineDecayRestarts(LearningRateSchedule):
    """SGDR, as TensorFlow's cosine_decay_restarts. With F = first_decay_steps, restart i
    starts at F·(t_mul^i − 1)/(t_mul − 1) (F·i when t_mul = 1) and lasts F·t_mul^i steps; i is
    the largest with start ≤ s, found exactly (not through a rounded log); f = (s − start)/length:
        lr(s) = initial · ((1 − α) · m_mul^i · ½(1 + cos πf) + α)."""

    _arguments = ("initial_learning_rate", "first_decay_steps", "t_mul", "m_mul", "alpha")

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.first_decay_steps = _steps(first_decay_steps, "first_decay_steps")
        self.t_mul = _validate.real(t_mul, "t_mul", low=1.0)
        self.m_mul = _validate.real(m_mul, "m_mul")
        self.alpha = _validate.real(alpha, "alpha")

    def _fields(self):
        return dict(initial=self.initial_learning_rate, steps=self.first_decay_steps,
                    t_mul=self.t_mul, m_mul=self.m_mul, alpha=self.alpha)

    def _start(self, i):
        if self.t_mul == 1.0:
            return self.first_decay_steps * i
        return self.first_decay_steps * (np.power(self.t_mul, i) - 1.0) / (self.t_mul - 1.0)

    def _reference(self, s):
        s = s.astype(np.float64)
        if self.t_mul == 1.0:
            i = np.floor(s / self.first_decay_steps)
        else:
            # a guess from the log, then settled on the exact inequality start(i) <= s
            i = np.floor(np.log1p(s / self.first_decay_steps * (self.t_mul - 1.0))
                         / math.log(self.t_mul))
            while (over := (i > 0) & (self._start(i) > s)).any():
                i = np.where(over, i - 1.0, i)
            while (under := self._start(i + 1.0) <= s).any():
                i = np.where(under, i + 1.0, i)
        done = (s - self._start(i)) / (self.first_decay_steps * np.power(self.t_mul, i))
        cosine = np.power(self.m_mul, i) * 0.5 * (1.0 + np.cos(math.pi * done))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


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
        return (self.decay_steps - clipped) / self.decay_steps

    def _reference(self, s):
        clipped = np.minimum(s, self.decay_steps).astype(np.float64)
        cosine = 0.5 * (1.0 + np.cos(2.0 * math.pi * self.num_periods * clipped / self.decay_steps))
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
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) \
                or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
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


class Warmup(LearningRateSchedule):
    """A warmup of W = warmup_steps before `schedule` (Keras 3 convention: the wrapped
    schedule starts after the warmup):
        s < W:  "linear": initial_learning_rate + (schedule(0) − initial_learning_rate) · s/W;
                "constant": initial_learning_rate
        s ≥ W:  schedule(s − W)
    `schedule` is any lrcore schedule or a number (a constant rate)."""

    _arguments = ("schedule", "warmup_steps", "initial_learning_rate", "mode")

    def __init__(self, schedule, warmup_steps, initial_learning_rate=0.0, mode="linear"):
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, (bool, np.bool_)):
            schedule = Constant(schedule)
        if not isinstance(schedule, LearningRateSchedule):
            raise TypeError(f"schedule must be an lrcore schedule or a number, "
                            f"got {type(schedule).__name__}")
        if isinstance(warmup_steps, (bool, np.bool_)) or not isinstance(warmup_steps, numbers.Integral) \
                or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if mode not in ("linear", "constant"):
            raise ValueError(f"mode must be 'linear' or 'constant', got {mode!r}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.initial_learning_rate = _rate(initial_learning_rate, "initial_learning_rate")
        self.mode = mode

    def _fields(self):
        return dict(inner=self.schedule._compiled(), steps=self.warmup_steps,
                    initial=self.initial_learning_rate, linear=self.mode == "linear")

    def _reference(self, s):
        after = self.schedule._reference(np.maximum(s - self.warmup_steps, 0))
        if self.mode == "linear":
            target = self.schedule._reference(np.zeros(1, dtype=np.int64))[0]
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
        return cls(**dict(config, schedule=deserialize(config["schedule"])))

    def __repr__(self):
        return (f"Warmup(schedule={self.schedule!r}, warmup_steps={self.warmup_steps!r}, "
                f"initial_learning_rate={self.initial_learning_rate!r}, mode={self.mode!r})")


SCHEDULES = {cls.__name__: cls for cls in (
    Constant, PiecewiseConstant, ExponentialDecay, NaturalExpDecay, InverseTimeDecay,
    PolynomialDecay, CosineDecay, CosineDecayRestarts, LinearCosineDecay,
    NoisyLinearCosineDecay, Warmup)}


def serialize(schedule):
    """{"class_name": ..., "config": ...} for any lrcore schedule (Keras' layout)."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"schedule must be an lrcore schedule, got {type(schedule).__name__}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config):
    """The schedule serialize() described."""
    if not (isinstance(config, dict) and config.get("class_name") in SCHEDULES
            and isinstance(config.get("config"), dict)):
        raise ValueError(f"config must be {{'class_name': one of {sorted(SCHEDULES)}, "
                         f"'config': {{...}}}}, got {config!r}")
    return SCHEDULES[config["class_name"]].from_config(config["config"])
