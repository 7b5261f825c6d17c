"""Optimizer state: counts, lr, buffers, state_dict / load_state_dict."""
import numpy as np
import pytest

import lrcore


def quadratic_grads(params):
    """Gradient of sum((p - 3)²) per array."""
    return [2 * (p - p.dtype.type(3)) for p in params]


def make_params(rng):
    return [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(5)]


def test_members_before_and_after_the_first_step(backend, rng):
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    assert (state.step_count, state.array_steps, state.buffers) == (0, [], {})
    assert state.lr == 0.1 and state.current_lr == 0.1
    params = make_params(rng)
    assert lrcore.step(params, quadratic_grads(params), state) == 0.1
    assert state.step_count == 1 and state.array_steps == [1, 1]
    bufs = state.buffers["momentum_buffer"]
    assert [(b.shape, b.dtype) for b in bufs] == [((4, 3), np.float32), ((5,), np.float64)]


def test_no_momentum_means_no_buffers(backend, rng):
    state = lrcore.SGD(lr=0.1)
    params = make_params(rng)
    lrcore.step(params, quadratic_grads(params), state)
    assert state.buffers == {}


def test_buffers_are_read_only_views_of_the_live_state(backend, rng):
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    params = make_params(rng)
    lrcore.step(params, quadratic_grads(params), state)
    view = state.buffers["momentum_buffer"][0]
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1.0
    before = view.copy()
    lrcore.step(params, quadratic_grads(params), state)
    assert not np.array_equal(view, before)     # a view: it follows the state


def test_callable_lr_is_called_with_the_step_count(backend):
    seen = []
    state = lrcore.SGD(lr=lambda k: seen.append(k) or 0.5 ** k)
    w = np.zeros(1, np.float32)
    used = [lrcore.step(w, np.ones(1, np.float32), state) for _ in range(4)]
    assert used == [1.0, 0.5, 0.25, 0.125]
    assert seen == [0, 1, 2, 3]
    assert state.current_lr == 0.0625
    assert w[0] == -1.875


def test_lr_can_be_changed_between_steps(backend):
    state = lrcore.SGD(lr=1.0)
    w = np.zeros(1)
    lrcore.step(w, np.ones(1), state)
    state.lr = 0.25
    assert lrcore.step(w, np.ones(1), state) == 0.25
    assert w[0] == -1.25


def test_state_dict_is_a_snapshot(backend, rng):
    state = lrcore.SGD(lr=0.1, momentum=0.9, nesterov=True)
    params = make_params(rng)
    lrcore.step(params, quadratic_grads(params), state)
    sd = state.state_dict()
    assert sd["optimizer"] == "SGD" and sd["step_count"] == 1 and sd["array_steps"] == [1, 1]
    assert sd["arrays"] == [("float32", (4, 3)), ("float64", (5,))]
    assert sd["hyperparameters"] == dict(momentum=0.9, dampening=0.0, nesterov=True,
                                         weight_decay=0.0, maximize=False, nonfinite="propagate",
                                         max_grad_norm=None, state_format=None,
                                         param_rounding="nearest", seed=0, min_8bit_size=4096)
    saved = sd["buffers"]["momentum_buffer"][0].copy()
    lrcore.step(params, quadratic_grads(params), state)
    np.testing.assert_array_equal(sd["buffers"]["momentum_buffer"][0], saved)


@pytest.mark.parametrize("options", [dict(), dict(momentum=0.9, dampening=0.2),
                                     dict(momentum=0.8, nesterov=True, weight_decay=0.1)])
