"""lrcore.ReduceLROnPlateau: torch's decisions for the same metrics, the rate it gives a
number lr and a schedule (used by the step on both backends), save / load, validation."""
import math

import numpy as np
import pytest

import lrcore
from lrcore import reference, schedules


# -- metric sequences -----------------------------------------------------------------------

def metric_sequence(rng, n):
    """Metrics that exercise every branch: improvements above and below the threshold,
    plateaus of exactly repeated values (ties), values exactly at best·(1 ∓ threshold),
    NaN and ±inf, runs of worse values long enough to trigger reductions."""
    out, value = [], float(rng.uniform(-2.0, 2.0))
    while len(out) < n:
        kind = rng.integers(8)
        if kind == 0:       # a plateau: the same value repeated
            out += [value] * int(rng.integers(1, 15))
        elif kind == 1:     # steady improvement / decline
            step = float(rng.choice([-1, 1]) * rng.uniform(1e-6, 0.3))
            for _ in range(int(rng.integers(1, 8))):
                value += step
                out.append(value)
        elif kind == 2:     # tiny changes, around the relative threshold
            for _ in range(int(rng.integers(1, 8))):
                value *= 1.0 + float(rng.choice([-1, 1])) * float(rng.choice([1e-5, 1e-4, 1e-3]))
                out.append(value)
        elif kind == 3:     # non-finite metrics
            out.append(float(rng.choice([math.nan, math.inf, -math.inf, math.nan])))
        elif kind == 4 and out:     # exactly a value seen before (a tie with the best)
            finite = [m for m in out if math.isfinite(m)]
            if finite:
                out.append(float(rng.choice(finite)))
        else:               # noise
            out += [value + float(x) for x in rng.normal(0, 0.1, int(rng.integers(1, 6)))]
    return out[:n]


def random_options(rng):
    """Keyword arguments of ReduceLROnPlateau covering both modes, both threshold modes,
    zero and large patience / cooldown, floors and eps values that bind."""
    return dict(mode=str(rng.choice(["min", "max"])),
                factor=float(rng.choice([0.1, 0.5, 0.9, 0.0, 0.3333])),
                patience=int(rng.choice([0, 1, 2, 3, 5, 10])),
                threshold=float(rng.choice([0.0, 1e-4, 1e-2, 0.1])),
                threshold_mode=str(rng.choice(["rel", "abs"])),
                cooldown=int(rng.choice([0, 0, 1, 3])),
                min_lr=float(rng.choice([0.0, 1e-3, 0.02])),
                eps=float(rng.choice([1e-8, 0.0, 1e-3, 0.05])))


COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")


def same_float(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


# -- torch's decisions ----------------------------------------------------------------------

def torch_scheduler(lr, options):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)


@pytest.mark.parametrize("seed", range(40))
def test_number_lr_decisions_and_rates_are_torchs(seed, backend):
    rng = np.random.default_rng(seed)
    options = random_options(rng)
    lr0 = float(rng.choice([0.1, 1.0, 0.05, 3e-4]))
    opt, theirs = torch_scheduler(lr0, options)
    state = lrcore.SGD(lr=lr0)
    ours = lrcore.ReduceLROnPlateau(state, **options)
    w = np.zeros(3, dtype=np.float32)
    for epoch, metric in enumerate(metric_sequence(rng, 120)):
        lrcore.step(w, np.ones(3, np.float32), state)       # the rate runs the update
        before = opt.param_groups[0]["lr"]
        theirs.step(metric)
        reduced = ours.step(metric)
        lr = opt.param_groups[0]["lr"]
        assert state.lr == lr and state.current_lr == lr, (epoch, metric)
        assert reduced == (lr != before)
        for name in COUNTERS:
            assert same_float(getattr(ours, name), getattr(theirs, name)), (epoch, name)
        assert ours.in_cooldown == theirs.in_cooldown
        assert ours.lr_scale == 1.0          # a number lr is lowered itself


