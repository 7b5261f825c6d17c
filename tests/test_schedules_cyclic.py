"""OneCycle and Cyclic against torch's OneCycleLR and CyclicLR themselves (a scheduler driven
on a dummy optimizer, its lr read at every step), and against closed forms written here with
the math module; Sequence against optax's join_schedules where optax is installed and
against a closed form always. Both backends; float64 throughout."""
import math
import warnings

import numpy as np
import pytest

import lrcore
from lrcore import schedules as S

from conftest import assert_round_trips

# torch's values and lrcore's are the same operations in the same order on the same C library:
# equal to the last bit in practice; the bound is what the tests hold them to
RTOL = 1e-12


def assert_close(got, want, rtol=RTOL):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
    bad = np.flatnonzero(err > rtol)
    assert not bad.size, (f"{bad.size} values off, first at index {bad[0]}: got "
                          f"{got.flat[bad[0]]!r}, want {want.flat[bad[0]]!r}")


# ---- closed forms, written from the documented formulas ---------------------------------------

def one_cycle(max_lr, T, pct=0.3, anneal="cos", div=25.0, final_div=1e4, three=False):
    initial = max_lr / div
    minimum = initial / final_div
    if three:
        ends = [pct * T - 1, 2 * pct * T - 2, T - 1]
        rates = [(initial, max_lr), (max_lr, initial), (initial, minimum)]
    else:
        ends = [pct * T - 1, T - 1]
        rates = [(initial, max_lr), (max_lr, minimum)]

    def f(s):
        s = min(s, T - 1)                   # the final value from T on
        begin = 0.0
        for k, (end, (a, b)) in enumerate(zip(ends, rates)):
            if s <= end or k == len(ends) - 1:
                frac = (s - begin) / (end - begin)
                if anneal == "cos":
                    return b + (a - b) / 2 * (math.cos(math.pi * frac) + 1)
                return a + (b - a) * frac
            begin = end
    return f


def cyclic(base, top, up, down=None, mode="triangular", gamma=1.0):
    down = up if down is None else down
    length = up + down
    ratio = up / length

    def f(s):
        c = math.floor(1 + s / length)
        x = 1 + s / length - c
        h = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if mode == "triangular":
            g = 1.0
        elif mode == "triangular2":
            g = 0.0 if c > 1024 else 1 / 2.0 ** (c - 1)
        else:
            g = gamma ** s
        return base + (top - base) * h * g
    return f


# ---- torch's schedulers, driven step by step ---------------------------------------------------

def torch_rates(make, steps):
    """The lr torch's scheduler gives at each of `steps`: the group's lr after construction is
    step 0's; the scheduler steps on from there (jumping through last_epoch to far steps).
    NaN where torch's float arithmetic raises OverflowError."""
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=1.0, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # stepping the scheduler without optimizer steps
        scheduler = make(optimizer)
        out = []
        for s in map(int, steps):       # Python ints: torch's arithmetic on them, not numpy's
            if s != scheduler.last_epoch:
                scheduler.last_epoch = s - 1
                try:
                    scheduler.step()
                except OverflowError:
                    out.append(math.nan)
                    continue
            out.append(optimizer.param_groups[0]["lr"])
    return np.array(out, dtype=np.float64)


def torch_one_cycle(schedule, steps):
    torch = pytest.importorskip("torch")
    return torch_rates(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=schedule.max_learning_rate, total_steps=schedule.total_steps,
        pct_start=float(schedule.pct_start), anneal_strategy=schedule.anneal,
        div_factor=schedule.div_factor, final_div_factor=schedule.final_div_factor,
        three_phase=schedule.three_phase, cycle_momentum=False), steps)


def torch_cyclic(schedule, steps):
    torch = pytest.importorskip("torch")
    return torch_rates(lambda opt: torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=schedule.base_learning_rate, max_lr=schedule.max_learning_rate,
        step_size_up=schedule.step_size_up, step_size_down=schedule.step_size_down,
        mode=schedule.mode, gamma=schedule.gamma, cycle_momentum=False), steps)


