"""Property-based: random optimizers, options, schedules, shapes, dtype combinations (API.md's
mixed-precision table, bfloat16 as ml_dtypes and as BFLOAT16_BITS), gradient magnitudes,
grad_scale and max_grad_norm. The compiled step equals the reference expectation of
test_mixed_precision.Expected bit for bit (params, buffers, counts, last_grad_norm), and a
state_dict round trip at a random step continues exactly."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrcore
from lrcore import schedules

from test_mixed_precision import COMBOS, Expected, stored, uint_view
from test_optimizers import OPTIMIZERS

CASES = [(cls, ref, options) for cls, ref, _, all_options in OPTIMIZERS for options in all_options]

SCHEDULES = st.one_of(
    st.floats(1e-4, 0.1),
    st.builds(schedules.ExponentialDecay, st.floats(1e-3, 0.1), st.integers(1, 20),
              st.floats(0.5, 1.0), st.booleans()),
    # t_mul 1, or far enough above it to be evaluable (CosineDecayRestarts refuses t_mul
    # within about 2**-47 of 1 for small first_decay_steps)
    st.builds(schedules.CosineDecayRestarts, st.floats(1e-3, 0.1), st.integers(1, 10),
              st.one_of(st.just(1.0), st.floats(1.001, 3.0)), st.floats(0.5, 1.0)),
    st.builds(schedules.Warmup, st.builds(schedules.CosineDecay, st.floats(1e-3, 0.1),
                                          st.integers(1, 50)), st.integers(0, 5)),
    st.builds(schedules.NoisyLinearCosineDecay, st.floats(1e-3, 0.1), st.integers(1, 50),
              st.floats(0.0, 1e-4), seed=st.integers(0, 2**64 - 1)),
)
SHAPES = st.lists(st.sampled_from([(), (0,), (1,), (7,), (16,), (33,), (3, 5), (2, 3, 4), (1031,)]),
                  min_size=1, max_size=4)


GRAD_SCALES = st.one_of(st.none(), st.sampled_from([2.0**-8, 0.3, 1.0, 3.0, 1024.0]),
                        st.floats(1e-3, 1e4))
MAX_GRAD_NORMS = st.one_of(st.none(), st.sampled_from([1e-3, 0.5, 10.0, 1e6]))


@st.composite
def runs(draw):
    cls, ref, options = draw(st.sampled_from(CASES))
    shapes = draw(SHAPES)
    combos = [draw(st.sampled_from(list(COMBOS))) for _ in shapes]
    steps = draw(st.integers(1, 6))
    scales = [draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3])) for _ in range(steps)]
    grad_scales = [draw(GRAD_SCALES) for _ in range(steps)]
    seed = draw(st.integers(0, 2**32 - 1))
    return (cls, ref, options, draw(SCHEDULES), shapes, combos, scales, seed, grad_scales,
            draw(MAX_GRAD_NORMS))


def make_data(shapes, combos, scales, seed):
    """Params and per-step grads in each array's (params, grads) dtype combination."""
    rng = np.random.default_rng(seed)
    params = [stored(rng.standard_normal(s), COMBOS[c][0]) for s, c in zip(shapes, combos)]
    grads = [[stored(rng.standard_normal(s) * k, COMBOS[c][1]) for s, c in zip(shapes, combos)]
             for k in scales]
    return params, grads


SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(runs())
def test_compiled_equals_reference(compiled, run):
    cls, ref, options, lr, shapes, combos, scales, seed, grad_scales, max_grad_norm = run
    params, grads = make_data(shapes, combos, scales, seed)
    expected = Expected(cls, options, params, max_grad_norm)
    state = cls(lr=lr, max_grad_norm=max_grad_norm, **options)
    for k, (g, grad_scale) in enumerate(zip(grads, grad_scales)):
        with np.errstate(all="ignore"):
            rate = lrcore.step(params, g, state, grad_scale=grad_scale)   # the rate the kernels used
        expected.step(g, rate, grad_scale)
        expected.assert_matches(state, params, f"step {k}: ")


@SETTINGS
@given(runs(), st.integers(0, 6))
def test_state_dict_round_trip_at_a_random_step(backend, run, cut):
    cls, ref, options, lr, shapes, combos, scales, seed, grad_scales, max_grad_norm = run
    params, grads = make_data(shapes, combos, scales * 2, seed)
    grad_scales = grad_scales * 2
    cut = min(cut, len(grads))
    straight = [p.copy() for p in params]
    state = cls(lr=lr, max_grad_norm=max_grad_norm, **options)
    with np.errstate(all="ignore"):
        for g, grad_scale in zip(grads, grad_scales):
            lrcore.step(straight, g, state, grad_scale=grad_scale)
        first = cls(lr=lr, max_grad_norm=max_grad_norm, **options)
        for g, grad_scale in zip(grads[:cut], grad_scales[:cut]):
            lrcore.step(params, g, first, grad_scale=grad_scale)
        second = cls()
        second.load_state_dict(first.state_dict())
        assert second.max_grad_norm == max_grad_norm
        for g, grad_scale in zip(grads[cut:], grad_scales[cut:]):
            lrcore.step(params, g, second, grad_scale=grad_scale)
    for a, b in zip(params, straight):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(uint_view(a), uint_view(b))
    for name, arrays in state.buffers.items():
        for a, b in zip(arrays, second.buffers[name]):
            np.testing.assert_array_equal(uint_view(a), uint_view(b))
    if cut < len(grads) and max_grad_norm is not None:
        assert second.last_grad_norm == state.last_grad_norm or (
            np.isnan(second.last_grad_norm) and np.isnan(state.last_grad_norm))