def test_sequences_reach_every_branch():
    """The generated sequences make torch reduce, skip a reduction for eps, floor at min_lr,
    start cooldowns and see NaN metrics, so the comparison above covers them."""
    pytest.importorskip("torch")
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        options = random_options(rng)
        lr0 = float(rng.choice([0.1, 1.0, 0.05, 3e-4]))
        opt, sched = torch_scheduler(lr0, options)
        attempts = []
        reduce_lr = sched._reduce_lr
        sched._reduce_lr = lambda epoch: (attempts.append(epoch), reduce_lr(epoch))
        for metric in metric_sequence(rng, 120):
            before, n = opt.param_groups[0]["lr"], len(attempts)
            sched.step(metric)
            lr = opt.param_groups[0]["lr"]
            if math.isnan(metric):
                seen.add("nan")
            if len(attempts) > n:
                seen.add("reduced" if lr < before else "eps skipped")
                if lr < before and lr == options["min_lr"] and lr != before * options["factor"]:
                    seen.add("floored")
                if options["cooldown"] > 0:
                    seen.add("cooldown started")
    assert {"nan", "reduced", "floored", "cooldown started", "eps skipped"} <= seen, seen


# -- a schedule's rate ----------------------------------------------------------------------

SCHEDULES = [
    lambda: schedules.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.8),
    lambda: schedules.CosineDecay(0.05, decay_steps=200, alpha=0.1),
    lambda: schedules.Warmup(schedules.Constant(0.2), 15),          # 0 at step 0
    lambda: schedules.PiecewiseConstant([30, 90], [0.3, 0.03, 0.003]),
    lambda: schedules.NoisyLinearCosineDecay(0.1, 150, seed=5),     # may dip below 0
]


def expected_run(schedule, options, metrics, steps_per_epoch):
    """The rates the state's updates should use: torch decides when to reduce (its counters,
    recorded through its _reduce_lr), and each reduction multiplies lr_scale by factor when
    that lowers the rate max(v·lr_scale, min_lr) of the next update by more than eps."""
    opt, theirs = torch_scheduler(1.0, options)
    attempts = []
    theirs._reduce_lr = lambda epoch: attempts.append(epoch)
    rates, scale, step = [], 1.0, 0

    def rate(v, s):
        return max(v * s, options["min_lr"])
    for metric in metrics:
        for _ in range(steps_per_epoch):
            rates.append(rate(schedule(step), scale))
            step += 1
        n = len(attempts)
        theirs.step(metric)
        if len(attempts) > n:
            v = schedule(step)
            if rate(v, scale) - rate(v, scale * options["factor"]) > options["eps"]:
                scale *= options["factor"]
    return rates, scale


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_schedule_rate_is_scaled_and_floored_in_the_step(seed, optimizer, backend):
    rng = np.random.default_rng(100 + seed)
    options = random_options(rng)
    options["min_lr"] = float(rng.choice([0.0, 1e-3]))
    schedule = SCHEDULES[seed % len(SCHEDULES)]()
    metrics = metric_sequence(rng, 40)
    steps_per_epoch = 3
    rates, final_scale = expected_run(schedule, options, metrics, steps_per_epoch)

    if optimizer == "SGD":
        state = lrcore.SGD(lr=schedule, momentum=0.9)
    else:
        state = lrcore.Adam(lr=schedule)
    plateau = lrcore.ReduceLROnPlateau(state, **options)
    w = rng.standard_normal(5).astype(np.float32)
    mirror = w.copy()
    buffers = {"momentum_buffer": np.zeros(5, np.float32)} if optimizer == "SGD" else \
        {"exp_avg": np.zeros(5, np.float32), "exp_avg_sq": np.zeros(5, np.float32)}
    k = 0
    for metric in metrics:
        for _ in range(steps_per_epoch):
            g = rng.standard_normal(5).astype(np.float32)
            assert state.current_lr == rates[k], k
            used = lrcore.step(w, g, state)
            assert used == rates[k], k
            if optimizer == "SGD":
                reference.sgd(mirror, g, buffers["momentum_buffer"], step=k, lr=rates[k],
                              momentum=0.9)
            else:
                reference.adam(mirror, g, buffers["exp_avg"], buffers["exp_avg_sq"], step=k,
                               lr=rates[k])
            np.testing.assert_array_equal(w, mirror)
            k += 1
        plateau.step(metric)
    assert plateau.lr_scale == final_scale


