"""The compiled SGD step against the numpy reference, bit for bit.

The expectation is built by calling lrcore.reference.sgd directly, array by array, step by
step: independent of the state machinery and of the kernels. Both perform the same IEEE
operations in the same order (the build disables FMA contraction), so they agree exactly.
"""
import numpy as np
import pytest

import lrcore
from lrcore import reference

# Every meaningful option combination of torch.optim.SGD.
OPTIONS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n in [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.5, False), (0.9, 0.0, True)]
    for wd in (0.0, 0.01)
    for mx in (False, True)
]
# Around every SIMD width and tail, plus one past 2**20.
SIZES = [0, 1, 15, 16, 17, 1023, 2**20 + 3]
STEPS = 4


def option_id(o):
    return "-".join(f"{k}={v}" for k, v in o.items() if v)


def reference_run(params, grads_per_step, lrs, **options):
    """Apply reference.sgd to copies of params, one array and one step at a time."""
    params = [p.copy() for p in params]
    buffers = [np.zeros_like(p) for p in params]
    for k, (grads, lr) in enumerate(zip(grads_per_step, lrs)):
        for p, g, b in zip(params, grads, buffers):
            reference.sgd(p, g, b, step=k, lr=lr, **options)
    return params, buffers if options["momentum"] else None


def random_arrays(rng, shapes, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_compiled_matches_reference(compiled, rng, options, size, dtype):
    params = random_arrays(rng, [size], dtype)
    grads_per_step = [random_arrays(rng, [size], dtype) for _ in range(STEPS)]
    lrs = [0.05] * STEPS
    want_params, want_buffers = reference_run(params, grads_per_step, lrs, **options)

    state = lrcore.SGD(lr=0.05, **options)
    for grads in grads_per_step:
        kept = [g.copy() for g in grads]
        assert lrcore.step(params[0], grads[0], state) == 0.05
        np.testing.assert_array_equal(grads[0], kept[0])   # grads are never written

    np.testing.assert_array_equal(params[0], want_params[0])
    assert params[0].dtype == dtype
    if want_buffers is None:
        assert state.buffers == {}
    else:
        np.testing.assert_array_equal(state.buffers["momentum_buffer"][0], want_buffers[0])
    assert state.step_count == STEPS
    assert state.array_steps == [STEPS]


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_one_call_over_a_list_equals_the_reference_per_array(compiled, rng, options):
    """A mixed list (shapes, float32 and float64) in one call == each array on its own."""
    shapes = [(3, 5), (17,), (), (0,), (2, 3, 4), (1031,)]
    dtypes = [np.float32, np.float64, np.float32, np.float32, np.float64, np.float32]
    params = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    grads_per_step = [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
                      for _ in range(STEPS)]
    lrs = [0.1 / (k + 1) for k in range(STEPS)]
    want_params, want_buffers = reference_run(params, grads_per_step, lrs, **options)

    state = lrcore.SGD(lr=lambda k: 0.1 / (k + 1), **options)
    for k, grads in enumerate(grads_per_step):
        assert lrcore.step(tuple(params), grads, state) == lrs[k]
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p, want_params[i])
        assert p.shape == shapes[i] and p.dtype == dtypes[i]
        if want_buffers is not None:
            np.testing.assert_array_equal(state.buffers["momentum_buffer"][i], want_buffers[i])
    assert state.array_steps == [STEPS] * len(shapes)


def test_the_reference_backend_runs_the_same_update(numpy_backend, rng):
    options = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=False)
    params = random_arrays(rng, [(4, 4)], np.float32)
    grads_per_step = [random_arrays(rng, [(4, 4)], np.float32) for _ in range(3)]
    want, _ = reference_run(params, grads_per_step, [0.1] * 3, **options)
    state = lrcore.SGD(lr=0.1, **options)
    for grads in grads_per_step:
        lrcore.step(params, grads, state)
    np.testing.assert_array_equal(params[0], want[0])


def test_first_momentum_step_copies_the_gradient(backend):
    p = np.zeros(4, np.float32)
    g = np.array([1, -2, 3, -4], np.float32)
    state = lrcore.SGD(lr=0.5, momentum=0.9, dampening=0.5)
    lrcore.step(p, g, state)
    np.testing.assert_array_equal(state.buffers["momentum_buffer"][0], g)   # not (1 - 0.5)·g
    np.testing.assert_array_equal(p, -0.5 * g)
    lrcore.step(p, g, state)   # b = 0.9·g + 0.5·g = 1.4·g (in float32)
    b = np.float32(0.9) * g + np.float32(0.5) * g
    np.testing.assert_array_equal(state.buffers["momentum_buffer"][0], b)


def test_maximize_ascends(backend):
    p = np.array([0.0], np.float64)
    state = lrcore.SGD(lr=0.1, maximize=True)
    for _ in range(3):
        lrcore.step(p, np.array([2.0]), state)   # gradient of 2p
    np.testing.assert_allclose(p, [0.6])


def test_weight_decay_shrinks_parameters_with_zero_gradient(backend):
    p = np.full(8, 10.0, np.float32)
    lrcore.step(p, np.zeros(8, np.float32), lrcore.SGD(lr=0.1, weight_decay=0.5))
    np.testing.assert_array_equal(p, np.float32(10) - np.float32(0.1) * (np.float32(0.5) * np.float32(10)))


def test_nonfinite_values_propagate_like_torch(backend):
    p = np.array([1.0, 2.0, np.inf], np.float32)
    g = np.array([np.nan, 1.0, 1.0], np.float32)
    lrcore.step(p, g, lrcore.SGD(lr=0.5))
    assert np.isnan(p[0]) and p[1] == 1.5 and p[2] == np.inf


def test_zero_weight_decay_does_not_touch_infinite_params(backend):
    """wd = 0 must skip the term, not add 0·p (which is NaN for an infinite p)."""
    p = np.array([np.inf], np.float32)
    lrcore.step(p, np.zeros(1, np.float32), lrcore.SGD(lr=0.1, momentum=0.9))
    assert p[0] == np.inf
