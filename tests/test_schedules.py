"""Schedules against closed forms computed here, element by element with the math module,
independently of both the C evaluation and the numpy one; at the edge steps (0, 1, each
boundary and decay_steps multiple −1/0/+1, 10×, 2**40), on both backends."""
import math
import re

import numpy as np
import pytest

import lrcore
from lrcore import schedules as S

from conftest import assert_round_trips


def edges(*points, extra=()):
    """0, 1, each point −1/0/+1, its 2× and 10×, and 2**40."""
    steps = {0, 1, 2**40, *extra}
    for p in points:
        p = int(p)
        steps |= {p - 1, p, p + 1, 2 * p, 10 * p}
    return sorted(s for s in steps if s >= 0)


def piecewise(boundaries, values):
    def f(s):
        for b, v in zip(boundaries, values):
            if s <= b:
                return v
        return values[-1]
    return f


def decay(lr0, steps, rate, staircase, shape):
    def f(s):
        p = s // steps if staircase else s / steps
        return shape(lr0, rate, p)
    return f


def polynomial(lr0, steps, end, power, cycle):
    def f(s):
        if cycle:
            span = steps * max(1, math.ceil(s / steps))
            done = s / span
        else:
            done = min(s, steps) / steps
        return (lr0 - end) * (1 - done) ** power + end
    return f


def cosine(lr0, steps, alpha):
    return lambda s: lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)) + alpha)


def restarts(lr0, first, t_mul, m_mul, alpha):
    def f(s):
        if t_mul == 1:
            i, start, length = s // first, (s // first) * first, first
        else:                       # walk the restarts one period at a time
            i, start, length = 0, 0.0, float(first)
            while start + length <= s:
                start, length, i = start + length, length * t_mul, i + 1
        done = (s - start) / length
        return lr0 * ((1 - alpha) * m_mul ** i * 0.5 * (1 + math.cos(math.pi * done)) + alpha)
    return f


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return x ^ (x >> 31)


def normal(seed, s):
    """The documented generator: SplitMix64 on the counters 2s, 2s + 1 offset by the mixed
    seed, 53-bit uniforms, Box–Muller."""
    base = (splitmix64(seed) + 2 * s) % 2**64
    u1 = ((splitmix64(base) >> 11) + 1) * 2.0**-53
    u2 = (splitmix64((base + 1) % 2**64) >> 11) * 2.0**-53
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def linear_cosine(lr0, steps, periods, alpha, beta, noise=None):
    def f(s):
        c = min(s, steps)
        lin = (steps - c) / steps
        if noise:
            variance, decay_, seed = noise
            lin += math.sqrt(variance / (1 + c) ** decay_) * normal(seed, s)
        cos = 0.5 * (1 + math.cos(2 * math.pi * periods * c / steps))
        return lr0 * ((alpha + lin) * cos + beta)
    return f


def warmup(inner, steps, start, linear):
    def f(s):
        if s < steps:
            return start + (inner(0) - start) * s / steps if linear else start
        return inner(s - steps)
    return f


