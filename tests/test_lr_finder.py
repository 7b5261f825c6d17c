"""find_lr: the LR range test, on least squares where the divergence point is known, and its
suggestion rules against fastai's formulas written out as fastai writes them."""
import math

import numpy as np
import pytest

import lrcore
from lrcore.lr_finder import LRFinderResult

RATIO = 1e8 ** (1 / 99)       # between consecutive rates of the default sweep (1e-7 to 10, 100)


def least_squares_data(rng, noise=0.0):
    X = rng.standard_normal((256, 8)) * np.geomspace(0.5, 3, 8)
    y = X @ rng.standard_normal(8) + noise * rng.standard_normal(256)
    return X, y, 2 / np.linalg.eigvalsh(X.T @ X / len(y)).max()   # SGD diverges above this


@pytest.fixture
def least_squares(rng):
    X, y, bound = least_squares_data(rng)

    def fn(params):
        err = X @ params[0] - y
        return 0.5 * np.mean(err ** 2), [X.T @ err / len(y)]
    return fn, bound


# -- fastai's rules, as fastai.callback.schedule writes them (lists and loops) ----------------

def fastai_valley(lrs, losses):
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_slide(lrs, losses, lr_diff=15, thresh=.005):
    loss_grad = np.gradient(losses)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr)


def fastai_minimum(lrs, losses):
    return float(lrs[losses.argmin()]) / 10


def fastai_steep(lrs, losses):
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    return float(lrs[grads.argmin()])


FASTAI = {"valley": fastai_valley, "minimum": fastai_minimum, "steep": fastai_steep,
          "slide": fastai_slide}