def test_schedule_runs_show_reductions_and_floors():
    """The schedule cases above include applied reductions, skipped ones, and floors."""
    pytest.importorskip("torch")
    applied = floored = 0
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        options = random_options(rng)
        options["min_lr"] = float(rng.choice([0.0, 1e-3]))
        schedule = SCHEDULES[seed % len(SCHEDULES)]()
        rates, scale = expected_run(schedule, options, metric_sequence(rng, 40), 3)
        applied += scale < 1.0
        floored += options["min_lr"] in rates
    assert applied >= 4 and floored >= 1, (applied, floored)


def test_the_compiled_step_reads_the_factor_without_python(compiled):
    """With a schedule, a bound state's compiled step evaluates the schedule, the factor and
    the floor in C: it never asks the state for its rate."""
    schedule = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    state = lrcore.SGD(lr=schedule)
    plateau = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.25, min_lr=0.004)
    w = np.zeros(2, np.float32)
    lrcore.step(w, np.ones(2, np.float32), state)      # binds
    plateau.step(1.0)
    plateau.step(2.0)                                  # worse, patience 0: reduced
    assert plateau.lr_scale == 0.25

    def refuse(self, step):
        raise AssertionError("the compiled step called _lr_at")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lrcore.SGD, "_lr_at", refuse)
        assert lrcore.step(w, np.ones(2, np.float32), state) == 0.1 * 0.5 * 0.25
        assert lrcore.step(w, np.ones(2, np.float32), state) == 0.1 * 0.25 * 0.25
        assert lrcore.step(w, np.ones(2, np.float32), state) == 0.004    # 0.003125, floored


def test_callable_lr_is_scaled_too(backend):
    state = lrcore.SGD(lr=lambda k: 0.1 / (k + 1))
    plateau = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.5)
    plateau.step(1.0)
    assert plateau.step(1.0)                # a tie is not better: reduced
    assert plateau.lr_scale == 0.5
    assert lrcore.step(np.zeros(1, np.float32), np.ones(1, np.float32), state) == 0.1 * 0.5


def test_without_a_controller_a_schedule_is_used_as_computed(backend):
    """No floor and no factor until a ReduceLROnPlateau is attached (a NoisyLinearCosineDecay
    may give negative values, which stay as they are)."""
    schedule = schedules.NoisyLinearCosineDecay(0.001, 10, initial_variance=100.0, seed=3)
    values = schedule(np.arange(40))
    assert values.min() < 0
    state = lrcore.SGD(lr=schedule)
    w = np.zeros(1, np.float32)
    used = [lrcore.step(w, np.ones(1, np.float32), state) for _ in range(40)]
    assert used == values.tolist()
    lrcore.ReduceLROnPlateau(state, min_lr=0.0)      # now floored at 0
    assert state.current_lr == max(float(schedule(40)), 0.0)


def test_eps_rule_for_a_schedule_uses_the_next_updates_rate(backend):
    """A reduction is applied only when it lowers the rate of update step_count by more than
    eps: at a step where the schedule gives 0 (a warmup's start) nothing is lowered."""
    schedule = schedules.Warmup(schedules.Constant(0.2), 10)
    state = lrcore.SGD(lr=schedule)
    plateau = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.5)
    plateau.step(1.0)
    assert not plateau.step(1.0)            # rate 0 at step 0: nothing to lower
    assert plateau.lr_scale == 1.0 and plateau.num_bad_epochs == 0
    w = np.zeros(1, np.float32)
    lrcore.step(w, np.ones(1, np.float32), state)     # step 1: rate 0.02
    v = schedule(1)
    assert v > 0
    assert plateau.step(1.0) and plateau.lr_scale == 0.5
    assert state.current_lr == v * 0.5
    # v·0.5 -> v·0.25 lowers the rate by exactly v·0.25 (powers of 2: no rounding)
    big_eps = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.5, eps=v * 0.25)
    big_eps.step(1.0)
    assert not big_eps.step(1.0)
    assert state.current_lr == v * 0.5 and big_eps.lr_scale == 0.5
    smaller_eps = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.5,
                                           eps=math.nextafter(v * 0.25, 0))
    smaller_eps.step(1.0)
    assert smaller_eps.step(1.0)
    assert state.current_lr == v * 0.25 and smaller_eps.lr_scale == 0.25