def test_resume_from_state_dict_is_exact(backend, rng, options):
    """10 steps, state_dict, load into a fresh state, 10 more == 20 straight, bit for bit."""
    schedule = lambda k: 0.1 * 0.95 ** k
    start = make_params(rng)

    straight = [p.copy() for p in start]
    state = lrcore.SGD(lr=schedule, **options)
    for _ in range(20):
        lrcore.step(straight, quadratic_grads(straight), state)

    resumed = [p.copy() for p in start]
    first = lrcore.SGD(lr=schedule, **options)
    for _ in range(10):
        lrcore.step(resumed, quadratic_grads(resumed), first)
    second = lrcore.SGD()
    second.load_state_dict(first.state_dict())
    assert second.step_count == 10 and second.current_lr == schedule(10)
    for _ in range(10):
        lrcore.step(resumed, quadratic_grads(resumed), second)

    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    for name, arrays in state.buffers.items():
        for a, b in zip(arrays, second.buffers[name]):
            np.testing.assert_array_equal(a, b)


def test_a_loaded_state_stays_bound_to_its_arrays(backend, rng):
    first = lrcore.SGD(lr=0.1)                   # no buffers: the shapes come from "arrays"
    params = make_params(rng)
    lrcore.step(params, quadratic_grads(params), first)
    second = lrcore.SGD()
    second.load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match=r"params must hold 2 arrays, as at this state's first step"):
        lrcore.step(params[0], params[0] * 0, second)


def good_state_dict():
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    w = np.zeros(3, np.float32)
    lrcore.step(w, np.ones(3, np.float32), state)
    return state.state_dict()


def edit(**changes):
    sd = good_state_dict()
    sd.update(changes)
    return sd


BAD_STATE_DICTS = [
    ("another optimizer", edit(optimizer="Adam"), ValueError,
     r"state_dict must come from SGD.state_dict\(\), got one from 'Adam'"),
    ("not a dict", [1, 2], TypeError, r"state_dict must be a dict, got list"),
    ("missing keys", {"optimizer": "SGD", "lr": 0.1}, ValueError,
     r"state_dict is missing hyperparameters, step_count, array_steps, arrays, buffers"),
    ("bad hyperparameter", edit(hyperparameters=dict(momentum=-1.0)), ValueError,
     r"momentum must be a finite number >= 0"),
    ("negative step_count", edit(step_count=-1), ValueError,
     r"state_dict\['step_count'\] must be an int in \[0, 2\*\*63 - 1\], got -1"),
    ("step_count 2**63", edit(step_count=2 ** 63), ValueError,
     r"state_dict\['step_count'\] must be an int in \[0, 2\*\*63 - 1\], got an int outside int64"),
    ("step_count 10**5000", edit(step_count=10 ** 5000), ValueError,      # beyond repr's limit
     r"state_dict\['step_count'\] must be an int in \[0, 2\*\*63 - 1\], got an int outside int64"),
    ("float step_count", edit(step_count=3.0), ValueError,
     r"state_dict\['step_count'\] must be an int in \[0, 2\*\*63 - 1\], got 3.0"),
    ("skipped_steps 2**64", edit(skipped_steps=2 ** 64), ValueError,
     r"state_dict\['skipped_steps'\] must be an int in \[0, 2\*\*63 - 1\], got an int outside int64"),
    ("skipped_steps -10**5000", edit(skipped_steps=-10 ** 5000), ValueError,
     r"state_dict\['skipped_steps'\] must be an int in \[0, 2\*\*63 - 1\], got an int outside int64"),
    ("array_steps of another length", edit(array_steps=[1, 1]), ValueError,
     r"state_dict\['array_steps'\] must hold 1 ints in \[0, 2\*\*63 - 1\]"),
    ("array_steps entry 2**63", edit(array_steps=[2 ** 63]), ValueError,
     r"state_dict\['array_steps'\] must hold 1 ints in \[0, 2\*\*63 - 1\]"),
    ("array_steps entry negative", edit(array_steps=[-1]), ValueError,
     r"state_dict\['array_steps'\] must hold 1 ints in \[0, 2\*\*63 - 1\]"),
    ("integer arrays", edit(arrays=[("int32", (3,))]), ValueError,
     r"state_dict\['arrays'\] must list \(dtype name, shape\) pairs, the dtype one of "
     r"float32, float64, float16, bfloat16"),
    ("dtype None (np.dtype(None) is float64)", edit(arrays=[(None, (3,))]), ValueError,
     r"state_dict\['arrays'\] must list \(dtype name, shape\) pairs, the dtype one of "
     r"float32, float64, float16, bfloat16"),
    ("negative dimension", edit(arrays=[("float32", (-3,))]), ValueError,
     r"state_dict\['arrays'\] must list .* each shape a tuple of ints >= 0"),
    ("dimension 2**63", edit(arrays=[("float32", (2 ** 63,))]), ValueError,
     r"state_dict\['arrays'\] must list .* whose product fits int64"),
    ("shape product beyond int64", edit(arrays=[("float32", (2 ** 32, 2 ** 32))]), ValueError,
     r"state_dict\['arrays'\] must list .* whose product fits int64"),
    ("two negative dimensions", edit(arrays=[("float32", (-1, -3))]), ValueError,
     r"state_dict\['arrays'\] must list .* each shape a tuple of ints >= 0"),
    ("float dimension", edit(arrays=[("float32", (3.0,))]), ValueError,
     r"state_dict\['arrays'\] must list .* each shape a tuple of ints >= 0"),
    ("string shape", edit(arrays=[("float32", "3")]), ValueError,
     r"state_dict\['arrays'\] must list .* each shape a tuple of ints >= 0"),
    ("arrays not a list", edit(arrays=7), ValueError,
     r"state_dict\['arrays'\] must list \(dtype name, shape\) pairs, the dtype one of "
     r"float32, float64, float16, bfloat16"),
    ("hyperparameters not a dict", edit(hyperparameters=[("momentum", 0.9)]), ValueError,
     r"state_dict\['hyperparameters'\] must be a dict, got list"),
    ("buffers for other options", edit(buffers={}), ValueError,
     r"state_dict\['buffers'\] must hold \['momentum_buffer'\] for these options, got \[\]"),
    ("buffer of the wrong shape", edit(buffers={"momentum_buffer": [np.zeros(4, np.float32)]}),
     ValueError, r"state_dict\['buffers'\]\['momentum_buffer'\] must hold one array per param"),
    ("buffer of the wrong dtype", edit(buffers={"momentum_buffer": [np.zeros(3)]}),
     ValueError, r"state_dict\['buffers'\]\['momentum_buffer'\] must hold one array per param"),
]


