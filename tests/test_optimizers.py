"""Every compiled optimizer against the numpy reference, bit for bit, plus the semantics a
user relies on (first momentum step, maximize, weight decay, non-finite values).

The expectation is built by calling the lrcore.reference function directly, array by array,
step by step: independent of the state machinery and of the kernels. Both perform the same
IEEE operations in the same order (the build disables FMA contraction), so they agree exactly.
"""
import itertools

import numpy as np
import pytest

import lrcore
from lrcore import reference
from conftest import LEVELS


def combos(**choices):
    return [dict(zip(choices, values)) for values in itertools.product(*choices.values())]


# (optimizer, reference function, lr, option combinations): every option of torch.optim.
SGD_MOMENTUM = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.5),
                dict(momentum=0.9, nesterov=True)]
OPTIMIZERS = [
    (lrcore.SGD, reference.sgd, 0.05,
     [dict(m, **o) for m in SGD_MOMENTUM for o in combos(weight_decay=[0.0, 0.01],
                                                         maximize=[False, True])]),
    (lrcore.Adagrad, reference.adagrad, 0.05,
     combos(lr_decay=[0.0, 0.1], weight_decay=[0.0, 0.01], initial_accumulator_value=[0.0, 0.1],
            maximize=[False, True])),
    (lrcore.RMSprop, reference.rmsprop, 0.01,
     combos(centered=[False, True], momentum=[0.0, 0.9], weight_decay=[0.0, 0.01],
            maximize=[False, True]) + [dict(alpha=0.5, eps=1e-3)]),
    (lrcore.Adam, reference.adam, 0.01,
     combos(amsgrad=[False, True], weight_decay=[0.0, 0.01], maximize=[False, True])
     + [dict(betas=(0.5, 0.9), eps=1e-3), dict(betas=(0.0, 0.0))]),
    (lrcore.AdamW, reference.adamw, 0.01,
     combos(amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True])),
]
CASES = [(cls, ref, lr, o) for cls, ref, lr, options in OPTIMIZERS for o in options]
CASE_IDS = [cls.__name__ + "-" + ("-".join(f"{k}={v}" for k, v in o.items() if v) or "defaults")
            for cls, _, _, o in CASES]

# Around every SIMD width and tail, plus one past 2**20.
SIZES = [0, 1, 15, 16, 17, 1023, 2**20 + 3]
STEPS = 4
GRAD_SCALES = [1.0, 0.1, 3.0, 0.01]     # shrinking gradients exercise amsgrad's maximum


def buffer_names(cls, options):
    """The buffers API.md names for these options (torch's names)."""
    o = dict(options)
    if cls is lrcore.SGD:
        return ["momentum_buffer"] if o.get("momentum") else []
    if cls is lrcore.Adagrad:
        return ["sum"]
    if cls is lrcore.RMSprop:
        return (["square_avg"] + (["grad_avg"] if o.get("centered") else [])
                + (["momentum_buffer"] if o.get("momentum") else []))
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if o.get("amsgrad") else [])


def reference_run(cls, ref, params, grads_per_step, lrs, options):
    """Apply the reference function to copies of params, one array and one step at a time."""
    params = [p.copy() for p in params]
    start = options.get("initial_accumulator_value", 0.0)
    update_options = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    buffers = {name: [np.full_like(p, start if name == "sum" else 0.0) for p in params]
               for name in buffer_names(cls, options)}
    for k, (grads, lr) in enumerate(zip(grads_per_step, lrs)):
        for i, (p, g) in enumerate(zip(params, grads)):
            ref(p, g, step=k, lr=lr, **{n: b[i] for n, b in buffers.items()}, **update_options)
    return params, buffers


def random_grads(rng, shapes, dtypes):
    return [[np.asarray(rng.standard_normal(s) * scale, dtype=d) for s, d in zip(shapes, dtypes)]
            for scale in GRAD_SCALES[:STEPS]]