# -- state_dict, save and load ---------------------------------------------------------------

def run_epochs(state, plateau, metrics, rng_seed, steps_per_epoch=2):
    """(rates used, reductions) of a few updates per epoch with gradients from rng_seed."""
    rng = np.random.default_rng(rng_seed)
    w = np.ones(4, np.float32)
    rates, reductions = [], []
    for metric in metrics:
        for _ in range(steps_per_epoch):
            rates.append(lrcore.step(w, rng.standard_normal(4).astype(np.float32), state))
        reductions.append(plateau.step(metric))
    return rates, reductions, w


@pytest.mark.parametrize("lr", ["number", "schedule"])
def test_save_and_load_resume_the_same_decisions(lr, backend, tmp_path):
    rng = np.random.default_rng(7)
    metrics = metric_sequence(rng, 60)
    make_lr = (lambda: 0.1) if lr == "number" else \
        (lambda: schedules.CosineDecay(0.1, decay_steps=300, alpha=0.2))
    options = dict(mode="min", factor=0.5, patience=2, threshold=1e-3, cooldown=1, min_lr=0.004)

    state = lrcore.Adam(lr=make_lr())
    plateau = lrcore.ReduceLROnPlateau(state, **options)
    w = np.ones(4, np.float32)
    lrcore.step(w, np.ones(4, np.float32), state)
    run_epochs(state, plateau, metrics[:30], 1)
    assert plateau.lr_scale < 1.0 or state.lr < 0.1         # reductions happened before saving
    lrcore.save(state, tmp_path / "s.npz")
    resumed = lrcore.load(tmp_path / "s.npz")
    copied = lrcore.Adam()
    copied.load_state_dict(state.state_dict())

    expected = run_epochs(state, plateau, metrics[30:], 2)
    for other in (resumed, copied):
        assert isinstance(other.plateau, lrcore.ReduceLROnPlateau)
        assert other.plateau.state is other
        got = run_epochs(other, other.plateau, metrics[30:], 2)
        assert got[0] == expected[0] and got[1] == expected[1]
        np.testing.assert_array_equal(got[2], expected[2])
        assert other.plateau.state_dict() == plateau.state_dict()
        assert other.current_lr == state.current_lr


def test_state_dict_holds_settings_and_counters(backend):
    state = lrcore.SGD(lr=schedules.Constant(0.5))
    assert "plateau" not in state.state_dict() and state.plateau is None
    plateau = lrcore.ReduceLROnPlateau(state, mode="max", factor=0.5, patience=1, cooldown=2,
                                       threshold=0.0, threshold_mode="abs", min_lr=0.01,
                                       eps=0.0)
    assert state.plateau is plateau
    for m in (1.0, 1.0, 0.5, math.nan):
        plateau.step(m)
    sd = plateau.state_dict()
    assert sd == dict(mode="max", factor=0.5, patience=1, threshold=0.0, threshold_mode="abs",
                      cooldown=2, min_lr=0.01, eps=0.0, best=1.0, num_bad_epochs=0,
                      cooldown_counter=1, last_epoch=4, lr_scale=0.5)
    assert state.state_dict()["plateau"] == sd

    # loading into the attached controller keeps it (references stay valid)
    other = lrcore.SGD(lr=schedules.Constant(0.5))
    mine = lrcore.ReduceLROnPlateau(other)
    other.load_state_dict(state.state_dict())
    assert other.plateau is mine and mine.state_dict() == sd
    assert other.current_lr == 0.25

    # a dict without one detaches the controller: the rate is the schedule's again
    other.load_state_dict(lrcore.SGD(lr=schedules.Constant(0.5)).state_dict())
    assert other.plateau is None and other.current_lr == 0.5
    with pytest.raises(RuntimeError, match="no longer controls its state"):
        mine.step(1.0)

    # the controller's own load_state_dict
    fresh = lrcore.ReduceLROnPlateau(other)
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd and other.current_lr == 0.25