@pytest.mark.parametrize("sd, exc, message", [c[1:] for c in BAD_STATE_DICTS],
                         ids=[c[0] for c in BAD_STATE_DICTS])
def test_a_bad_state_dict_is_rejected_and_changes_nothing(sd, exc, message):
    state = lrcore.SGD(lr=0.5, momentum=0.5)
    w = np.ones(2)
    lrcore.step(w, np.ones(2), state)
    before = state.state_dict()
    with pytest.raises(exc, match=message):
        state.load_state_dict(sd)
    after = state.state_dict()
    assert {k: v for k, v in after.items() if k != "buffers"} == \
           {k: v for k, v in before.items() if k != "buffers"}
    np.testing.assert_array_equal(after["buffers"]["momentum_buffer"][0],
                                  before["buffers"]["momentum_buffer"][0])


@pytest.mark.parametrize("huge", [2 ** 63, 10 ** 5000], ids=["2**63", "10**5000"])
def test_a_huge_count_on_an_unbound_state_changes_nothing(huge):
    """No buffers to mismatch: the count check alone must refuse it (the kernels hold int64)."""
    state = lrcore.SGD(lr=0.5)
    with pytest.raises(ValueError, match=r"state_dict\['step_count'\] must be an int in"):
        state.load_state_dict(dict(state.state_dict(), step_count=huge))
    assert state.step_count == 0


def test_the_largest_int64_counts_load(backend):
    """2**63 - 1 is the largest count int64 holds: load_state_dict keeps it exactly."""
    last = 2 ** 63 - 1
    sd = good_state_dict()
    sd.update(step_count=last, skipped_steps=last, array_steps=[last])
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    state.load_state_dict(sd)
    assert (state.step_count, state.skipped_steps, state.array_steps) == (last, last, [last])
    assert state.state_dict()["arrays"] == [("float32", (3,))]