def curves():
    """Loss curves with the shapes a range test gives, and noisier ones."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 1, 60)
    yield 2 - np.tanh(8 * (x - 0.5)) + 3 * np.maximum(x - 0.8, 0) ** 2          # smooth dip
    yield 2 - np.tanh(8 * (x - 0.5)) + 0.05 * rng.standard_normal(60)            # noisy
    yield np.cumsum(rng.standard_normal(80)) * 0.1 + 10 - np.linspace(0, 3, 80)  # random walk
    yield 1 / (1 + x) + 0.001 * rng.standard_normal(60)                          # shallow slopes
    yield np.exp(-5 * x) + 0.2 * (rng.random(60) < 0.1)                          # spikes
    yield np.linspace(5, 1, 40)                                                  # straight fall
    yield np.r_[np.linspace(3, 1, 20), np.linspace(1.1, 0.5, 20), np.linspace(0.6, 4, 20)]
    yield np.r_[np.linspace(3, 1, 12), np.linspace(5, 2, 12)]      # two runs as long: the first


@pytest.mark.parametrize("rule", list(FASTAI))
@pytest.mark.parametrize("curve", list(curves()), ids=lambda c: f"{len(c)}pts")
def test_each_rule_is_fastais_formula(rule, curve):
    lrs = np.geomspace(1e-5, 1, len(curve))
    result = LRFinderResult(lrs, curve, suggest=rule, skip_start=0, skip_end=0)
    assert result.suggestion == FASTAI[rule](lrs, curve)
    assert result.suggestions == {name: f(lrs, curve) for name, f in FASTAI.items()}
    assert result.rule == rule and result.reason is None


def test_the_rules_skip_the_burn_in_and_the_last_five_rates():
    curve = next(curves())
    lrs = np.geomspace(1e-5, 1, len(curve))
    result = LRFinderResult(lrs, curve, skip_start=6)
    assert result.suggestions == {name: f(lrs[6:-5], curve[6:-5]) for name, f in FASTAI.items()}


def test_linear_rates_are_read_evenly_in_log_lr():
    """A linear sweep's curve is interpolated against log lr at as many evenly log-spaced
    rates before the rules read it, so every rule reads the same shape as in an exp sweep."""
    curve = next(curves())
    lrs = np.linspace(0.01, 1, len(curve))
    result = LRFinderResult(lrs, curve, skip_start=0, skip_end=0)
    grid = np.linspace(np.log(0.01), 0, len(curve))
    even_lrs, even = np.exp(grid), np.interp(grid, np.log(lrs), curve)
    for name, f in FASTAI.items():
        assert result.suggestions[name] == pytest.approx(f(even_lrs, even), rel=1e-12), name


# -- the sweep on least squares, where SGD diverges above 2 / λmax ----------------------------

def test_on_least_squares_every_rule_stays_below_the_divergence_point(backend, least_squares):
    """Below bound = 2/λmax, SGD contracts every eigencomponent, so the raw loss falls at every
    step, and the smoothed loss (a weighted mean shifting to newer points) too: the sweep can
    only stop past the bound, and the smoothed minimum is no lower than the last rate below it
    (so `minimum` >= bound / (10 · RATIO)). Past the bound the top component's error grows by
    |lr·λmax − 1| > 1 per step, which shows in the smoothed loss within a decade (12 rates),
    so `minimum` < bound. `valley` reads a window that falls all the way (it ends 5 rates
    before the stop): the longest falling run is the whole window and valley sits about
    halfway along it in log lr, hence at least the geometric mean of the window's first rate
    and the bound (less two rates for fastai's rounding down)."""
    fn, bound = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(lr=0.1))
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-7, 10, 100)[:len(result.lrs)])
    assert result.stopped_early and result.lrs[-1] > bound and np.all(np.isfinite(result.losses))
    falling = result.lrs < bound
    assert np.all(np.diff(result.losses[falling]) < 0)
    assert all(s < bound for s in result.suggestions.values()), (result.suggestions, bound)
    assert bound / (10 * RATIO) <= result.suggestions["minimum"] < bound
    assert result.window == (10, len(result.lrs) - 5)
    window = result.losses[10:-5]
    assert np.all(np.diff(window) < 0)
    n = len(window)
    assert result.suggestion == result.suggestions["valley"] == result.lrs[10 - 1 + n // 3 + int(n / 6)]
    assert result.suggestion >= math.sqrt(result.lrs[10] * bound) / RATIO ** 2
    assert result.steepest == result.suggestions["steep"]
    assert result.rule == "valley" and result.reason is None


def test_the_suggestion_trains(least_squares):
    fn, bound = least_squares
    for rule in ("valley", "minimum", "steep", "slide"):
        w = np.zeros(8)
        lr = lrcore.find_lr(fn, [w], lrcore.SGD(), suggest=rule).suggestion
        sgd = lrcore.SGD(lr=lr)
        start = fn([w])[0]
        for _ in range(50):
            lrcore.step([w], fn([w])[1], sgd)
        assert fn([w])[0] < start, rule


def test_an_early_dip_fools_minimum_and_not_valley(rng):
    """Minibatch least squares (128 of 256 rows a call) with label noise: its loss cannot fall
    below half the noise variance, about 0.4 of the starting loss. The loader serves an easy
    batch (targets 0, so loss 0 at w = 0) at calls 5 to 14, at rates near 1e-7 where nothing
    trains: the smoothed loss dips to about 0.25 of its start there, below anything the real
    descent reaches (and not so low that the recovery reads as divergence). `minimum` takes
    the dip and suggests a rate about a million times below the bound; valley follows the
    longest fall, the real one, a few rates below the bound (0.09 to 0.21 of it over 20
    seeds of this construction)."""
    X, y, bound = least_squares_data(rng)
    y = y + 0.8 * np.std(y) * rng.standard_normal(256)
    easy = rng.standard_normal((128, 8))
    calls = []

    def fn(params):
        calls.append(1)
        if 5 <= len(calls) < 15:
            Xb, yb = easy, np.zeros(128)
        else:
            idx = rng.integers(0, 256, 128)
            Xb, yb = X[idx], y[idx]
        err = Xb @ params[0] - yb
        return 0.5 * np.mean(err ** 2), [Xb.T @ err / 128]
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(), suggest="minimum")
    lowest = np.argmin(result.losses)
    assert 10 <= lowest < 20 and result.losses[lowest] < 0.35 * result.losses[0]
    assert result.suggestion < 1e-5 * bound
    assert bound / 100 < result.suggestions["valley"] < bound


# -- no reliable suggestion -------------------------------------------------------------------

def test_a_loss_diverging_from_the_start_gives_no_suggestion(least_squares):
    fn, bound = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(), start_lr=4 * bound, end_lr=1e3)
    assert result.stopped_early and len(result.lrs) < 15
    assert result.suggestion is None and set(result.suggestions.values()) == {None}
    assert result.reason.startswith("too few rates to read: the sweep kept")
    assert "before the loss diverged" in result.reason and "start_lr" in result.reason
    assert "suggestion=None" in repr(result)


@pytest.mark.parametrize("loss", [lambda k: 3.0, lambda k: 1.0 + 0.001 * k])
def test_a_loss_that_never_falls_gives_no_suggestion(loss):
    calls = []

    def fn(params):
        calls.append(1)
        return loss(len(calls)), [np.zeros(2)]
    result = lrcore.find_lr(fn, [np.zeros(2)], lrcore.SGD(), suggest="steep",
                            diverge_threshold=math.inf)
    assert not result.stopped_early and len(result.lrs) == 100
    assert result.suggestion is None and result.steepest is None
    assert result.reason.startswith("the smoothed loss did not decrease between lr")


def test_slide_alone_needs_sixteen_rates(least_squares):
    fn, _ = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(), start_lr=1e-4, end_lr=0.1,
                            num_steps=20, suggest="slide")
    assert len(result.lrs) == 20 and not result.stopped_early      # 20 − 2 − 5 = 13 read
    assert result.suggestion is None and "slide compares slopes 15 rates apart" in result.reason
    assert result.suggestions["valley"] is not None