# (schedule, closed form, steps)
CASES = [
    (S.Constant(0.3), lambda s: 0.3, edges()),
    (S.PiecewiseConstant([100, 250], [1.0, 0.5, 0.1]), piecewise([100, 250], [1.0, 0.5, 0.1]),
     edges(100, 250)),
    (S.PiecewiseConstant([], [0.7]), lambda s: 0.7, edges()),
    (S.ExponentialDecay(0.1, 1000, 0.96), decay(0.1, 1000, 0.96, False, lambda a, r, p: a * r ** p),
     edges(1000)),
    (S.ExponentialDecay(0.1, 1, 0.99, staircase=True),
     decay(0.1, 1, 0.99, True, lambda a, r, p: a * r ** p), edges(1, extra=range(40))),
    (S.ExponentialDecay(2.0, 7, 0.5, staircase=True),
     decay(2.0, 7, 0.5, True, lambda a, r, p: a * r ** p), edges(7, 14)),
    (S.NaturalExpDecay(0.5, 10, 0.3), decay(0.5, 10, 0.3, False, lambda a, r, p: a * math.exp(-r * p)),
     edges(10)),
    (S.NaturalExpDecay(0.5, 10, 0.3, staircase=True),
     decay(0.5, 10, 0.3, True, lambda a, r, p: a * math.exp(-r * p)), edges(10, 20)),
    (S.InverseTimeDecay(1.0, 5, 0.5), decay(1.0, 5, 0.5, False, lambda a, r, p: a / (1 + r * p)),
     edges(5)),
    (S.InverseTimeDecay(1.0, 5, 0.5, staircase=True),
     decay(1.0, 5, 0.5, True, lambda a, r, p: a / (1 + r * p)), edges(5, 10)),
    (S.PolynomialDecay(0.1, 100), polynomial(0.1, 100, 1e-4, 1.0, False), edges(100)),
    (S.PolynomialDecay(0.1, 100, end_learning_rate=0.01, power=2.0),
     polynomial(0.1, 100, 0.01, 2.0, False), edges(100)),
    (S.PolynomialDecay(0.1, 100, end_learning_rate=0.01, power=0.5, cycle=True),
     polynomial(0.1, 100, 0.01, 0.5, True), edges(100, 200, 300)),
    (S.CosineDecay(1.0, 1000), cosine(1.0, 1000, 0.0), edges(500, 1000)),
    (S.CosineDecay(0.2, 50, alpha=0.1), cosine(0.2, 50, 0.1), edges(25, 50)),
    (S.CosineDecayRestarts(1.0, 10), restarts(1.0, 10, 2.0, 1.0, 0.0), edges(10, 30, 70, 150)),
    (S.CosineDecayRestarts(0.5, 8, t_mul=1.5, m_mul=0.8, alpha=0.05),
     restarts(0.5, 8, 1.5, 0.8, 0.05), edges(8, 20, 38, 65, extra=(105, 106, 166, 167))),
    (S.CosineDecayRestarts(0.5, 10, t_mul=1.0, m_mul=0.9), restarts(0.5, 10, 1.0, 0.9, 0.0),
     edges(10, 20, 30)),
    (S.CosineDecayRestarts(1.0, 3, t_mul=3.0), restarts(1.0, 3, 3.0, 1.0, 0.0),
     edges(3, 12, 39, 120, 363, extra=(3**20 - 1) // 2 * 3 + np.arange(-1, 2))),
    (S.LinearCosineDecay(0.1, 100), linear_cosine(0.1, 100, 0.5, 0.0, 0.001), edges(50, 100)),
    (S.LinearCosineDecay(0.1, 100, num_periods=2.0, alpha=0.1, beta=0.0),
     linear_cosine(0.1, 100, 2.0, 0.1, 0.0), edges(25, 50, 100)),
    (S.NoisyLinearCosineDecay(0.1, 100, seed=7),
     linear_cosine(0.1, 100, 0.5, 0.0, 0.001, noise=(1.0, 0.55, 7)), edges(50, 100)),
    (S.NoisyLinearCosineDecay(0.1, 100, initial_variance=0.01, variance_decay=1.0, seed=2**64 - 1),
     linear_cosine(0.1, 100, 0.5, 0.0, 0.001, noise=(0.01, 1.0, 2**64 - 1)), edges(100)),
    (S.Warmup(S.CosineDecay(1.0, 100), 10), warmup(cosine(1.0, 100, 0.0), 10, 0.0, True),
     edges(10, 110)),
    (S.Warmup(0.1, 5, initial_learning_rate=0.01, mode="constant"),
     warmup(lambda s: 0.1, 5, 0.01, False), edges(5)),
    (S.Warmup(S.PiecewiseConstant([20], [0.4, 0.2]), 4, initial_learning_rate=0.1),
     warmup(piecewise([20], [0.4, 0.2]), 4, 0.1, True), edges(4, 24)),
    (S.Warmup(S.Warmup(S.ExponentialDecay(1.0, 10, 0.5), 3), 2, mode="constant"),
     warmup(warmup(decay(1.0, 10, 0.5, False, lambda a, r, p: a * r ** p), 3, 0.0, True), 2, 0.0, False),
     edges(2, 5, 15)),
]
IDS = [re.sub(r"[^\w=.,-]+", "_", repr(c[0]))[:90] for c in CASES]


@pytest.mark.parametrize("schedule, closed_form, steps", CASES, ids=IDS)
def test_values_follow_the_closed_form(backend, schedule, closed_form, steps):
    want = np.array([closed_form(s) for s in steps])
    got = schedule(np.array(steps, dtype=np.int64))
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert all(math.isfinite(v) for v in got)
    for s, w in zip(steps[:8], want[:8]):            # scalar calls give the same numbers
        value = schedule(s)
        assert isinstance(value, float)
        assert value == pytest.approx(w, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("schedule, closed_form, steps", CASES, ids=IDS)
def test_compiled_and_numpy_evaluations_agree(compiled, schedule, closed_form, steps):
    steps = np.array(steps + list(range(0, 400, 7)), dtype=np.int64)
    compiled_values = schedule(steps)
    lrcore.set_backend("numpy")
    np.testing.assert_allclose(schedule(steps), compiled_values, rtol=1e-13, atol=1e-16)


def test_vectorized_call_keeps_the_shape_and_takes_any_integer_dtype(backend):
    schedule = S.ExponentialDecay(1.0, 2, 0.5)
    steps = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_allclose(schedule(steps), 0.5 ** (steps / 2))
    assert schedule(steps).shape == (2, 3)
    assert schedule(np.int32(4)) == 0.25


def test_noise_is_a_pure_function_of_seed_and_step(backend):
    schedule = S.NoisyLinearCosineDecay(0.1, 1000, seed=11)
    steps = np.arange(0, 3000, 3)
    first = schedule(steps)
    np.testing.assert_array_equal(first, schedule(steps))                 # replay
    np.testing.assert_array_equal(first[100:], schedule(steps[100:]))     # resume mid-way
    assert not np.array_equal(first, S.NoisyLinearCosineDecay(0.1, 1000, seed=12)(steps))


def test_noise_is_standard_normal():
    draws = S.normal_noise(5, np.arange(200_000))
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
    assert abs(np.mean(draws < -1.959964) - 0.025) < 0.002        # a tail, not just moments
    assert abs(np.mean(np.abs(draws) < 0.674490) - 0.5) < 0.005


# (constructor, keywords, exception, message regex)
BAD_ARGUMENTS = [
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=0, decay_rate=0.9),
     ValueError, r"decay_steps must be a finite number > 0, got 0"),
    (S.NaturalExpDecay, dict(initial_learning_rate=0.1, decay_steps=-2.5, decay_rate=0.9),
     ValueError, r"decay_steps must be a finite number > 0, got -2.5"),
    (S.InverseTimeDecay, dict(initial_learning_rate=float("nan"), decay_steps=1, decay_rate=1),
     ValueError, r"initial_learning_rate must be a finite number >= 0, got nan"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=1, decay_rate=-0.5),
     ValueError, r"decay_rate must be a finite number >= 0, got -0.5"),
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=1, decay_rate=0.5,
                              staircase="yes"), TypeError, r"staircase must be a bool, got str"),
    (S.PiecewiseConstant, dict(boundaries=[10, 10], values=[1, 2, 3]), ValueError,
     r"boundaries must be strictly increasing, got \[10.0, 10.0\]"),
    (S.PiecewiseConstant, dict(boundaries=[10, 20], values=[1, 2]), ValueError,
     r"values must hold len\(boundaries\) \+ 1 = 3 rates, got 2"),
    (S.PiecewiseConstant, dict(boundaries=5, values=[1, 2]), TypeError,
     r"boundaries must be a list of steps, got int"),
    (S.PiecewiseConstant, dict(boundaries=[5], values=[1, -2]), ValueError,
     r"values\[1\] must be a finite number >= 0, got -2.0"),
    (S.PolynomialDecay, dict(initial_learning_rate=0.1, decay_steps=10, power=-1), ValueError,
     r"power must be a finite number >= 0, got -1.0"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, alpha=-0.1), ValueError,
     r"alpha must be a finite number >= 0"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=0.5),
     ValueError, r"t_mul must be a finite number >= 1, got 0.5"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=10, m_mul=-1),
     ValueError, r"m_mul must be a finite number >= 0"),
    (S.LinearCosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, beta=float("inf")),
     ValueError, r"beta must be a finite number >= 0, got inf"),
    (S.NoisyLinearCosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, seed=-1),
     ValueError, r"seed must be an int in \[0, 2\*\*64\), got -1"),
    (S.NoisyLinearCosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, seed=1.5),
     TypeError, r"seed must be an int in \[0, 2\*\*64\), got 1.5"),
    (S.NoisyLinearCosineDecay, dict(initial_learning_rate=0.1, decay_steps=10,
                                    initial_variance=-1), ValueError,
     r"initial_variance must be a finite number >= 0"),
    (S.Warmup, dict(schedule=0.1, warmup_steps=-1), ValueError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got -1"),
    (S.Warmup, dict(schedule=0.1, warmup_steps=2.5), ValueError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got 2.5"),
    (S.Warmup, dict(schedule=0.1, warmup_steps=3, mode="cosine"), ValueError,
     r"mode must be 'linear' or 'constant', got 'cosine'"),
    (S.Warmup, dict(schedule=lambda s: 0.1, warmup_steps=3), TypeError,
     r"schedule must be an lrcore schedule or a number, got function"),
    (S.Constant, dict(learning_rate="0.1"), TypeError, r"learning_rate must be a real number, got str"),
]


@pytest.mark.parametrize("cls, kwargs, exc, message", BAD_ARGUMENTS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(BAD_ARGUMENTS)])
def test_invalid_arguments_are_rejected(cls, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("step, exc, message", [
    (-1, ValueError, r"step must be >= 0, got -1"),
    (np.array([3, -2]), ValueError, r"step must be >= 0, got -2"),
    (1.5, TypeError, r"step must be an int or an integer ndarray, got float"),
    (np.array([1.0]), TypeError, r"step must be an int or an integer ndarray, got dtype float64"),
    (True, TypeError, r"step must be an int or an integer ndarray, got bool"),
    (2**63, ValueError, r"step must fit in int64"),
])
def test_invalid_steps_are_rejected(backend, step, exc, message):
    with pytest.raises(exc, match=message):
        S.CosineDecay(0.1, 10)(step)


@pytest.mark.parametrize("schedule", [c[0] for c in CASES], ids=IDS)
def test_config_repr_and_serialization_round_trip(schedule):
    assert_round_trips(schedule)


@pytest.mark.parametrize("schedule", [c[0] for c in CASES], ids=IDS)
def test_a_schedule_in_use_pickles_and_copies(backend, schedule):
    """Evaluated and given to an optimizer, a schedule still pickles and deep-copies (torch
    deep-copies param groups when loading a state_dict), and the copy gives the same rates."""
    import copy
    import pickle
    steps = np.arange(0, 300, 13)
    want = schedule(steps)
    lrcore.SGD(lr=schedule)
    for clone in (pickle.loads(pickle.dumps(schedule)), copy.deepcopy(schedule)):
        assert clone == schedule
        np.testing.assert_array_equal(clone(steps), want)


def test_deserialize_rejects_foreign_configs():
    with pytest.raises(ValueError, match=r"config must be \{'class_name': one of"):
        S.deserialize({"class_name": "StepLR", "config": {}})


def test_warmup_config_nests_the_inner_schedule():
    config = S.Warmup(S.CosineDecay(1.0, 10), 5).get_config()
    assert config == {"schedule": {"class_name": "CosineDecay",
                                   "config": {"initial_learning_rate": 1.0, "decay_steps": 10,
                                              "alpha": 0.0, "warmup_target": None,
                                              "warmup_steps": 0}},
                      "warmup_steps": 5, "initial_learning_rate": 0.0, "mode": "linear"}


STEPPED = [S.ExponentialDecay(0.1, 3, 0.5, staircase=True), S.CosineDecayRestarts(0.05, 4),
           S.Warmup(S.PolynomialDecay(0.1, 10, cycle=True), 3),
           S.PiecewiseConstant([2, 5], [0.1, 0.05, 0.01]),
           S.NoisyLinearCosineDecay(0.05, 10, initial_variance=0.01, seed=3)]


@pytest.mark.parametrize("schedule", STEPPED, ids=lambda s: type(s).__name__)
def test_the_step_uses_the_schedule_at_the_step_count(backend, rng, schedule):
    """Update k uses schedule(k): the kernels evaluate it in C, the reference in numpy; the
    params equal the reference update run with the plotted values."""
    rates = schedule(np.arange(12))
    p = rng.standard_normal(33).astype(np.float32)
    want, buf = p.copy(), np.zeros_like(p)
    state = lrcore.SGD(lr=schedule, momentum=0.9)
    for k in range(12):
        g = rng.standard_normal(33).astype(np.float32)
        assert state.current_lr == rates[k]
        assert lrcore.step(p, g, state) == rates[k]
        lrcore.reference.sgd(want, g, buf, step=k, lr=rates[k], momentum=0.9)
    np.testing.assert_array_equal(p, want)


def test_a_noisy_rate_below_zero_is_used_as_computed(backend):
    schedule = S.NoisyLinearCosineDecay(0.1, 100, initial_variance=25.0, seed=1)
    rates = schedule(np.arange(50))
    k = int(np.argmax(rates < 0))
    assert rates[k] < 0
    state = lrcore.SGD(lr=schedule)
    state.load_state_dict(dict(state.state_dict(), step_count=k))
    p = np.zeros(1)
    assert lrcore.step(p, np.ones(1), state) == rates[k]
    assert p[0] == -rates[k] > 0                                  # the step ascended


def test_a_non_finite_rate_is_rejected_and_changes_nothing(backend):
    schedule = S.ExponentialDecay(1.0, 1, 1e300)                 # 1, 1e300, inf, ...
    state = lrcore.Adam(lr=schedule)
    state.load_state_dict(dict(state.state_dict(), step_count=2))  # unbound, at step 2
    p = np.ones(4)
    with pytest.raises(ValueError, match=r"lr schedule gave inf at step 2; expected a finite number"):
        lrcore.step(p, np.ones(4), state)
    np.testing.assert_array_equal(p, np.ones(4))
    assert state.step_count == 2 and state.buffers == {} and state.array_steps == []
    assert state.state_dict()["arrays"] == []                     # the first step's binding undone
    lrcore.step(np.ones(3), np.ones(3), lrcore.Adam(lr=schedule))  # a state at step 0 is fine


# ---- issue 11: exact restart index and cycle, bounded time, bounded nesting, huge ints ----

from fractions import Fraction

from conftest import run_python


def restart_oracle(first, t_mul, s):
    """(i, f) in exact rationals on the given doubles: i the largest with F·G_i <= s,
    G_i = 1 + t + ... + t^(i−1); f = (s − F·G_i)/(F·t^i). Integer arithmetic on a common
    power-of-two scale (t = a/2^b): G_i = N_i / 2^(b(i−1)), N_i+1 = 2^b·N_i + a^i."""
    F, t = Fraction(first), Fraction(t_mul)
    if t == 1:
        i = s * F.denominator // F.numerator
        return i, (s - F * i) / F
    a, b = t.numerator, t.denominator.bit_length() - 1      # t = a / 2^b
    c, d = F.numerator, F.denominator                       # F = c / d
    i, N, power = 0, 0, 1                                   # G_i·2^(b·i) = N, a^i = power
    while c * (N + power) <= s * d << (b * i):              # F·G_i+1 <= s
        N, power, i = (N + power) << b, power * a, i + 1
    G = Fraction(N, 1 << (b * i))
    return i, (s - F * G) / (F * t**i)


def restart_cases(rng, count):
    """(F, t, s): random and tie-constructed restart starts, with the steps around them."""
    cases = []
    for _ in range(count):
        kind = rng.integers(4)
        if kind == 0:       # non-dyadic t, integer or fractional F: the 5 % off-by-one class
            t, F = float(rng.uniform(1.01, 3.0)), float(rng.choice([rng.integers(1, 60),
                                                                     rng.uniform(1, 60)]))
        elif kind == 1:     # integer t: every start F·(t^i − 1)/(t − 1) is a tie for integer F
            t, F = float(rng.integers(2, 10)), float(rng.integers(1, 40))
        elif kind == 2:     # t with d fraction bits, F a multiple of 2^(d·(i−1)): ties at i
            d = int(rng.integers(1, 6))
            t = 1.0 + float(rng.integers(1, 2**d)) / 2**d
            F = float(rng.integers(1, 30) * 2**(d * int(rng.integers(0, 4))))
        else:               # t = 1.84-like with F = k·2^52: a tie at restart 2
            t = float(rng.uniform(1.05, 2.0))
            F = float(rng.integers(1, 8)) * 2.0**(52 - math.frexp(t - 1)[1] + 1)
        i = int(rng.integers(0, 9))
        start = Fraction(F) * sum(Fraction(t)**j for j in range(i))
        if start >= 2**62:
            continue
        base = math.floor(start)
        cases += [(F, t, s) for s in (base - 1, base, base + 1) if s >= 0]
    return cases


def test_restart_index_matches_the_exact_oracle(backend, rng):
    cases = restart_cases(rng, 700)
    ties = 0
    for F, t, s in cases:
        i, f = restart_oracle(F, t, s)
        ties += f == 0 and i >= 2
        schedule = S.CosineDecayRestarts(1.0, F, t_mul=t, m_mul=0.5)
        want = 0.5**i * 0.5 * (1 + math.cos(math.pi * float(f)))
        assert schedule(s) == pytest.approx(want, rel=1e-12, abs=1e-15), (F, t, s, i, float(f))
    assert ties > 150               # the constructed ties beyond restart 1 really are ties


@pytest.mark.parametrize("first, t_mul, step, want", [
    (3, 1.84, 3, 1.0),                  # restart 1 starts at step 3 exactly
    (5, 1.2, 11, None),                 # 5·(1 + 1.2) is just below 11: restart 2 has started
    (3, 3.0, 120, None), (3, 3.0, 121, None), (3, 3.0, 363, None), (3, 3.0, 364, None),
])
def test_reported_restart_cases(backend, first, t_mul, step, want):
    schedule = S.CosineDecayRestarts(1.0, first, t_mul=t_mul, m_mul=0.5)
    i, f = restart_oracle(first, t_mul, step)
    exact = 0.5**i * 0.5 * (1 + math.cos(math.pi * float(f)))
    assert schedule(step) == pytest.approx(exact, rel=1e-13)
    if want is not None:                # m_mul = 1: the start of a restart is the full rate
        assert S.CosineDecayRestarts(1.0, first, t_mul=t_mul)(step) == want
    assert S.CosineDecayRestarts(1.0, 5, t_mul=1.2)(11) > 0.99


def test_restart_values_at_large_steps_match_the_oracle(backend, rng):
    for _ in range(40):
        F, t = float(rng.uniform(1, 100)), float(rng.uniform(1.05, 4.0))
        s = int(rng.integers(2**40, 2**63))
        i, f = restart_oracle(F, t, s)
        schedule = S.CosineDecayRestarts(1.0, F, t_mul=t, m_mul=0.9)
        want = 0.9**i * 0.5 * (1 + math.cos(math.pi * float(f)))
        assert schedule(s) == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_polynomial_cycle_uses_the_exact_ceiling(backend, rng):
    assert math.isfinite(S.PolynomialDecay(1.0, 2.3, 0.0, power=0.5, cycle=True)(207))
    assert math.isfinite(S.PolynomialDecay(1.0, 417, 1e-4, power=0.5, cycle=True)(2**62))
    for _ in range(300):
        D = float(rng.uniform(1, 500))
        power, end = float(rng.choice([0.5, 1.0, 2.0, 0.3])), float(rng.choice([0.0, 1e-4]))
        schedule = S.PolynomialDecay(1.0, D, end, power=power, cycle=True)
        steps = [int(rng.integers(0, 2**int(rng.integers(1, 63))))] + \
            [f(D * j) for j in (1, 2, 90) for f in (math.floor, math.ceil)]
        for s in steps:
            c = max(1, math.ceil(Fraction(s) / Fraction(D)))
            base = 1 - Fraction(s) / (Fraction(D) * c)
            want = (1.0 - end) * float(base)**power + end
            assert schedule(s) == pytest.approx(want, rel=1e-13, abs=0), (D, power, s)
    D = Fraction(2.3)                   # 2.2999999999999998: 207/D > 90, so ⌈207/D⌉ = 91
    assert S.PolynomialDecay(1.0, 2.3, 0.0, power=0.5, cycle=True)(207) == pytest.approx(
        float(1 - 207 / (D * 91))**0.5, rel=1e-14)


HANG_CHECK = """
import sys, numpy as np, lrcore
from lrcore import schedules as S
lrcore.set_backend(sys.argv[1])
steps = np.array([0, 1, 10, 2**40, 9 * 10**18, 2**63 - 1], dtype=np.int64)
rejected = 0
for args in [dict(t_mul=1e308), dict(first_decay_steps=1e-308), dict(t_mul=1.0000000000000002),
             dict(t_mul=1 + 2**-44), dict(first_decay_steps=1.7e308, t_mul=1e308),
             dict(t_mul=1.0, first_decay_steps=1.0), dict(t_mul=2.0**1000)]:
    try:
        schedule = S.CosineDecayRestarts(**dict(dict(initial_learning_rate=1.0,
                                                     first_decay_steps=10.0), **args))
    except ValueError:
        rejected += 1
        continue
    assert np.isfinite(schedule(steps)).all() and np.isfinite(schedule(2**63 - 1))
    state = lrcore.SGD(lr=schedule)
    state.load_state_dict(dict(state.state_dict(), step_count=9 * 10**18))
    lrcore.step(np.ones(2), np.ones(2), state)            # in the step too
for schedule in [S.PolynomialDecay(1.0, 1.0000001, cycle=True, power=0.5),
                 S.PolynomialDecay(1.0, 1e300, cycle=True), S.PiecewiseConstant([1e300], [1, 2]),
                 S.ExponentialDecay(1.0, 1e-300, 0.5), S.NoisyLinearCosineDecay(1.0, 1e-300),
                 S.Warmup(S.CosineDecayRestarts(1.0, 1.0, t_mul=1.0), 2**63 - 1)]:
    schedule(steps)
nested = 0.1
for _ in range(S.MAX_WARMUP_NESTING):     # one inner evaluation per level, not 2^depth
    nested = S.Warmup(nested, 1)
assert nested(steps[:3]).tolist() == [0.0, 0.0, 0.0] and nested(32) == 0.1
print("rejected", rejected)
"""


@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_every_schedule_returns_in_bounded_time(backend_name):
    """The reported hangs (t_mul=1e308, first_decay_steps=1e-308, t_mul=1+2^-52 at 9e18) and
    other extremes: accepted ones return at every step < 2**63, the others are rejected."""
    if backend_name == "cython" and lrcore.backend != "cython":
        pytest.skip("compiled kernels not built")
    out = run_python("-c", HANG_CHECK, backend_name, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rejected", "2"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(first_decay_steps=1e-308), r"first_decay_steps must be a finite number >= 1, got 1e-308"),
    (dict(first_decay_steps=0.5, t_mul=1.0), r"first_decay_steps must be a finite number >= 1"),
    (dict(t_mul=1.0000000000000002), r"t_mul must be 1.0 or far enough from 1 that fewer than "
                                     r"2\*\*51 restarts .*got 1.0000000000000002"),
])
def test_unevaluable_restart_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.CosineDecayRestarts(**dict(dict(initial_learning_rate=1.0, first_decay_steps=10), **kwargs))