def test_repr_shows_the_arguments():
    assert repr(lrcore.SGD(lr=0.1, momentum=0.9)) == (
        "SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, "
        "nonfinite='propagate', max_grad_norm=None, state_format=None, param_rounding='nearest', "
        "seed=0, min_8bit_size=4096)")


def test_hyperparameters_are_read_only():
    state = lrcore.SGD(momentum=0.9)
    assert state.momentum == 0.9
    with pytest.raises(AttributeError):
        state.momentum = 0.5
    for option in ("propagate", "skip", "raise"):        # the options too
        assert lrcore.Adam(nonfinite=option).nonfinite == option
    with pytest.raises(AttributeError):
        state.nonfinite = "skip"


# -- half precision, grad_scale and max_grad_norm ---------------------------------------

import ml_dtypes  # noqa: E402  (the mixed-precision part of this file)
from lrcore import _validate, reference  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
HALF_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": BF16,
               "bfloat16-bits": _validate.BFLOAT16_BITS}


def as_dtype(values, dtype):
    """float32 values rounded into `dtype` (float16, float32, ml_dtypes bfloat16 or its bits)."""
    values, dtype = np.asarray(values, np.float32), np.dtype(dtype)
    if _validate.format_of(dtype) == "bfloat16":
        return values.astype(BF16).view(np.uint16).view(dtype)
    return values.astype(dtype)


def half_grads(params, grad_dtypes):
    """Gradients of sum((p - 3)²), computed in float32 and stored in each grad dtype."""
    return [as_dtype(2 * (reference.widen(p) - np.float32(3)), d) for p, d in zip(params, grad_dtypes)]


HALF_STATES = [
    lambda: lrcore.SGD(lr=lambda k: 0.05 * 0.9 ** k, momentum=0.9, nesterov=True, max_grad_norm=2.0),
    lambda: lrcore.Adagrad(lr=0.1, initial_accumulator_value=0.1, max_grad_norm=50.0),
    lambda: lrcore.RMSprop(lr=0.01, centered=True, momentum=0.5, max_grad_norm=1.0),
    lambda: lrcore.Adam(lr=0.05, amsgrad=True, weight_decay=0.01, max_grad_norm=3.0),
]


def bits_of(a):
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


@pytest.mark.parametrize("half", list(HALF_DTYPES))
@pytest.mark.parametrize("make", HALF_STATES, ids=lambda f: type(f()).__name__)
def test_resume_in_half_precision_is_exact(backend, rng, make, half):
    """10 steps, state_dict, load, 10 more == 20 straight, bit for bit, with half-precision
    params (float32 params with half grads beside them), grad_scale and max_grad_norm."""
    dtype = HALF_DTYPES[half]
    start = [as_dtype(rng.standard_normal((4, 3)), dtype), as_dtype(rng.standard_normal(5), np.float32)]
    grad_dtypes = [dtype, dtype]

    def run(params, state, steps):
        for _ in range(steps):
            lrcore.step(params, half_grads(params, grad_dtypes), state, grad_scale=4.0)

    straight = [p.copy() for p in start]
    state = make()
    run(straight, state, 20)

    resumed = [p.copy() for p in start]
    first = make()
    run(resumed, first, 10)
    sd = first.state_dict()
    assert sd["arrays"] == [(_validate.format_of(dtype), (4, 3)), ("float32", (5,))]
    assert sd["hyperparameters"]["max_grad_norm"] == first.max_grad_norm
    second = type(first)()
    second.load_state_dict(sd)
    assert second.max_grad_norm == first.max_grad_norm and second.step_count == 10
    run(resumed, second, 10)

    for a, b in zip(straight, resumed):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(bits_of(a), bits_of(b))
    assert second.last_grad_norm == state.last_grad_norm
    for name, arrays in state.buffers.items():
        for a, b in zip(arrays, second.buffers[name]):
            assert _validate.format_of(a.dtype) == _validate.format_of(b.dtype)
            np.testing.assert_array_equal(bits_of(a), bits_of(b))


