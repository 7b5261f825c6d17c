"""Property-based: random optimizers, options, schedules, shapes, dtypes and gradient scales.
The compiled step equals the numpy reference bit for bit, and a state_dict round trip at a
random step continues exactly."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrcore
from lrcore import schedules

from test_optimizers import OPTIMIZERS, buffer_names

CASES = [(cls, ref, options) for cls, ref, _, all_options in OPTIMIZERS for options in all_options]

SCHEDULES = st.one_of(
    st.floats(1e-4, 0.1),
    st.builds(schedules.ExponentialDecay, st.floats(1e-3, 0.1), st.integers(1, 20),
              st.floats(0.5, 1.0), st.booleans()),
    st.builds(schedules.CosineDecayRestarts, st.floats(1e-3, 0.1), st.integers(1, 10),
              st.floats(1.0, 3.0), st.floats(0.5, 1.0)),
    st.builds(schedules.Warmup, st.builds(schedules.CosineDecay, st.floats(1e-3, 0.1),
                                          st.integers(1, 50)), st.integers(0, 5)),
    st.builds(schedules.NoisyLinearCosineDecay, st.floats(1e-3, 0.1), st.integers(1, 50),
              st.floats(0.0, 1e-4), seed=st.integers(0, 2**64 - 1)),
)
SHAPES = st.lists(st.sampled_from([(), (0,), (1,), (7,), (16,), (33,), (3, 5), (2, 3, 4), (1031,)]),
                  min_size=1, max_size=4)


@st.composite
def runs(draw):
    cls, ref, options = draw(st.sampled_from(CASES))
    shapes = draw(SHAPES)
    dtypes = [draw(st.sampled_from([np.float32, np.float64])) for _ in shapes]
    steps = draw(st.integers(1, 6))
    scales = [draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3])) for _ in range(steps)]
    seed = draw(st.integers(0, 2**32 - 1))
    return cls, ref, options, draw(SCHEDULES), shapes, dtypes, scales, seed


def make_data(shapes, dtypes, scales, seed):
    rng = np.random.default_rng(seed)
    params = [np.asarray(rng.standard_normal(s), dtype=d) for s, d in zip(shapes, dtypes)]
    grads = [[np.asarray(rng.standard_normal(s) * k, dtype=d) for s, d in zip(shapes, dtypes)]
             for k in scales]
    return params, grads


SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(runs())
def test_compiled_equals_reference(compiled, run):
    cls, ref, options, lr, shapes, dtypes, scales, seed = run
    params, grads = make_data(shapes, dtypes, scales, seed)
    want = [p.copy() for p in params]
    start = options.get("initial_accumulator_value", 0.0)
    bufs = {n: [np.full_like(p, start if n == "sum" else 0.0) for p in params]
            for n in buffer_names(cls, options)}
    update_options = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    state = cls(lr=lr, **options)
    for k, g in enumerate(grads):
        rate = lrcore.step(params, g, state)           # the rate the kernels used
        for i, (p, gi) in enumerate(zip(want, g)):
            ref(p, gi, step=k, lr=rate, **{n: b[i] for n, b in bufs.items()}, **update_options)
    for a, b in zip(params, want):
        np.testing.assert_array_equal(a, b)


@SETTINGS
@given(runs(), st.integers(0, 6))
def test_state_dict_round_trip_at_a_random_step(backend, run, cut):
    cls, ref, options, lr, shapes, dtypes, scales, seed = run
    params, grads = make_data(shapes, dtypes, scales * 2, seed)
    cut = min(cut, len(grads))
    straight = [p.copy() for p in params]
    state = cls(lr=lr, **options)
    for g in grads:
        lrcore.step(straight, g, state)
    first = cls(lr=lr, **options)
    for g in grads[:cut]:
        lrcore.step(params, g, first)
    second = cls()
    second.load_state_dict(first.state_dict())
    for g in grads[cut:]:
        lrcore.step(params, g, second)
    for a, b in zip(params, straight):
        np.testing.assert_array_equal(a, b)
