"""Linear, InverseSqrt, WarmupStableDecay, CosineDecay's Keras 3 warmup and get() (Hugging
Face's scheduler names) against closed forms written here with the math module, element by
element, at the edge steps and in random configurations, on both backends; and against the
peers themselves (transformers' LambdaLR multipliers, Keras 3's CosineDecay) when installed.

Tolerances, float64: the classes agree with their closed forms to a relative error of 1e-12
(absolute 1e-15 × the peak rate, for values at a cosine's zero); get() agrees with
learning_rate × Hugging Face's multiplier to the same; Keras evaluates in float32, so it is held
to a relative 2e-6."""
import math
import os
import re
import warnings

import numpy as np
import pytest

import lrcore
from lrcore import schedules as S

from conftest import assert_round_trips

RTOL, ATOL = 1e-12, 1e-15


def edges(*points, extra=()):
    """0, 1, each point −1/0/+1, its 2× and 10×, and 2**40."""
    steps = {0, 1, 2**40, *extra}
    for p in points:
        p = int(p)
        steps |= {p - 1, p, p + 1, 2 * p, 10 * p}
    return sorted(s for s in steps if 0 <= s < 2**63)


def linear(lr0, end, D):
    return lambda s: end if s >= D else lr0 + (end - lr0) * s / D


def inverse_sqrt(peak, W):
    def f(s):
        if s < W:
            return peak * s / W
        if W == 0:
            return peak * math.sqrt(10000 / (s + 10000))
        return peak * math.sqrt(W / s)
    return f


def wsd(peak, W, S_, D, decay="linear", end=0.0, lr0=0.0):
    shapes = {"linear": lambda p: 1 - p, "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
              "1-sqrt": lambda p: 1 - math.sqrt(p)}

    def f(s):
        if s < W:
            return lr0 + (peak - lr0) * s / W
        if s < W + S_:
            return peak
        if s < W + S_ + D:
            return end + (peak - end) * shapes[decay]((s - W - S_) / D)
        return end
    return f


def keras_cosine(lr0, D, alpha=0.0, target=None, W=0):
    """Keras 3's CosineDecay.__call__, written out."""
    def decay(step, frm):
        return frm * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / D)) + alpha)

    def f(s):
        if target is None:
            return decay(min(s, D), lr0)
        s = min(s, D + W)
        if s < W:
            return (target - lr0) * s / W + lr0
        return decay(s - W, target)
    return f


CASES = [
    (S.Linear(0.1, 0.001, 100), linear(0.1, 0.001, 100), edges(50, 100)),
    (S.Linear(0.0, 0.5, 7), linear(0.0, 0.5, 7), edges(7)),              # rising
    (S.Linear(0.3, 0.3, 2.5), linear(0.3, 0.3, 2.5), edges(2, 3)),        # fractional D
    (S.InverseSqrt(1e-3, 4000), inverse_sqrt(1e-3, 4000), edges(4000, 16000)),
    (S.InverseSqrt(0.5, 1), inverse_sqrt(0.5, 1), edges(1, 4, 100)),
    (S.InverseSqrt(0.5, 0), inverse_sqrt(0.5, 0), edges(10000, 30000)),
    (S.WarmupStableDecay(0.01, 100, 800, 100), wsd(0.01, 100, 800, 100), edges(100, 900, 1000)),
    (S.WarmupStableDecay(0.01, 10, 50, 40, decay="cosine", end_learning_rate=1e-4,
                         initial_learning_rate=1e-3),
     wsd(0.01, 10, 50, 40, "cosine", 1e-4, 1e-3), edges(10, 60, 80, 100)),
    (S.WarmupStableDecay(2.0, 0, 0, 9, decay="1-sqrt", end_learning_rate=0.5),
     wsd(2.0, 0, 0, 9, "1-sqrt", 0.5), edges(9, extra=range(12))),
    (S.WarmupStableDecay(1.0, 3, 4, 0), wsd(1.0, 3, 4, 0), edges(3, 7)),   # no decay phase
    (S.CosineDecay(0.1, 100, warmup_target=1.0, warmup_steps=10),
     keras_cosine(0.1, 100, 0.0, 1.0, 10), edges(10, 60, 110)),
    (S.CosineDecay(0.0, 50, alpha=0.1, warmup_target=0.3, warmup_steps=5),
     keras_cosine(0.0, 50, 0.1, 0.3, 5), edges(5, 30, 55)),
    (S.CosineDecay(0.2, 40, warmup_target=0.5), keras_cosine(0.2, 40, 0.0, 0.5, 0), edges(40)),
    (S.CosineDecay(0.2, 40, warmup_steps=9), keras_cosine(0.2, 40), edges(9, 40)),  # as Keras: no warmup
]
IDS = [re.sub(r"[^\w=.,-]+", "_", repr(c[0]))[:90] for c in CASES]