def random_one_cycle(rng):
    T = int(rng.choice([1, 2, 3, 5, 10, 37, 100, 1000, 4321]))
    while True:
        pct = float(rng.choice([0.0, 1.0, 0.5, rng.uniform(0, 1)]))
        if float(pct * T) != 1.0 and not (pct == 1.0 and T == 1):
            break
    return S.OneCycle(float(10 ** rng.uniform(-5, 1)), T, pct_start=pct,
                      anneal=str(rng.choice(["cos", "linear"])),
                      div_factor=float(10 ** rng.uniform(0, 3)),
                      final_div_factor=float(10 ** rng.uniform(0, 12)),
                      three_phase=bool(rng.integers(2)))


def random_cyclic(rng):
    up = int(rng.integers(1, 60)) if rng.integers(2) else float(rng.uniform(0.5, 60))
    down = [None, 0, int(rng.integers(1, 60)), float(rng.uniform(0.5, 60))][rng.integers(4)]
    base = float(10 ** rng.uniform(-6, -1))
    return S.Cyclic(base, base * float(10 ** rng.uniform(-1, 3)), up, down,
                    mode=str(rng.choice(["triangular", "triangular2", "exp_range"])),
                    gamma=float(1 - 10 ** rng.uniform(-6, -1)))


ONE_CYCLES = [S.OneCycle(0.1, 100), S.OneCycle(1.0, 10, pct_start=0.25, anneal="linear"),
              S.OneCycle(0.01, 1000, three_phase=True), S.OneCycle(0.5, 7, pct_start=0.0),
              S.OneCycle(0.5, 7, pct_start=1.0, three_phase=True), S.OneCycle(2.0, 1),
              S.OneCycle(0.3, 3, pct_start=0.2, three_phase=True),   # phase ends below 0
              S.OneCycle(0.3, 9, pct_start=0.8, three_phase=True)]   # 2p·T − 2 past T − 1
CYCLICS = [S.Cyclic(0.001, 0.1, 5), S.Cyclic(0.001, 0.1, 4, 7, mode="triangular2"),
           S.Cyclic(0.1, 0.01, 2.5, 0, mode="exp_range", gamma=0.99),
           S.Cyclic(0.0, 1.0, 3, 1, mode="exp_range", gamma=0.9999)]


@pytest.mark.parametrize("schedule", ONE_CYCLES, ids=repr)
def test_one_cycle_is_torch_at_every_step(backend, schedule):
    steps = np.arange(schedule.total_steps)
    assert_close(schedule(steps), torch_one_cycle(schedule, steps))


def test_one_cycle_random_configurations_are_torch(backend, rng):
    worst = 0.0
    for _ in range(60):
        schedule = random_one_cycle(rng)
        steps = np.arange(schedule.total_steps)
        got, want = schedule(steps), torch_one_cycle(schedule, steps)
        assert_close(got, want)
        worst = max(worst, float(np.max(np.abs(got - want) / want)))
    assert worst <= RTOL


@pytest.mark.parametrize("schedule", ONE_CYCLES, ids=repr)
def test_one_cycle_follows_the_closed_form_and_holds_its_final_value(backend, schedule):
    T = schedule.total_steps
    closed = one_cycle(schedule.max_learning_rate, T, schedule.pct_start, schedule.anneal,
                       schedule.div_factor, schedule.final_div_factor, schedule.three_phase)
    steps = sorted(s for s in {0, 1, T // 3, T // 2, T - 2, T - 1, T, T + 1, 10 * T, 2**40,
                                2**63 - 1} if s >= 0)
    assert_close(schedule(np.array(steps)), [closed(s) for s in steps])
    assert schedule(T) == schedule(2**63 - 1) == schedule(T - 1)
    if schedule.pct_start * T > 1:      # step 0 in the first phase: max / div_factor
        assert schedule(0) == pytest.approx(schedule.max_learning_rate / schedule.div_factor,
                                            rel=1e-15)


