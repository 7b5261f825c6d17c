"""find_lr: the LR range test of seed 002, on least squares where the divergence point is known."""
import numpy as np
import pytest

import lrcore


@pytest.fixture
def least_squares(rng):
    X = rng.standard_normal((256, 8)) * np.geomspace(0.5, 3, 8)
    y = X @ rng.standard_normal(8)

    def fn(params):
        w = params[0]
        err = X @ w - y
        return 0.5 * np.mean(err ** 2), [X.T @ err / len(y)]
    hessian = X.T @ X / len(y)
    return fn, 2 / np.linalg.eigvalsh(hessian).max()     # SGD diverges above this rate


def test_picks_rates_below_the_divergence_point_and_stops_when_it_diverges(backend, least_squares):
    fn, diverges_above = least_squares
    result = lrcore.find_lr(fn, [np.zeros(8)], lrcore.SGD(lr=0.1))
    assert result.stopped_early and result.lrs[-1] < 10.0
    assert result.suggestion < diverges_above and result.steepest < diverges_above
    assert result.suggestion == pytest.approx(result.lrs[np.argmin(result.losses)] / 10)
    assert np.all(np.isfinite(result.losses)) and np.all(np.diff(result.lrs) > 0)
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-7, 10, 100)[:len(result.lrs)])


def test_params_and_state_are_restored(backend, least_squares, rng):
    fn, _ = least_squares
    params = [rng.standard_normal(8)]
    state = lrcore.Adam(lr=0.01)
    lrcore.step(params, fn(params)[1], state)
    before_params, before_state = params[0].copy(), state.state_dict()
    lrcore.find_lr(fn, params, state, num_steps=50)
    np.testing.assert_array_equal(params[0], before_params)
    after = state.state_dict()
    assert after["step_count"] == before_state["step_count"] and after["lr"] == 0.01
    for name, arrays in before_state["buffers"].items():
        np.testing.assert_array_equal(after["buffers"][name][0], arrays[0])


def test_a_non_finite_loss_ends_the_sweep_and_is_left_out(backend):
    calls = []

    def fn(params):
        calls.append(1)
        loss = float("nan") if len(calls) == 6 else 1.0 / len(calls)
        return loss, [np.ones(2)]
    result = lrcore.find_lr(fn, [np.zeros(2)], lrcore.SGD(), num_steps=20, mode="linear")
    assert len(result.lrs) == 5 and result.stopped_early
    np.testing.assert_allclose(result.lrs, np.linspace(1e-7, 10, 20)[:5])


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(start_lr=1.0, end_lr=0.1), ValueError, r"0 < start_lr < end_lr"),
    (dict(start_lr=0.0), ValueError, r"0 < start_lr < end_lr"),
    (dict(num_steps=1), ValueError, r"num_steps must be an int >= 2, got 1"),
    (dict(mode="cosine"), ValueError, r"mode must be 'exp' or 'linear', got 'cosine'"),
])
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        lrcore.find_lr(lambda p: (1.0, [np.ones(1)]), [np.zeros(1)], lrcore.SGD(), **kwargs)


def test_state_must_be_an_lrcore_state():
    with pytest.raises(TypeError, match="state must be an lrcore optimizer state, got dict"):
        lrcore.find_lr(lambda p: (1.0, [np.ones(1)]), [np.zeros(1)], {})