def assert_state_equals(state, params, want_params, want_buffers):
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p, want_params[i])
    assert sorted(state.buffers) == sorted(want_buffers)
    for name, arrays in want_buffers.items():
        for got, want in zip(state.buffers[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("vector_level", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_compiled_matches_reference(compiled, rng, cls, ref, lr, options, size, dtype,
                                    vector_level):
    """Bit for bit, on every version of the update loops this CPU runs (the x86 vector levels
    of src/kernels.h, each chosen by the same table the step dispatches through)."""
    params = [rng.standard_normal(size).astype(dtype)]
    grads_per_step = random_grads(rng, [size], [dtype])
    want_params, want_buffers = reference_run(cls, ref, params, grads_per_step, [lr] * STEPS,
                                              options)
    state = cls(lr=lr, **options)
    for grads in grads_per_step:
        kept = grads[0].copy()
        assert lrcore.step(params[0], grads[0], state) == lr
        np.testing.assert_array_equal(grads[0], kept)     # grads are never written
    assert params[0].dtype == dtype
    assert_state_equals(state, params, want_params, want_buffers)
    assert state.step_count == STEPS and state.array_steps == [STEPS]


# Sizes around the blocks of Adam's underflow guard (src/kernels_impl.h LRC_GUARD_BLOCK, 128
# elements: a block holding a nonzero gradient below ~3.4e-18 runs the careful form, and each
# block's test is read ahead in the block before it)
GUARD_SIZES = [1, 127, 128, 129, 255, 256, 257, 1000, 4 * 128 + 17, 3 * 32768 + 5]
ADAM_CASES = [c for c in CASES if c[0] in (lrcore.Adam, lrcore.AdamW)]


def mixed_magnitude_grads(rng, n):
    """float32 gradients in runs of 1 to 600 elements of one kind: normal (1e-2), tiny (1e-20:
    (1 − β2)·g·g underflows), subnormal (1e-41) or zero; so guard blocks of every mixture
    and whole blocks of each kind."""
    kinds, total = [], 0
    while total < n:
        length = int(rng.integers(1, 600))
        kinds.append(np.full(length, rng.integers(0, 4)))
        total += length
    scale = np.array([1e-2, 1e-20, 1e-41, 0.0])[np.concatenate(kinds)[:n]]
    return (rng.standard_normal(n) * scale).astype(np.float32)


@pytest.mark.parametrize("vector_level", LEVELS, indirect=True)
@pytest.mark.parametrize("grad_scale", [None, 4.0])
@pytest.mark.parametrize("cls, ref, lr, options", ADAM_CASES,
                         ids=[CASE_IDS[CASES.index(c)] for c in ADAM_CASES])
def test_tiny_and_subnormal_gradients_give_the_reference_bits(compiled, rng, cls, ref, lr,
                                                              options, grad_scale, vector_level):
    """Adam where gradients leave float32's normal range, on every vector level (the guard
    runs where it pays): the careful form gives the fast form's bits, the reference's."""
    params = [rng.standard_normal(n).astype(np.float32) for n in GUARD_SIZES]
    grads_per_step = [[mixed_magnitude_grads(rng, n) for n in GUARD_SIZES] for _ in range(STEPS)]
    factor = np.float32(1.0 / grad_scale) if grad_scale else np.float32(1.0)
    scaled = [[g * factor for g in grads] for grads in grads_per_step]
    want_params, want_buffers = reference_run(cls, ref, params, scaled, [lr] * STEPS, options)
    state = cls(lr=lr, **options)
    for grads in grads_per_step:
        lrcore.step(params, grads, state, grad_scale=grad_scale)
    assert_state_equals(state, params, want_params, want_buffers)


@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_one_call_over_a_list_equals_the_reference_per_array(compiled, rng, cls, ref, lr, options):
    """A mixed list (shapes, float32 and float64) in one call == each array on its own."""
    shapes = [(3, 5), (17,), (), (0,), (2, 3, 4), (1031,)]
    dtypes = [np.float32, np.float64, np.float32, np.float32, np.float64, np.float32]
    params = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    grads_per_step = random_grads(rng, shapes, dtypes)
    lrs = [lr / (k + 1) for k in range(STEPS)]
    want_params, want_buffers = reference_run(cls, ref, params, grads_per_step, lrs, options)
    state = cls(lr=lambda k: lr / (k + 1), **options)
    for k, grads in enumerate(grads_per_step):
        assert lrcore.step(tuple(params), grads, state) == lrs[k]
    assert [(p.shape, p.dtype) for p in params] == list(zip(shapes, map(np.dtype, dtypes)))
    assert_state_equals(state, params, want_params, want_buffers)
    assert state.array_steps == [STEPS] * len(shapes)


@pytest.mark.parametrize("cls, ref, lr, options", CASES[::3], ids=CASE_IDS[::3])
def test_the_numpy_backend_runs_the_reference(numpy_backend, rng, cls, ref, lr, options):
    params = [rng.standard_normal((4, 4)).astype(np.float32)]
    grads_per_step = random_grads(rng, [(4, 4)], [np.float32])
    want_params, want_buffers = reference_run(cls, ref, params, grads_per_step, [lr] * STEPS,
                                              options)
    state = cls(lr=lr, **options)
    for grads in grads_per_step:
        lrcore.step(params, grads, state)
    assert_state_equals(state, params, want_params, want_buffers)


# (optimizer, lr) that make steady progress on the quadratic below in 100 steps.
CONVERGING = [(lrcore.SGD, dict(lr=0.05)), (lrcore.SGD, dict(lr=0.02, momentum=0.9)),
              (lrcore.Adagrad, dict(lr=0.5)), (lrcore.RMSprop, dict(lr=0.01)),
              (lrcore.Adam, dict(lr=0.05)), (lrcore.AdamW, dict(lr=0.05, weight_decay=0.0))]


@pytest.mark.parametrize("cls, kwargs", CONVERGING, ids=lambda v: getattr(v, "__name__", str(v)))
def test_descends_a_quadratic_and_ascends_under_maximize(backend, cls, kwargs):
    curvature = np.linspace(0.5, 4.0, 32, dtype=np.float32)
    loss = lambda p: float(0.5 * np.sum(curvature * (p - 1) ** 2))
    for maximize, better in ((False, lambda a, b: a < 0.1 * b), (True, lambda a, b: a > 2 * b)):
        p = np.zeros(32, np.float32)
        state = cls(maximize=maximize, **kwargs)
        start = loss(p)
        for _ in range(100):
            lrcore.step(p, curvature * (p - 1), state)
        assert better(loss(p), start), (maximize, loss(p), start)


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


def test_adagrad_sum_starts_at_initial_accumulator_value(backend):
    p = np.zeros(3, np.float32)
    state = lrcore.Adagrad(lr=1.0, initial_accumulator_value=3.0, eps=0.0)
    lrcore.step(p, np.ones(3, np.float32), state)
    np.testing.assert_array_equal(state.buffers["sum"][0], [4.0] * 3)
    np.testing.assert_array_equal(p, [-0.5] * 3)                  # 1·1 / √4


def test_adam_first_step_moves_each_element_by_lr(backend):
    """With bias correction the first Adam step is lr·g/(|g| + eps') ≈ ±lr, whatever |g|."""
    p = np.zeros(4, np.float64)
    lrcore.step(p, np.array([1e-3, -5.0, 200.0, -1e-2]), lrcore.Adam(lr=0.1, eps=0.0))
    np.testing.assert_allclose(p, [-0.1, 0.1, -0.1, 0.1], rtol=1e-12)


@pytest.mark.parametrize("cls, beta, name, options", [
    (lrcore.Adam, 0.9, "exp_avg", {}), (lrcore.Adam, 0.3, "exp_avg", {}),
    (lrcore.RMSprop, 0.99, "grad_avg", dict(centered=True)),
    (lrcore.RMSprop, 0.2, "grad_avg", dict(centered=True))])
def test_running_averages_move_as_torch_lerp(backend, cls, beta, name, options):
    """Adam's m and centered RMSprop's average move as torch.lerp(a, g, w), w = 1 − β, in
    float32: a + w·(g − a) for w < 0.5, else g − (g − a)·(1 − w); subnormal gradients too."""
    kwargs = dict(betas=(beta, 0.999)) if cls is lrcore.Adam else dict(alpha=beta)
    state = cls(lr=1e-3, **kwargs, **options)
    p = np.linspace(-1, 1, 6).astype(np.float32)
    lrcore.step(p, np.array([0.5, -2.0, 3e-3, 1e-39, -7.0, 0.25], np.float32), state)
    a = state.buffers[name][0].copy()
    g = np.array([1.5, 4e-39, -1e-3, 2.0, -7.0, -0.125], np.float32)
    lrcore.step(p, g, state)
    w = np.float32(1.0 - beta)
    want = a + w * (g - a) if w < 0.5 else g - (g - a) * (np.float32(1) - w)
    np.testing.assert_array_equal(state.buffers[name][0], want)


def test_adamw_decays_weights_without_touching_the_moments(backend):
    p = np.full(2, 10.0)
    state = lrcore.AdamW(lr=0.1, weight_decay=0.5)
    lrcore.step(p, np.zeros(2), state)
    np.testing.assert_array_equal(p, [10.0 * (1 - 0.1 * 0.5)] * 2)   # zero gradient: decay only
    np.testing.assert_array_equal(state.buffers["exp_avg"][0], [0.0, 0.0])


def test_amsgrad_keeps_the_largest_second_moment(backend):
    p = np.zeros(1)
    state = lrcore.Adam(lr=0.1, amsgrad=True)
    lrcore.step(p, np.array([10.0]), state)
    peak = state.buffers["max_exp_avg_sq"][0].copy()
    lrcore.step(p, np.array([0.0]), state)
    assert state.buffers["exp_avg_sq"][0][0] < peak[0]
    assert state.buffers["max_exp_avg_sq"][0][0] == peak[0]


def state_at_array_step(cls, options, step, params):
    """A state bound to `params` whose arrays have had `step` updates each."""
    state = cls(lr=0.1, **options)
    lrcore.step([np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params], state)
    sd = state.state_dict()
    sd.update(step_count=step, array_steps=[step] * len(params))
    state.load_state_dict(sd)
    return state


@pytest.mark.parametrize("step", [2**53 - 1, 2**53, 2**53 + 1, 2**62 + 1, 2**63 - 2])
@pytest.mark.parametrize("cls, ref, options", [
    # β = 1 − 2**-53 keeps β**t away from 0 at t ≈ 2**53, so t's rounding shows
    (lrcore.Adam, reference.adam, dict(betas=(1 - 2**-53, 1 - 2**-53))),
    (lrcore.Adagrad, reference.adagrad, dict(lr_decay=1e-16)),
])
def test_bias_corrections_round_huge_step_counts_as_the_reference(compiled, rng, cls, ref, options,
                                                                  step):
    """The array's count t − 1 = step and t = step + 1 are each rounded once to double, as
    the reference's Python ints are (not (double)step + 1.0)."""
    p = rng.standard_normal(40)
    g = rng.standard_normal(40)
    state = state_at_array_step(cls, options, step, [p])
    want = p.copy()
    buffers = {name: b.copy() for name, (b,) in state.buffers.items()}
    ref(want, g, step=step, lr=0.1, **buffers, **options)
    lrcore.step(p, g, state)
    assert p.tobytes() == want.tobytes()
    assert state.array_steps == [step + 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_nan_and_inf_gradients_give_the_references_bits(compiled, cls, ref, lr, options, dtype):
    """NaN's sign and payload too: maximize negates a NaN gradient to −NaN as numpy does."""
    g = np.array([np.nan, -np.nan, np.inf, -np.inf, 1.0, -2.0] * 3, dtype=dtype)
    p = np.linspace(-1, 1, g.size).astype(dtype)
    with np.errstate(all="ignore"):
        want, buffers = reference_run(cls, ref, [p], [[g]], [lr], options)
    state = cls(lr=lr, **options)
    lrcore.step(p, g, state)
    assert p.tobytes() == want[0].tobytes()
    for name, (b,) in state.buffers.items():
        assert b.tobytes() == buffers[name][0].tobytes(), name