def test_one_cycle_peaks_at_max_at_the_end_of_its_first_phase(backend):
    schedule = S.OneCycle(0.2, 100, pct_start=0.3)     # e1 = 30 − 1 = 29
    assert schedule(29) == 0.2
    assert schedule(99) == pytest.approx(0.2 / 25 / 1e4, rel=1e-12)
    three = S.OneCycle(0.2, 100, pct_start=0.3, three_phase=True)   # e2 = 58
    assert three(29) == 0.2 and three(58) == pytest.approx(0.2 / 25, rel=1e-15)


@pytest.mark.parametrize("schedule", CYCLICS, ids=repr)
def test_cyclic_is_torch_at_every_step(backend, schedule):
    steps = np.arange(200)
    assert_close(schedule(steps), torch_cyclic(schedule, steps))


def test_cyclic_random_configurations_are_torch(backend, rng):
    worst = 0.0
    for _ in range(60):
        schedule = random_cyclic(rng)
        total = float(schedule.step_size_up) + float(schedule.step_size_down
                                                     if schedule.step_size_down is not None
                                                     else schedule.step_size_up)
        edges = {int(k * total) + d for k in range(1, 6) for d in (-1, 0, 1)}
        edges |= {int(k * float(schedule.step_size_up)) + d for k in (1, 3) for d in (-1, 0, 1)}
        steps = np.array(sorted(set(range(150)) | edges | {10**6, 123_456_789}))
        got, want = schedule(steps), torch_cyclic(schedule, steps)
        # torch's 2.0 ** (c − 1) overflows past cycle 1025: the factor is 0, the rate the base
        overflowed = np.isnan(want)
        assert schedule.mode == "triangular2" or not overflowed.any()
        want[overflowed] = schedule.base_learning_rate
        assert_close(got, want)
        worst = max(worst, float(np.max(np.abs(got - want) / want)))
    assert worst <= RTOL


@pytest.mark.parametrize("schedule", CYCLICS, ids=repr)
def test_cyclic_follows_the_closed_form(backend, schedule):
    closed = cyclic(schedule.base_learning_rate, schedule.max_learning_rate,
                    schedule.step_size_up, schedule.step_size_down, schedule.mode, schedule.gamma)
    steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 99, 100, 101, 10**6, 2**40, 2**53 + 1]
    assert_close(schedule(np.array(steps)), [closed(s) for s in steps], rtol=1e-9)


def test_cyclic_triangle_shape(backend):
    schedule = S.Cyclic(0.1, 0.5, 2, 6)     # up over 2 steps, down over 6: period 8
    assert_close(schedule(np.arange(9)), [0.1, 0.3, 0.5, 0.5 - 0.4 / 6, 0.5 - 0.8 / 6, 0.3,
                                          0.5 - 1.6 / 6, 0.5 - 2.0 / 6, 0.1], rtol=1e-15)
    halving = S.Cyclic(0.0, 1.0, 1, mode="triangular2")
    assert list(halving(np.array([1, 3, 5, 7]))) == [1.0, 0.5, 0.25, 0.125]
    # past cycle 1025 torch's 2.0 ** (c − 1) overflows; the factor is 0 and the rate the base
    assert S.Cyclic(0.25, 1.0, 1, mode="triangular2")(2 * 2000 + 1) == 0.25


# ---- Sequence --------------------------------------------------------------------------------

def joined(pieces, boundaries):
    """optax's join_schedules, written out: piece i for b[i−1] <= s < b[i] at s − b[i−1]."""
    def f(s):
        start = 0
        for piece, end in zip(pieces, [*boundaries, math.inf]):
            if s < end:
                return piece(s - start)
            start = end
        return pieces[-1](s - start)
    return f


def closed_cosine(lr0, steps, alpha=0.0):
    return lambda s: lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
                            + alpha)


def closed_warmup(target, W, start=0.0):
    return lambda s: start + (target(0) - start) * s / W if s < W else target(s - W)