@pytest.mark.parametrize("bad", [np.zeros(3, np.float16), np.zeros(3, np.uint16),
                                 np.zeros(3, np.float32)], ids=["float16", "uint16", "float32"])
def test_a_bfloat16_buffer_of_another_dtype_is_rejected(bad):
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    p = as_dtype(np.ones(3), BF16)
    lrcore.step(p, p.copy(), state)
    sd = state.state_dict()
    assert _validate.format_of(sd["buffers"]["momentum_buffer"][0].dtype) == "bfloat16"
    before = state.state_dict()
    with pytest.raises(ValueError, match=r"state_dict\['buffers'\]\['momentum_buffer'\] must "
                                         r"hold one array per param, of formats and shapes "
                                         r"\[\('bfloat16', \(3,\)\)\]"):
        state.load_state_dict(dict(sd, buffers={"momentum_buffer": [bad]}))
    assert state.state_dict()["step_count"] == before["step_count"]
    np.testing.assert_array_equal(bits_of(state.buffers["momentum_buffer"][0]),
                                  bits_of(before["buffers"]["momentum_buffer"][0]))


def test_a_bits_buffer_loads_for_ml_dtypes_params_and_back(backend):
    """bfloat16 is one format in either representation: a state_dict with BFLOAT16_BITS
    buffers continues ml_dtypes params exactly, and the other way round."""
    p0 = as_dtype(np.linspace(-1, 1, 7), BF16)
    g = as_dtype(np.linspace(1, 2, 7), BF16)
    straight, state = p0.copy(), lrcore.Adam(lr=0.1)
    for _ in range(4):
        lrcore.step(straight, g, state)
    p, first = p0.copy(), lrcore.Adam(lr=0.1)
    for _ in range(2):
        lrcore.step(p, g, first)
    sd = first.state_dict()
    sd["buffers"] = {k: [b.view(np.uint16).view(_validate.BFLOAT16_BITS) for b in v]
                     for k, v in sd["buffers"].items()}
    second = lrcore.Adam()
    second.load_state_dict(sd)
    pb = p.view(np.uint16).view(_validate.BFLOAT16_BITS)
    gb = g.view(np.uint16).view(_validate.BFLOAT16_BITS)
    for _ in range(2):
        lrcore.step(pb, gb, second)
    np.testing.assert_array_equal(bits_of(p), bits_of(straight))


def test_last_grad_norm_and_max_grad_norm_in_the_state(backend):
    state = lrcore.SGD(lr=0.1, max_grad_norm=1.5)
    assert state.max_grad_norm == 1.5 and state.last_grad_norm is None
    assert state.state_dict()["hyperparameters"]["max_grad_norm"] == 1.5
    with pytest.raises(AttributeError):
        state.max_grad_norm = 2.0
    lrcore.step(np.zeros(2), np.array([3.0, 4.0]), state, grad_scale=2.0)
    assert state.last_grad_norm == 2.5
    assert "nonfinite='propagate', max_grad_norm=1.5, state_format=None" in repr(state)


@pytest.mark.parametrize("half", list(HALF_DTYPES))
def test_zero_dimensional_half_params_round_trip(backend, half):
    """A 0-d half-precision param: its buffers have its shape, and its state_dict loads."""
    dtype = HALF_DTYPES[half]
    p = as_dtype(np.array(1.0), dtype)
    state = lrcore.Adam(lr=0.1)
    lrcore.step(p, as_dtype(np.array(0.5), dtype), state)
    assert [b[0].shape for b in state.buffers.values()] == [(), ()]
    second = lrcore.Adam()
    second.load_state_dict(state.state_dict())
    assert second.state_dict()["arrays"] == [(_validate.format_of(dtype), ())]