def check(schedule, closed_form, steps, scale=1.0):
    want = np.array([closed_form(int(s)) for s in steps])
    got = schedule(np.array(steps, dtype=np.int64))
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale)
    for s, w in zip(list(steps)[:10], want[:10]):       # scalar calls give the same numbers
        value = schedule(int(s))
        assert isinstance(value, float) and value == got[list(steps).index(s)]


@pytest.mark.parametrize("schedule, closed_form, steps", CASES, ids=IDS)
def test_values_follow_the_closed_form(backend, schedule, closed_form, steps):
    check(schedule, closed_form, steps)


@pytest.mark.parametrize("schedule, closed_form, steps", CASES, ids=IDS)
def test_compiled_and_numpy_evaluations_agree(compiled, schedule, closed_form, steps):
    steps = np.array(steps + list(range(0, 400, 7)) + [2**63 - 1], dtype=np.int64)
    compiled_values = schedule(steps)
    lrcore.set_backend("numpy")
    np.testing.assert_allclose(schedule(steps), compiled_values, rtol=1e-15, atol=0)


def test_existing_cosine_decay_is_unchanged_without_a_warmup_target(backend):
    steps = np.array(edges(30, 60, 90), dtype=np.int64)
    for alpha in (0.0, 0.25):
        got = S.CosineDecay(0.7, 60, alpha=alpha)(steps)
        want = [0.7 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(s, 60) / 60)) + alpha)
                for s in steps]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # warmup_target=None with warmup_steps > 0 is the plain decay, as in Keras
    np.testing.assert_array_equal(S.CosineDecay(0.7, 60, warmup_steps=20)(steps),
                                  S.CosineDecay(0.7, 60)(steps))


def random_steps(rng, *points):
    steps = set(edges(*points))
    steps |= {int(x) for x in rng.integers(0, 3 * max(points) + 2, 20)}
    return sorted(steps)


def test_random_configurations_follow_the_closed_forms(backend, rng):
    for _ in range(150):
        peak = float(rng.uniform(1e-5, 2.0))
        W, S_, D = (int(rng.integers(0, 200)) for _ in range(3))
        end, lr0 = float(rng.uniform(0, peak)), float(rng.uniform(0, peak))
        decay = str(rng.choice(S.DECAY_SHAPES))
        check(S.WarmupStableDecay(peak, W, S_, D, decay, end, lr0),
              wsd(peak, W, S_, D, decay, end, lr0), random_steps(rng, W + 1, W + S_ + 1, W + S_ + D + 1),
              scale=peak)
        Dl = float(rng.choice([rng.integers(1, 500), rng.uniform(0.5, 500)]))
        check(S.Linear(peak, end, Dl), linear(peak, end, Dl), random_steps(rng, Dl + 1), scale=peak)
        check(S.InverseSqrt(peak, W), inverse_sqrt(peak, W), random_steps(rng, W + 1, 20000),
              scale=peak)
        alpha, target = float(rng.uniform(0, 0.5)), float(rng.uniform(0, 2.0))
        check(S.CosineDecay(lr0, D + 1, alpha, target, W), keras_cosine(lr0, D + 1, alpha, target, W),
              random_steps(rng, W + 1, W + D + 2), scale=max(target, lr0))