def test_polynomial_cycle_needs_decay_steps_of_one_step_or_more():
    with pytest.raises(ValueError, match=r"decay_steps must be a finite number >= 1, got 0.5"):
        S.PolynomialDecay(1.0, 0.5, cycle=True)
    assert S.PolynomialDecay(1.0, 0.5)(1) == pytest.approx(1e-4)     # without cycle: any > 0


def nested_warmups(depth):
    schedule = 0.1
    for _ in range(depth):
        schedule = S.Warmup(schedule, 1)
    return schedule


def test_warmup_nesting_is_bounded(backend):
    deepest = nested_warmups(S.MAX_WARMUP_NESTING)
    assert deepest(0) == 0.0 and deepest(S.MAX_WARMUP_NESTING) == 0.1
    assert S.deserialize(S.serialize(deepest)) == deepest
    with pytest.raises(ValueError, match=r"schedule must not nest Warmups more than 32 deep"):
        S.Warmup(deepest, 1)


def test_deeply_nested_configs_are_value_errors_not_recursion():
    config = S.serialize(S.Constant(0.1))
    for _ in range(100_000):
        config = {"class_name": "Warmup", "config": {"schedule": config, "warmup_steps": 1}}
    with pytest.raises(ValueError, match=r"config must not nest Warmups more than 32 deep"):
        S.deserialize(config)
    deep_list = [0]
    for _ in range(100_000):
        deep_list = [deep_list]
    with pytest.raises(ValueError, match=r"config must be \{'class_name'"):
        S.deserialize({"class_name": "Warmup", "config": {"schedule": deep_list, "warmup_steps": 1}})