def test_a_new_controller_replaces_the_old_and_keeps_the_factor():
    state = lrcore.SGD(lr=schedules.Constant(0.5))
    first = lrcore.ReduceLROnPlateau(state, patience=0, factor=0.5)
    first.step(1.0)
    first.step(1.0)
    second = lrcore.ReduceLROnPlateau(state, min_lr=0.3)
    assert state.plateau is second and second.lr_scale == 0.5
    assert second.best == math.inf and second.last_epoch == 0
    assert state.current_lr == 0.3                     # max(0.25, the new floor)
    with pytest.raises(RuntimeError, match="no longer controls its state"):
        first.step(1.0)


def test_find_lr_on_a_controlled_state_leaves_it_alone():
    state = lrcore.SGD(lr=schedules.Constant(0.5))
    plateau = lrcore.ReduceLROnPlateau(state, patience=0)
    plateau.step(1.0)
    plateau.step(1.0)
    before = state.state_dict()
    lrcore.find_lr(lambda p: (float(p[0] @ p[0]), [2 * p[0]]), [np.ones(2, np.float32)],
                   state, num_steps=5)
    assert state.plateau is plateau and state.state_dict()["plateau"] == before["plateau"]


# -- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="minimum"), ValueError, "mode must be one of 'min', 'max', got 'minimum'"),
    (dict(mode=None), ValueError, "mode must be one of"),
    (dict(threshold_mode="relative"), ValueError, "threshold_mode must be one of 'rel', 'abs'"),
    (dict(factor=1.0), ValueError, "factor must be a finite number >= 0 and < 1, got 1.0"),
    (dict(factor=1.5), ValueError, "factor must be"),
    (dict(factor=-0.1), ValueError, "factor must be"),
    (dict(factor=math.nan), ValueError, "factor must be"),
    (dict(factor="0.1"), TypeError, "factor must be a real number, got str"),
    (dict(patience=-1), ValueError, "patience must be an int in [0, 2**63 - 1], got -1"),
    (dict(patience=2.0), TypeError, "patience must be an int, got float"),
    (dict(patience=True), TypeError, "patience must be an int, got bool"),
    (dict(cooldown=-3), ValueError, "cooldown must be an int in"),
    (dict(cooldown=2**63), ValueError, "cooldown must be an int in"),
    (dict(cooldown=None), TypeError, "cooldown must be an int, got NoneType"),
    (dict(threshold=-1e-4), ValueError, "threshold must be a finite number >= 0"),
    (dict(threshold=math.inf), ValueError, "threshold must be a finite number >= 0"),
    (dict(min_lr=-1.0), ValueError, "min_lr must be a finite number >= 0"),
    (dict(min_lr=[0.1]), TypeError, "min_lr must be a real number, got list"),
    (dict(eps=-1e-8), ValueError, "eps must be a finite number >= 0"),
    (dict(eps="tiny"), TypeError, "eps must be a real number"),
])
def test_arguments_are_checked(kwargs, error, message):
    state = lrcore.SGD()
    with pytest.raises(error) as info:
        lrcore.ReduceLROnPlateau(state, **kwargs)
    assert message in str(info.value)
    assert state.plateau is None                       # nothing attached


def test_state_must_be_an_lrcore_state():
    with pytest.raises(TypeError, match="state must be an lrcore optimizer state such as "
                                        "lrcore.SGD\\(...\\), got str"):
        lrcore.ReduceLROnPlateau("sgd")
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match="got SGD"):
        lrcore.ReduceLROnPlateau(opt)