# ---- get(): Hugging Face's multipliers, written out from transformers/optimization.py -----

def hf_multiplier(name, W, N, **kw):
    """The LambdaLR multiplier of transformers' get_scheduler(name, ...) at step s."""
    def ramp(s):
        return s / max(1, W)

    def f(s):
        if name == "constant":
            return 1.0
        if name == "constant_with_warmup":
            return ramp(s) if s < W else 1.0
        if name == "inverse_sqrt":
            T = W or 10000
            return ramp(s) if s < W else 1 / math.sqrt((s + T - W) / T)
        if name == "warmup_stable_decay":
            m, D = kw.get("min_lr_ratio", 0.0), kw["num_decay_steps"]
            S_ = kw.get("num_stable_steps", N - W - D if N is not None else None)
            kind = kw.get("decay_type", "cosine")
            if s < W:
                return ramp(s) * (1 - m) + m
            if s < W + S_:
                return 1.0
            if s < W + S_ + D:
                p = (s - W - S_) / max(1, D)
                g = {"linear": 1 - p, "cosine": 0.5 * (1 + math.cos(math.pi * p)),
                     "1-sqrt": 1 - math.sqrt(p)}[kind]
                return g * (1 - m) + m
            return m
        if s < W:
            return ramp(s)
        p = (s - W) / max(1, N - W)
        if name == "linear":
            return max(0.0, (N - s) / max(1, N - W))
        if name in ("cosine", "cosine_with_min_lr"):
            m = kw.get("min_lr_rate", kw.get("min_lr", 0.0) / kw.get("lr", 1.0))
            c = 0.5 * (1 + math.cos(math.pi * kw.get("num_cycles", 0.5) * 2 * p))
            return max(0.0, c * (1 - m) + m)
        if name == "cosine_with_restarts":
            if p >= 1:
                return 0.0
            return 0.5 * (1 + math.cos(math.pi * ((kw.get("num_cycles", 1) * p) % 1.0)))
        if name == "polynomial":
            lr, end, power = kw["lr"], kw.get("lr_end", 1e-7), kw.get("power", 1.0)
            if s > N:
                return end / lr
            return ((lr - end) * (1 - (s - W) / (N - W)) ** power + end) / lr
        raise AssertionError(name)
    return f


def hf_cases(rng, count):
    """(name, lr, W, N, kwargs) in random configurations, and the fixed edge ones."""
    cases = [("constant", 0.1, None, None, {}), ("constant_with_warmup", 0.1, 0, None, {}),
             ("linear", 0.1, 10, 10, {}), ("linear", 0.1, 10, 4, {}), ("linear", 0.1, 0, 1, {}),
             ("cosine", 0.1, 10, 10, {}), ("cosine", 0.1, 10, 3, {}),
             ("cosine", 0.1, 5, 105, {"num_cycles": 0.3}),
             ("cosine_with_restarts", 0.1, 5, 105, {}),
             ("cosine_with_restarts", 0.1, 0, 90, {"num_cycles": 3}),
             ("polynomial", 0.1, 10, 11, {"lr_end": 0.01, "power": 2.0}),
             ("inverse_sqrt", 0.1, 0, None, {}), ("inverse_sqrt", 0.1, 1, None, {}),
             ("cosine_with_min_lr", 0.1, 10, 110, {"min_lr": 1e-3}),
             ("cosine_with_min_lr", 0.1, 0, 50, {"min_lr_rate": 0.1, "num_cycles": 0.25}),
             ("warmup_stable_decay", 0.1, 10, 100, {"num_decay_steps": 20}),
             ("warmup_stable_decay", 0.1, 0, None,
              {"num_decay_steps": 7, "num_stable_steps": 3, "decay_type": "1-sqrt",
               "min_lr_ratio": 0.1})]
    for _ in range(count):
        name = str(rng.choice(list(S.HF_SCHEDULES)))
        lr, W, N = float(rng.uniform(1e-5, 1.0)), int(rng.integers(0, 60)), int(rng.integers(1, 400))
        kw = {}
        if name == "cosine":
            kw["num_cycles"] = float(rng.choice([0.5, rng.uniform(0.05, 0.5)]))
        elif name == "cosine_with_min_lr":
            kw = {"min_lr": lr * float(rng.uniform(0, 0.5))} if rng.integers(2) else \
                {"min_lr_rate": float(rng.uniform(0, 0.5))}
        elif name == "cosine_with_restarts":
            kw["num_cycles"] = int(rng.integers(1, min(5, max(1, N - W)) + 1))
        elif name == "polynomial":
            N = W + int(rng.integers(1, 300))
            kw = {"lr_end": lr * float(rng.uniform(0, 0.9)), "power": float(rng.choice([0.5, 1.0, 2.0]))}
        elif name == "warmup_stable_decay":
            kw = {"num_decay_steps": int(rng.integers(0, 100)),
                  "decay_type": str(rng.choice(S.DECAY_SHAPES)),
                  "min_lr_ratio": float(rng.choice([0.0, rng.uniform(0, 0.5)]))}
            N = W + kw["num_decay_steps"] + int(rng.integers(0, 100))
        cases.append((name, lr, W, N, kw))
    return cases