# -- the sweep's options ----------------------------------------------------------------------

def test_linear_mode_on_least_squares(least_squares):
    fn, bound = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(), start_lr=1e-3, end_lr=1.0,
                            mode="linear")
    np.testing.assert_allclose(result.lrs, np.linspace(1e-3, 1.0, 100)[:len(result.lrs)])
    assert result.stopped_early and result.lrs[-1] > bound
    assert all(s < bound for s in result.suggestions.values()), (result.suggestions, bound)


def test_smoothing_and_the_divergence_threshold():
    """smoothing=0 keeps the raw losses; the sweep stops at the first loss above
    diverge_threshold times the minimum so far."""
    raw = [8.0, 4.0, 2.0, 1.0, 1.5, 1.9, 2.5, 9.0]
    calls = []

    def fn(params):
        calls.append(1)
        return raw[len(calls) - 1], [np.zeros(1)]
    result = lrcore.find_lr(fn, [np.zeros(1)], lrcore.SGD(), num_steps=8, smoothing=0.0,
                            diverge_threshold=2.0)
    np.testing.assert_array_equal(result.losses, raw[:7])
    assert result.stopped_early and len(calls) == 7

    calls.clear()
    result = lrcore.find_lr(fn, [np.zeros(1)], lrcore.SGD(), num_steps=8, smoothing=0.5)
    average, expected = 0.0, []
    for k, loss in enumerate(raw, start=1):
        average = 0.5 * average + 0.5 * loss
        expected.append(average / (1 - 0.5 ** k))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-15)
    assert not result.stopped_early


def test_batches_per_lr_averages_losses_and_grads_at_the_same_params(backend):
    """fn is called 3 times at each rate at the same params; SGD then steps once with the
    mean of the 3 grads, and the recorded (unsmoothed) loss is the mean of the 3 losses."""
    seen, k = [], 3

    def fn(params):
        seen.append(params[0].copy())
        j = len(seen)
        return float(j), [np.full(2, float(j))]
    result = lrcore.find_lr(fn, [np.zeros(2)], lrcore.SGD(), start_lr=0.1, end_lr=1.0,
                            num_steps=4, mode="linear", smoothing=0.0, batches_per_lr=k)
    assert len(seen) == 4 * k
    rates = np.linspace(0.1, 1.0, 4)
    w = np.zeros(2)
    for i, rate in enumerate(rates):
        for call in range(k):
            np.testing.assert_allclose(seen[i * k + call], w, rtol=1e-15)
        grads = np.arange(i * k + 1, i * k + k + 1, dtype=float)
        assert result.losses[i] == grads.mean()
        w = w - rate * grads.mean()


def test_batches_per_lr_keeps_the_grads_dtype_and_none(backend):
    def fn(params):
        return 1.0, [np.ones(3, np.float32), None]
    params = [np.zeros(3, np.float32), np.zeros(2, np.float32)]
    lrcore.find_lr(fn, params, lrcore.SGD(), num_steps=5, batches_per_lr=2)
    assert params[0].dtype == np.float32 and not params[0].any()


def test_params_and_state_are_restored(backend, least_squares, rng):
    fn, _ = least_squares
    params = [rng.standard_normal(8)]
    state = lrcore.Adam(lr=0.01)
    lrcore.step(params, fn(params)[1], state)
    before_params, before_state = params[0].copy(), state.state_dict()
    lrcore.find_lr(fn, params, state, num_steps=50, batches_per_lr=2, mode="linear")
    np.testing.assert_array_equal(params[0], before_params)
    after = state.state_dict()
    assert after["step_count"] == before_state["step_count"] and after["lr"] == 0.01
    for name, arrays in before_state["buffers"].items():
        np.testing.assert_array_equal(after["buffers"][name][0], arrays[0])


def test_params_are_restored_when_fn_raises(backend, rng):
    w = rng.standard_normal(4)
    before, calls = w.copy(), []

    def fn(params):
        calls.append(1)
        if len(calls) == 10:
            raise RuntimeError("loader failed")
        return 1.0, np.ones(4)
    with pytest.raises(RuntimeError, match="loader failed"):
        lrcore.find_lr(fn, w, lrcore.SGD())
    np.testing.assert_array_equal(w, before)


def test_a_non_finite_loss_ends_the_sweep_and_is_left_out(backend):
    calls = []

    def fn(params):
        calls.append(1)
        loss = float("nan") if len(calls) == 6 else 1.0 / len(calls)
        return loss, [np.ones(2)]
    result = lrcore.find_lr(fn, [np.zeros(2)], lrcore.SGD(), num_steps=20, mode="linear")
    assert len(result.lrs) == 5 and result.stopped_early
    np.testing.assert_allclose(result.lrs, np.linspace(1e-7, 10, 20)[:5])