@pytest.mark.parametrize("config, message", [
    ({"class_name": "Warmup", "config": {"warmup_steps": 1}}, r"config must hold a 'schedule'"),
    ({"class_name": "Constant", "config": {"lr": 1}}, r"got unknown keys \['lr'\]"),
    ({"class_name": ["Warmup"], "config": {}}, r"config must be \{'class_name'"),
])
def test_malformed_configs_are_value_errors(config, message):
    with pytest.raises(ValueError, match=message):
        S.deserialize(config)


HUGE = 10**400


@pytest.mark.parametrize("cls, kwargs, exc, message", [
    (S.ExponentialDecay, dict(initial_learning_rate=0.1, decay_steps=HUGE, decay_rate=0.5),
     ValueError, r"decay_steps must be a finite number > 0, got an int too large for a float"),
    (S.PolynomialDecay, dict(initial_learning_rate=0.1, decay_steps=HUGE), ValueError,
     r"decay_steps must be a finite number > 0, got an int too large"),
    (S.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=HUGE), ValueError,
     r"first_decay_steps must be a finite number >= 1, got an int too large"),
    (S.NoisyLinearCosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, seed=HUGE),
     ValueError, r"seed must be an int in \[0, 2\*\*64\), got 1000"),
    (S.Warmup, dict(schedule=0.1, warmup_steps=HUGE), ValueError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got an int >= 2\*\*63"),
    (S.Warmup, dict(schedule=0.1, warmup_steps=2**63), ValueError, r"warmup_steps must be"),
    (S.Warmup, dict(schedule=HUGE, warmup_steps=1), ValueError, r"learning_rate must be"),
    (S.PiecewiseConstant, dict(boundaries=[HUGE], values=[1, 2]), ValueError,
     r"boundaries\[0\] must be a finite number, got an int too large for a float"),
    (S.PiecewiseConstant, dict(boundaries=[1], values=[1, HUGE]), ValueError, r"values\[1\] must"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, alpha=HUGE), ValueError,
     r"alpha must be a finite number >= 0, got an int too large"),
])
def test_huge_ints_are_value_errors_naming_the_argument(cls, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("schedule", [
    S.ExponentialDecay(0.1, 10**300, 0.5), S.PolynomialDecay(0.1, 10**300, cycle=True),
    S.CosineDecayRestarts(0.1, 10**300), S.LinearCosineDecay(0.1, 10**300),
    S.CosineDecay(0.1, 10**300), S.PiecewiseConstant([10**300], [0.1, 0.2]),
    S.Warmup(0.1, 2**63 - 1)], ids=lambda s: type(s).__name__)
def test_large_int_arguments_within_float_range_evaluate(backend, schedule):
    """Large ints that fit a float (or int64) reach C doubles / int64 and numpy untouched."""
    values = schedule(np.array([0, 5, 2**63 - 1]))
    assert np.isfinite(values).all()
    assert schedule(5) == values[1]


def test_t_mul_close_to_one_is_accepted_down_to_about_two_to_minus_47():
    """README: with first_decay_steps = 1, t_mul = 1 + 2^-47 has < 2**51 restarts before
    step 2**63 (index ≈ ln(1 + 2^16)·2^47 ≈ 2^50.5), 1 + 2^-48 has more (≈ 2^51.5)."""
    schedule = S.CosineDecayRestarts(1.0, 1, t_mul=1 + 2**-47)
    i, f = restart_oracle(1, 1 + 2**-47, 1500)     # the oracle walks every restart
    assert i == 1499 and schedule(1500) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * float(f))), rel=1e-9)
    assert math.isfinite(schedule(2**63 - 1))
    with pytest.raises(ValueError, match=r"t_mul must be 1.0 or far enough from 1"):
        S.CosineDecayRestarts(1.0, 1, t_mul=1 + 2**-48)