def last_equal_step(name, N, kw):
    """The last step get() promises HF's value at: N, or N − 1 for cosine_with_restarts with
    num_cycles other than 1 (HF drops to 0 at N, lrcore restarts)."""
    if N is None:
        return 1000
    return N - 1 if name == "cosine_with_restarts" and kw.get("num_cycles", 1) != 1 else N


def restart_tie(W, N, kw, s):
    """Whether num_cycles·(s − W)/max(1, N − W) is an integer > 0 below num_cycles: a restart
    begins exactly at s."""
    from fractions import Fraction
    x = Fraction(kw.get("num_cycles", 1)) * (s - W) / max(1, N - W)
    return s >= W and x.denominator == 1 and 0 < x < kw.get("num_cycles", 1)


def hf_steps(W, N):
    W, N = W or 0, N or 50
    return sorted({*range(0, N + 3), *edges(W + 1, N + 1)} - {2**40}) if N < 500 else edges(W + 1, N + 1)


@pytest.mark.parametrize("case", hf_cases(np.random.default_rng(7), 120),
                         ids=lambda c: f"{c[0]}-W{c[2]}-N{c[3]}-{c[4]}")
def test_get_equals_the_hugging_face_multipliers(backend, case):
    name, lr, W, N, kw = case
    schedule = S.get(name, lr, W, N, **kw)
    closed = hf_multiplier(name, W, N, lr=lr, **kw)
    steps = [s for s in hf_steps(W, N) if s <= last_equal_step(name, N, kw)]
    want = np.array([lr * closed(s) for s in steps])
    got = schedule(np.array(steps, dtype=np.int64))
    if name == "cosine_with_restarts":
        # the closed form's rounded (num_cycles·progress) % 1 may fall just short of an exact
        # restart; there lrcore restarts, at the full rate
        ties = np.array([restart_tie(W, N, kw, s) for s in steps])
        np.testing.assert_allclose(got[ties], lr, rtol=RTOL)
        got, want = got[~ties], want[~ties]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * lr)
    assert S.deserialize(S.serialize(schedule)) == schedule


def test_get_after_the_last_step():
    """What the docstring promises past num_training_steps."""
    assert S.get("linear", 0.1, 10, 100)(10**6) == 0.0
    assert S.get("cosine", 0.1, 10, 100)(150) == 0.0          # HF's cosine climbs back here
    assert S.get("cosine_with_restarts", 0.1, 10, 100)(150) == 0.0
    assert S.get("polynomial", 0.1, 10, 100, lr_end=1e-3)(10**9) == 1e-3
    assert S.get("warmup_stable_decay", 0.1, 10, 100, num_decay_steps=20,
                 min_lr_ratio=0.25)(10**12) == 0.025
    three = S.get("cosine_with_restarts", 0.1, 0, 90, num_cycles=3)
    assert three(89) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 29 / 30)), rel=RTOL)
    assert three(90) == 0.1                                   # restarts on (HF: 0)