# -- arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(start_lr=1.0, end_lr=0.1), ValueError, r"0 < start_lr < end_lr"),
    (dict(start_lr=0.0), ValueError, r"0 < start_lr < end_lr"),
    (dict(start_lr="1"), TypeError, r"start_lr must be a real number, got str"),
    (dict(end_lr=math.inf), ValueError, r"end_lr must be a finite number"),
    (dict(num_steps=1), ValueError, r"num_steps must be an int >= 2, got 1"),
    (dict(num_steps=10.0), ValueError, r"num_steps must be an int >= 2, got 10.0"),
    (dict(mode="cosine"), ValueError, r"mode must be 'exp' or 'linear', got 'cosine'"),
    (dict(suggest="median"), ValueError,
     r"suggest must be one of 'valley', 'minimum', 'steep', 'slide', got 'median'"),
    (dict(diverge_threshold=1.0), ValueError, r"diverge_threshold must be a number > 1"),
    (dict(diverge_threshold=math.nan), ValueError, r"diverge_threshold must be a number > 1"),
    (dict(diverge_threshold="4"), TypeError, r"diverge_threshold must be a real number, got str"),
    (dict(smoothing=1.0), ValueError, r"smoothing must be a finite number >= 0 and < 1, got 1.0"),
    (dict(smoothing=-0.1), ValueError, r"smoothing must be a finite number >= 0"),
    (dict(smoothing=None), TypeError, r"smoothing must be a real number, got NoneType"),
    (dict(batches_per_lr=0), ValueError, r"batches_per_lr must be an int >= 1, got 0"),
    (dict(batches_per_lr=True), ValueError, r"batches_per_lr must be an int >= 1, got True"),
])
def test_bad_arguments_raise_before_any_work(kwargs, exc, message):
    calls = []
    fn = lambda p: calls.append(1) or (1.0, [np.ones(1)])
    with pytest.raises(exc, match=message):
        lrcore.find_lr(fn, [np.zeros(1)], lrcore.SGD(), **kwargs)
    assert calls == []


@pytest.mark.parametrize("params, exc, message", [
    ({}, TypeError, r"params must be a numpy.ndarray or a list/tuple of them, got dict"),
    ([], ValueError, r"params must hold at least one array"),
    ([np.zeros(1), [0.0]], TypeError, r"params\[1\] must be a numpy.ndarray, got list"),
])
def test_bad_params_raise_before_any_work(params, exc, message):
    calls = []
    with pytest.raises(exc, match=message):
        lrcore.find_lr(lambda p: calls.append(1) or (1.0, [np.ones(1)]), params, lrcore.SGD())
    assert calls == []


@pytest.mark.parametrize("args, kwargs, message", [
    (([1e-3, 1e-2], [1.0]), {}, r"lrs and losses must be 1-d arrays of the same length"),
    (([1e-2, 1e-3], [1.0, 2.0]), {}, r"lrs must be finite, positive and increasing"),
    (([1e-3, 1e-2], [1.0, math.nan]), {}, r"losses finite"),
    (([1e-3, 1e-2], [1.0, 2.0]), dict(suggest="best"), r"suggest must be one of"),
    (([1e-3, 1e-2], [1.0, 2.0]), dict(skip_start=-1), r"skip_start must be an int >= 0, got -1"),
    (([1e-3, 1e-2], [1.0, 2.0]), dict(skip_end=1.5), r"skip_end must be an int >= 0, got 1.5"),
])
def test_a_recorded_curve_is_checked(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRFinderResult(*args, **kwargs)


def test_state_must_be_an_lrcore_state():
    with pytest.raises(TypeError, match="state must be an lrcore optimizer state, got dict"):
        lrcore.find_lr(lambda p: (1.0, [np.ones(1)]), [np.zeros(1)], {})


# -- the plot ---------------------------------------------------------------------------------

def svg_text(result, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    path = tmp_path / "lr.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):      # text stays text
        result.plot(path)
    return path.read_text()


def test_the_plot_marks_the_suggestion_and_names_its_rule(least_squares, tmp_path):
    fn, _ = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(), suggest="steep")
    text = svg_text(result, tmp_path)
    assert f"suggestion (steep): {result.suggestion:.2g}" in text
    assert f"steep suggests {result.suggestion:.2g}" in text
    assert f"valley: {result.suggestions['valley']:.2g}" in text


def test_the_plot_says_why_there_is_no_suggestion(tmp_path):
    result = lrcore.find_lr(lambda p: (3.0, [np.zeros(1)]), [np.zeros(1)], lrcore.SGD())
    text = svg_text(result, tmp_path)
    assert "no valley suggestion" in text and "did not decrease" in text