@pytest.mark.parametrize("metric", ["1.0", b"1", None, [1.0], np.array([1.0, 2.0]), True])
def test_metric_must_be_a_real_number(metric):
    state = lrcore.SGD()
    plateau = lrcore.ReduceLROnPlateau(state)
    with pytest.raises(TypeError, match="metric must be a real number"):
        plateau.step(metric)
    assert plateau.last_epoch == 0


def test_metric_accepts_numpy_and_torch_scalars():
    plateau = lrcore.ReduceLROnPlateau(lrcore.SGD())
    plateau.step(np.float32(0.5))
    plateau.step(np.array(0.25))
    assert plateau.best == 0.25 and plateau.last_epoch == 2
    torch = pytest.importorskip("torch")
    plateau.step(torch.tensor(0.125))
    assert plateau.best == 0.125


@pytest.mark.parametrize("change, message", [
    (dict(mode="up"), "state_dict['mode'] must be one of"),
    (dict(factor=2.0), "state_dict['factor'] must be a finite number >= 0 and < 1"),
    (dict(patience=-1), "state_dict['patience'] must be an int in"),
    (dict(patience=1.5), "state_dict['patience'] must be an int, got float"),
    (dict(best="low"), "state_dict['best'] must be a real number, got str"),
    (dict(num_bad_epochs=-1), "state_dict['num_bad_epochs'] must be an int in"),
    (dict(last_epoch=None), "state_dict['last_epoch'] must be an int, got NoneType"),
    (dict(lr_scale=1.5), "state_dict['lr_scale'] must be a number in [0, 1], got 1.5"),
    (dict(lr_scale=math.nan), "state_dict['lr_scale'] must be a number in [0, 1]"),
])
def test_load_state_dict_checks_before_changing_anything(change, message):
    state = lrcore.SGD(lr=schedules.Constant(0.5))
    plateau = lrcore.ReduceLROnPlateau(state, patience=0)
    plateau.step(1.0)
    plateau.step(1.0)
    good = plateau.state_dict()
    bad = dict(good, **change)
    with pytest.raises(ValueError) as info:
        plateau.load_state_dict(bad)
    assert message in str(info.value)
    with pytest.raises(ValueError) as info:
        state.load_state_dict(dict(state.state_dict(), plateau=bad))
    assert message.replace("state_dict[", "state_dict['plateau'][") in str(info.value)
    assert plateau.state_dict() == good and state.plateau is plateau


def test_load_state_dict_of_a_non_dict_or_missing_keys():
    plateau = lrcore.ReduceLROnPlateau(lrcore.SGD())
    with pytest.raises(TypeError, match="state_dict must be a dict, got list"):
        plateau.load_state_dict([])
    sd = plateau.state_dict()
    del sd["best"], sd["eps"]
    with pytest.raises(ValueError, match="state_dict is missing eps, best"):
        plateau.load_state_dict(sd)


def test_a_checkpoint_with_a_bad_plateau_entry_is_invalid(tmp_path):
    import json
    state = lrcore.SGD(lr=0.1)
    lrcore.ReduceLROnPlateau(state)
    path = tmp_path / "s.npz"
    lrcore.save(state, path)
    with np.load(path) as f:
        header = json.loads(str(f["lrcore"]))
    header["plateau"]["lr_scale"] = 3.0
    np.savez(path, lrcore=np.array(json.dumps(header)))
    with pytest.raises(ValueError, match="is not a valid lrcore checkpoint .*lr_scale"):
        lrcore.load(path)


def test_infinite_and_nan_best_survive_a_checkpoint(tmp_path):
    for mode, metric, want in (("min", None, math.inf), ("max", None, -math.inf),
                               ("min", -math.inf, -math.inf)):
        state = lrcore.SGD(lr=0.1)
        plateau = lrcore.ReduceLROnPlateau(state, mode=mode)
        if metric is not None:
            plateau.step(metric)
        lrcore.save(state, tmp_path / "s.npz")
        assert lrcore.load(tmp_path / "s.npz").plateau.best == want