@pytest.mark.parametrize("args, kwargs, exc, message", [
    (("cosine", 0.1), {}, ValueError, r"cosine requires `num_warmup_steps`, please provide"),
    (("cosine", 0.1, 10), {}, ValueError, r"cosine requires `num_training_steps`"),
    (("linear", 0.1, 10), {}, ValueError, r"linear requires `num_training_steps`"),
    (("inverse_sqrt", 0.1), {}, ValueError, r"inverse_sqrt requires `num_warmup_steps`"),
    (("warmup_stable_decay", 0.1, 10, 100), {}, ValueError,
     r"warmup_stable_decay requires `num_decay_steps`"),
    (("warmup_stable_decay", 0.1, 10), dict(num_decay_steps=5), ValueError,
     r"requires `num_training_steps` or `num_stable_steps`"),
    (("warmup_stable_decay", 0.1, 10, 12), dict(num_decay_steps=5), ValueError,
     r"num_training_steps must be >= num_warmup_steps \+ num_decay_steps = 15"),
    (("warmup_stable_decay", 0.1, 10, 100), dict(num_decay_steps=5, warmup_type="cosine"),
     ValueError, r"warmup_type must be 'linear'"),
    (("warmup_stable_decay", 0.1, 10, 100), dict(num_decay_steps=5, decay_type="exp"),
     ValueError, r"decay_type must be 'linear', 'cosine' or '1-sqrt', got 'exp'"),
    (("warmup_stable_decay", 0.1, 10, 100), dict(num_decay_steps=5, num_cycles=1.0),
     ValueError, r"num_cycles must be 0.5"),
    (("cosine_with_min_lr", 0.1, 10, 100), {}, ValueError, r"requires `min_lr` or `min_lr_rate`"),
    (("cosine_with_min_lr", 0.1, 10, 100), dict(min_lr=1e-3, min_lr_rate=0.1), ValueError,
     r"Only one of min_lr or min_lr_rate should be set"),
    (("cosine", 0.1, 10, 100), dict(num_cycles=1.0), ValueError,
     r"num_cycles must be > 0 and <= 0.5"),
    (("cosine_with_restarts", 0.1, 10, 13), dict(num_cycles=4), ValueError,
     r"num_cycles must be > 0 and <= max\(1, num_training_steps - num_warmup_steps\) = 3"),
    (("polynomial", 0.1, 10, 100), dict(lr_end=0.2), ValueError,
     r"lr_end \(0.2\) must be smaller than learning_rate \(0.1\)"),
    (("polynomial", 0.1, 10, 10), {}, ValueError, r"num_training_steps must be > num_warmup_steps"),
    (("cosine", 0.1, 10, 100), dict(lr_end=0.0), TypeError, r"'cosine' takes no keyword 'lr_end'"),
    (("step", 0.1, 10, 100), {}, ValueError, r"name must be one of \['linear', 'cosine'"),
    (("linear", -0.1, 10, 100), {}, ValueError, r"learning_rate must be a finite number >= 0"),
    (("linear", 0.1, -1, 100), {}, ValueError, r"num_warmup_steps must be an int >= 0"),
    (("linear", 0.1, 1.5, 100), {}, TypeError, r"num_warmup_steps must be an int >= 0"),
])
def test_get_rejects_missing_and_bad_arguments(args, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        S.get(*args, **kwargs)


BAD_ARGUMENTS = [
    (S.Linear, dict(initial_learning_rate=0.1, end_learning_rate=0.0, decay_steps=0), ValueError,
     r"decay_steps must be a finite number > 0, got 0"),
    (S.Linear, dict(initial_learning_rate=0.1, end_learning_rate=-1.0, decay_steps=5), ValueError,
     r"end_learning_rate must be a finite number >= 0, got -1.0"),
    (S.Linear, dict(initial_learning_rate="a", end_learning_rate=0.0, decay_steps=5), TypeError,
     r"initial_learning_rate must be a real number, got str"),
    (S.InverseSqrt, dict(peak_learning_rate=float("nan"), warmup_steps=5), ValueError,
     r"peak_learning_rate must be a finite number >= 0, got nan"),
    (S.InverseSqrt, dict(peak_learning_rate=0.1, warmup_steps=-1), ValueError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got -1"),
    (S.InverseSqrt, dict(peak_learning_rate=0.1, warmup_steps=2.0), TypeError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got float 2.0"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=1, stable_steps=-2,
                               decay_steps=1), ValueError, r"stable_steps must be an int >= 0"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=1, stable_steps=2,
                               decay_steps=True), TypeError, r"decay_steps must be an int >= 0"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=2**62, stable_steps=2**62,
                               decay_steps=1), ValueError,
     r"warmup_steps \+ stable_steps \+ decay_steps must be < 2\*\*63"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=1, stable_steps=2,
                               decay_steps=3, decay="exp"), ValueError,
     r"decay must be 'linear', 'cosine' or '1-sqrt', got 'exp'"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=1, stable_steps=2,
                               decay_steps=3, end_learning_rate=float("inf")), ValueError,
     r"end_learning_rate must be a finite number >= 0, got inf"),
    (S.WarmupStableDecay, dict(peak_learning_rate=0.1, warmup_steps=1, stable_steps=2,
                               decay_steps=3, initial_learning_rate=-0.5), ValueError,
     r"initial_learning_rate must be a finite number >= 0"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_target=-1), ValueError,
     r"warmup_target must be a finite number >= 0"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_target="1"), TypeError,
     r"warmup_target must be a real number, got str"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_steps=-3), ValueError,
     r"warmup_steps must be an int >= 0 and < 2\*\*63, got -3"),
    (S.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10, warmup_steps=2**63),
     ValueError, r"warmup_steps must be an int >= 0 and < 2\*\*63, got an int >= 2\*\*63"),
]