SEQUENCES = [
    (S.Sequence([0.1], []), lambda s: 0.1),
    (S.Sequence([0.1, 0.01], [10]), joined([lambda s: 0.1, lambda s: 0.01], [10])),
    (S.Sequence([S.CosineDecay(1.0, 20), 0.3, S.CosineDecay(0.5, 7, alpha=0.1)], [10, 15]),
     joined([closed_cosine(1.0, 20), lambda s: 0.3, closed_cosine(0.5, 7, 0.1)], [10, 15])),
    (S.Sequence([0.5, 0.25, 0.125, 0.0625], [0, 3, 3]),      # empty pieces are skipped
     joined([lambda s: 0.5, lambda s: 0.25, lambda s: 0.125, lambda s: 0.0625], [0, 3, 3])),
    (S.Sequence([S.Warmup(S.CosineDecay(1.0, 10), 4),
                 S.Sequence([0.2, S.Warmup(0.4, 2)], [3])], [14]),
     joined([closed_warmup(closed_cosine(1.0, 10), 4),
             joined([lambda s: 0.2, closed_warmup(lambda s: 0.4, 2)], [3])], [14])),
    (S.Warmup(S.Sequence([S.CosineDecay(1.0, 5), 0.1], [5]), 3, initial_learning_rate=0.5),
     closed_warmup(joined([closed_cosine(1.0, 5), lambda s: 0.1], [5]), 3, 0.5)),
    (S.Sequence([S.OneCycle(0.1, 20), S.Cyclic(0.01, 0.05, 3)], [20]),
     joined([one_cycle(0.1, 20), cyclic(0.01, 0.05, 3)], [20])),
]


@pytest.mark.parametrize("schedule, closed", SEQUENCES, ids=lambda x: repr(x)[:60])
def test_sequence_follows_the_closed_form(backend, schedule, closed):
    steps = np.array(sorted(set(range(40)) | {100, 2**40, 2**63 - 1}))
    assert_close(schedule(steps), [closed(int(s)) for s in steps])


def test_sequence_is_optax_join_schedules(backend):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        inner = optax.join_schedules([optax.constant_schedule(0.2),
                                      optax.polynomial_schedule(0.2, 0.01, 2.0, 6)], [4])
        theirs = optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, 5), optax.cosine_decay_schedule(1.0, 20, 0.05),
             optax.constant_schedule(0.3), optax.exponential_decay(0.5, 3, 0.7, staircase=True), inner], [5, 25, 25, 40])
        ours = S.Sequence(
            [S.PolynomialDecay(0.0, 5, end_learning_rate=1.0), S.CosineDecay(1.0, 20, 0.05),
             0.3, S.ExponentialDecay(0.5, 3, 0.7, staircase=True),
             S.Sequence([0.2, S.PolynomialDecay(0.2, 6, end_learning_rate=0.01, power=2.0)],
                        [4])], [5, 25, 25, 40])
        steps = np.arange(80)
        want = np.array([float(theirs(int(s))) for s in steps])
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert_close(ours(steps), want, rtol=1e-12)


def test_the_step_uses_each_schedule_at_the_step_count(backend, rng):
    """Update k uses schedule(k), evaluated in C by the kernels (numpy by the reference)."""
    for schedule in (S.OneCycle(0.1, 8), S.Cyclic(0.01, 0.1, 3, mode="triangular2"),
                     S.Sequence([S.Warmup(0.1, 2), S.Sequence([0.05, 0.02], [2])], [4])):
        rates = schedule(np.arange(12))
        p = rng.standard_normal(17)
        want = p.copy()
        state = lrcore.SGD(lr=schedule)
        for k in range(12):
            g = rng.standard_normal(17)
            assert lrcore.step(p, g, state) == rates[k]
            want -= rates[k] * g
        np.testing.assert_array_equal(p, want)


# ---- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs, exc, message", [
    (S.OneCycle, dict(max_learning_rate=-0.1, total_steps=10), ValueError, r"max_learning_rate"),
    (S.OneCycle, dict(max_learning_rate="0.1", total_steps=10), TypeError, r"max_learning_rate"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=0), ValueError, r"total_steps must be"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=2**53 + 1), ValueError,
     r"total_steps must be an int >= 1 and <= 2\*\*53"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10.0), TypeError, r"total_steps"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=True), TypeError, r"total_steps"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, pct_start=1.5), ValueError,
     r"pct_start must be"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, pct_start=0.1), ValueError,
     r"pct_start \* total_steps must not be 1"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, anneal="cosine"), ValueError,
     r"anneal must be 'cos' or 'linear'"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, div_factor=0.0), ValueError,
     r"div_factor must be a finite number > 0"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, div_factor=1e-320), ValueError,
     r"div_factor"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, final_div_factor=math.inf),
     ValueError, r"final_div_factor"),
    (S.OneCycle, dict(max_learning_rate=0.1, total_steps=10, three_phase=1), TypeError,
     r"three_phase must be a bool"),
    (S.Cyclic, dict(base_learning_rate=-1.0, max_learning_rate=0.1, step_size_up=2),
     ValueError, r"base_learning_rate"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=math.nan, step_size_up=2),
     ValueError, r"max_learning_rate"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up=0), ValueError,
     r"step_size_up must be a finite number > 0"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up="2"),
     TypeError, r"step_size_up"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up=2,
                    step_size_down=-1), ValueError, r"step_size_down must be"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up=1e308,
                    step_size_down=1e308), ValueError, r"step_size_up \+ step_size_down"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up=2,
                    mode="exp"), ValueError, r"mode must be one of"),
    (S.Cyclic, dict(base_learning_rate=0.1, max_learning_rate=0.2, step_size_up=2,
                    gamma=0.0), ValueError, r"gamma must be a finite number > 0"),
    (S.Sequence, dict(schedules=[], boundaries=[]), TypeError, r"schedules must be a non-empty"),
    (S.Sequence, dict(schedules=S.Constant(0.1), boundaries=[]), TypeError, r"schedules must"),
    (S.Sequence, dict(schedules=[0.1, "x"], boundaries=[3]), TypeError, r"schedules\[1\]"),
    (S.Sequence, dict(schedules=[0.1, -0.1], boundaries=[3]), ValueError, r"learning_rate"),
    (S.Sequence, dict(schedules=[0.1, 0.2], boundaries=[]), ValueError,
     r"boundaries must hold len\(schedules\) - 1 = 1"),
    (S.Sequence, dict(schedules=[0.1, 0.2], boundaries=[2.5]), TypeError, r"boundaries\[0\]"),
    (S.Sequence, dict(schedules=[0.1, 0.2], boundaries=[-1]), ValueError, r"boundaries\[0\]"),
    (S.Sequence, dict(schedules=[0.1, 0.2], boundaries=[2**63]), ValueError,
     r"boundaries\[0\] must be an int >= 0 and <= 2\*\*63 - 1"),
    (S.Sequence, dict(schedules=[0.1, 0.2, 0.3], boundaries=[5, 4]), ValueError,
     r"boundaries must be in non-decreasing order"),
    (S.Sequence, dict(schedules=[0.1, 0.2], boundaries=5), TypeError, r"boundaries must be"),
])
def test_invalid_arguments_are_rejected(cls, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        cls(**kwargs)


def test_arguments_accepted_as_torch_accepts_them():
    assert S.OneCycle(0.1, np.int64(10), pct_start=0).pct_start == 0.0
    assert S.Cyclic(0.1, 0.2, 2, step_size_down=0).step_size_down == 0
    assert S.Sequence([0.1, S.Constant(0.2)], np.array([3])).boundaries == [3]


# ---- configs, repr, serialization, nesting ----------------------------------------------------

ROUND_TRIP = [s for s in ONE_CYCLES[:3] + CYCLICS] + [s for s, _ in SEQUENCES]


@pytest.mark.parametrize("schedule", ROUND_TRIP, ids=lambda s: repr(s)[:60])
def test_config_repr_and_serialization_round_trip(schedule):
    assert_round_trips(schedule)


def test_sequence_config_serializes_its_pieces():
    config = S.Sequence([0.1, S.Warmup(S.CosineDecay(1.0, 10), 2)], [5]).get_config()
    assert config == {
        "schedules": [{"class_name": "Constant", "config": {"learning_rate": 0.1}},
                      {"class_name": "Warmup", "config": {
                          "schedule": {"class_name": "CosineDecay", "config": {
                              "initial_learning_rate": 1.0, "decay_steps": 10, "alpha": 0.0,
                              "warmup_target": None, "warmup_steps": 0}},
                          "warmup_steps": 2, "initial_learning_rate": 0.0, "mode": "linear"}}],
        "boundaries": [5]}
    # numbers are accepted as pieces of a config too
    assert S.Sequence.from_config({"schedules": [0.1, 0.2], "boundaries": [1]}) \
        == S.Sequence([0.1, 0.2], [1])


def nested(depth, kind):
    schedule = 0.1
    for level in range(depth):
        if kind == "sequence" or (kind == "mixed" and level % 2):
            schedule = S.Sequence([0.2, schedule], [1])
        else:
            schedule = S.Warmup(schedule, 1)
    return schedule


@pytest.mark.parametrize("kind", ["sequence", "mixed"])
def test_nesting_is_bounded_counting_warmups_and_sequences_together(backend, kind):
    deepest = nested(S.MAX_WARMUP_NESTING, kind)
    assert deepest(S.MAX_WARMUP_NESTING) == 0.1 and deepest(0) in (0.0, 0.2)
    assert S.deserialize(S.serialize(deepest)) == deepest
    with pytest.raises(ValueError, match=r"must not nest Warmups (and Sequences )?more than 32"):
        S.Sequence([deepest, 0.1], [5])
    with pytest.raises(ValueError, match=r"must not nest Warmups more than 32 deep"):
        S.Warmup(deepest, 1)


def test_shared_pieces_nest_without_blowing_up(backend):
    """The same piece used twice at each of 32 levels: 2**32 paths, one object per level."""
    schedule = S.Constant(0.1)
    for _ in range(S.MAX_WARMUP_NESTING):
        schedule = S.Sequence([schedule, schedule], [1])
    assert schedule(2**40) == 0.1
    with pytest.raises(ValueError, match=r"more than 32"):
        S.Sequence([schedule, schedule], [1])


def test_hostile_configs_are_value_errors_not_recursion():
    config = 0.1
    for _ in range(100_000):
        config = {"class_name": "Sequence", "config": {"schedules": [0.2, config],
                                                       "boundaries": [1]}}
    with pytest.raises(ValueError, match=r"config must not nest Warmups more than 32 deep"):
        S.deserialize(config)
    # one dict shared by both pieces at each of 30 levels: 2**30 configs once unfolded
    shared = S.serialize(S.Constant(0.1))
    for _ in range(30):
        shared = {"class_name": "Sequence", "config": {"schedules": [shared, shared],
                                                       "boundaries": [1]}}
    with pytest.raises(ValueError, match=r"config must not hold more than 1048576"):
        S.deserialize(shared)
    deep_list = [0]
    for _ in range(100_000):
        deep_list = [deep_list]
    with pytest.raises(ValueError, match=r"config must be \{'class_name'"):
        S.deserialize({"class_name": "Sequence", "config": {"schedules": [deep_list],
                                                            "boundaries": []}})


@pytest.mark.parametrize("config, message", [
    ({"class_name": "Sequence", "config": {"boundaries": []}}, r"config must hold a 'schedules'"),
    ({"class_name": "Sequence", "config": {"schedules": 0.1, "boundaries": []}},
     r"config's schedules must be a list"),
    ({"class_name": "OneCycle", "config": {"max_lr": 0.1}}, r"got unknown keys \['max_lr'\]"),
])
def test_malformed_configs_are_value_errors(config, message):
    with pytest.raises(ValueError, match=message):
        S.deserialize(config)


def test_schedules_in_use_pickle_and_copy(backend):
    import copy
    import pickle
    steps = np.arange(0, 100, 3)
    for schedule in ROUND_TRIP:
        want = schedule(steps)
        lrcore.SGD(lr=schedule)
        for clone in (pickle.loads(pickle.dumps(schedule)), copy.deepcopy(schedule)):
            assert clone == schedule
            np.testing.assert_array_equal(clone(steps), want)