@pytest.mark.parametrize("cls, kwargs, exc, message", BAD_ARGUMENTS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(BAD_ARGUMENTS)])
def test_invalid_arguments_are_rejected(cls, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("schedule", [c[0] for c in CASES] + [S.get("cosine", 0.1, 10, 100)],
                         ids=IDS + ["get-cosine"])
def test_config_repr_and_serialization_round_trip(schedule):
    assert_round_trips(schedule)


def test_configs_hold_every_argument():
    assert S.WarmupStableDecay(0.1, 1, 2, 3, "cosine").get_config() == {
        "peak_learning_rate": 0.1, "warmup_steps": 1, "stable_steps": 2, "decay_steps": 3,
        "decay": "cosine", "end_learning_rate": 0.0, "initial_learning_rate": 0.0}
    assert S.CosineDecay(0.1, 10, warmup_target=0.5, warmup_steps=3).get_config() == {
        "initial_learning_rate": 0.1, "decay_steps": 10, "alpha": 0.0, "warmup_target": 0.5,
        "warmup_steps": 3}
    assert S.Linear(0.1, 0.0, 5).get_config() == {"initial_learning_rate": 0.1,
                                                   "end_learning_rate": 0.0, "decay_steps": 5}
    assert S.InverseSqrt(0.1, 5).get_config() == {"peak_learning_rate": 0.1, "warmup_steps": 5}
    # configs written before warmup_target existed still load
    assert S.CosineDecay.from_config({"initial_learning_rate": 0.1, "decay_steps": 10,
                                      "alpha": 0.0}) == S.CosineDecay(0.1, 10)


@pytest.mark.parametrize("schedule", [S.Linear(0.1, 0.01, 5), S.InverseSqrt(0.1, 3),
                                      S.WarmupStableDecay(0.1, 2, 3, 4, "1-sqrt", 0.01),
                                      S.CosineDecay(0.01, 6, warmup_target=0.1, warmup_steps=3)],
                         ids=lambda s: type(s).__name__)
def test_the_step_uses_the_schedule_at_the_step_count(backend, rng, schedule):
    rates = schedule(np.arange(12))
    p = rng.standard_normal(9)
    want, buf = p.copy(), np.zeros_like(p)
    state = lrcore.SGD(lr=schedule, momentum=0.9)
    for k in range(12):
        g = rng.standard_normal(9)
        assert lrcore.step(p, g, state) == rates[k]
        lrcore.reference.sgd(want, g, buf, step=k, lr=rates[k], momentum=0.9)
    np.testing.assert_array_equal(p, want)


# ---- the peers themselves -----------------------------------------------------------------

@pytest.mark.parametrize("case", hf_cases(np.random.default_rng(11), 150),
                         ids=lambda c: f"{c[0]}-W{c[2]}-N{c[3]}-{c[4]}")
def test_get_equals_transformers_get_scheduler(case):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    name, lr, W, N, kw = case
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.get_scheduler(name, optimizer, num_warmup_steps=W,
                                        num_training_steps=N, scheduler_specific_kwargs=kw)
    multiplier = hf.lr_lambdas[0]
    steps = [s for s in hf_steps(W, N) if s <= last_equal_step(name, N, kw)]
    want = np.array([lr * multiplier(s) for s in steps])
    got = S.get(name, lr, W, N, **kw)(np.array(steps, dtype=np.int64))
    if name == "cosine_with_restarts":
        ties = np.array([restart_tie(W, N, kw, s) for s in steps])
        np.testing.assert_allclose(got[ties], lr, rtol=RTOL)
        got, want = got[~ties], want[~ties]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * lr)


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip("needs Keras 3")
    return keras


@pytest.mark.parametrize("kwargs", [
    dict(initial_learning_rate=0.1, decay_steps=100, warmup_target=1.0, warmup_steps=10),
    dict(initial_learning_rate=0.0, decay_steps=37, alpha=0.2, warmup_target=0.3, warmup_steps=7),
    dict(initial_learning_rate=0.2, decay_steps=40, warmup_target=0.5),
    dict(initial_learning_rate=0.2, decay_steps=40, alpha=0.1),
    dict(initial_learning_rate=0.2, decay_steps=40, warmup_steps=9),
])
def test_cosine_decay_equals_keras(kwargs):
    keras = keras_module()
    theirs = keras.optimizers.schedules.CosineDecay(**kwargs)
    ours = S.CosineDecay(**kwargs)
    steps = range(0, 170)
    want = np.array([float(keras.ops.convert_to_numpy(theirs(s))) for s in steps])
    np.testing.assert_allclose(ours(np.arange(170)), want, rtol=2e-6, atol=1e-7)


def test_past_the_last_step_differs_from_transformers_only_where_documented():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")

    def hf(name, W, N, **kw):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        return transformers.get_scheduler(name, optimizer, num_warmup_steps=W,
                                          num_training_steps=N,
                                          scheduler_specific_kwargs=kw).lr_lambdas[0]
    after = np.arange(101, 400)
    for name, kw in [("linear", {}), ("cosine_with_restarts", {}), ("polynomial", {"lr_end": 1e-3}),
                     ("warmup_stable_decay", {"num_decay_steps": 20, "min_lr_ratio": 0.25})]:
        want = [0.1 * hf(name, 10, 100, **kw)(int(s)) for s in after]
        np.testing.assert_allclose(S.get(name, 0.1, 10, 100, **kw)(after), want, rtol=RTOL)
    # the cosine: HF's climbs back after step 100, lrcore's holds its trough
    assert 0.1 * hf("cosine", 10, 100)(190) == pytest.approx(0.1)      # a full period later
    assert S.get("cosine", 0.1, 10, 100)(190) == 0.0
    # restarts with num_cycles = 3: HF's is 0 from step 90, lrcore's restarts
    assert hf("cosine_with_restarts", 0, 90, num_cycles=3)(90) == 0.0
    assert S.get("cosine_with_restarts", 0.1, 0, 90, num_cycles=3)(90) == 0.1
