"""Faults and concurrency: non-finite gradients, frozen parameters (None grads), one state
stepped from several threads, several states in parallel."""
import threading

import numpy as np
import pytest

import lrcore

from test_optimizers import OPTIMIZERS

# one option set per optimizer, with every buffer its kind can have
STATES = {cls.__name__: (cls, ref, lr, options[-1]) for cls, ref, lr, options in OPTIMIZERS}
BIG = 200_003        # crosses the parallel threshold: the finiteness pass runs chunked


def arrays(rng, sizes=(5, BIG, 3), dtype=np.float32):
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def snapshot(params, state):
    return [p.copy() for p in params], state.state_dict()


def assert_same(params, state, before):
    copies, sd = before
    for p, c in zip(params, copies):
        np.testing.assert_array_equal(p, c)
    now = state.state_dict()
    for key in ("step_count", "array_steps"):
        assert now[key] == sd[key]
    for name, bufs in sd["buffers"].items():
        for a, b in zip(now["buffers"][name], bufs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", list(STATES))
def test_skip_changes_nothing_and_the_run_continues_as_if_the_step_never_came(
        backend, rng, name, bad):
    cls, _, lr, options = STATES[name]
    params = arrays(rng)
    good = [arrays(rng) for _ in range(3)]
    faulty = [g.copy() for g in good[0]]
    faulty[1][-1] = bad                               # the very last element of the big one
    twin = [p.copy() for p in params]

    state = cls(lr=lr, nonfinite="skip", **options)
    lrcore.step(params, good[0], state)
    before = snapshot(params, state)
    assert lrcore.step(params, faulty, state) == 0.0
    assert_same(params, state, before)
    assert state.skipped_steps == 1 and state.step_count == 1
    lrcore.step(params, good[1], state)

    clean = cls(lr=lr, **options)
    lrcore.step(twin, good[0], clean)
    lrcore.step(twin, good[1], clean)
    for a, b in zip(params, twin):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(STATES))
def test_raise_names_the_gradient_and_changes_nothing(backend, rng, name):
    cls, _, lr, options = STATES[name]
    params = arrays(rng)
    state = cls(lr=lr, nonfinite="raise", **options)
    lrcore.step(params, arrays(rng), state)
    grads = arrays(rng)
    grads[2][1] = np.nan
    before = snapshot(params, state)
    with pytest.raises(FloatingPointError, match=r"grads\[2\] holds NaN or infinite values"):
        lrcore.step(params, grads, state)
    assert_same(params, state, before)
    assert state.skipped_steps == 0


def test_raise_on_a_first_step_leaves_the_state_unbound(backend):
    state = lrcore.Adam(nonfinite="raise")
    with pytest.raises(FloatingPointError):
        lrcore.step(np.ones(3), np.array([1.0, np.inf, 1.0]), state)
    assert state.buffers == {} and state.state_dict()["arrays"] == []


def test_propagate_is_torchs_behaviour(backend):
    p = np.ones(3)
    lrcore.step(p, np.array([np.nan, 1.0, 1.0]), lrcore.Adam(lr=0.1))
    assert np.isnan(p[0]) and p[1] == p[2] == pytest.approx(0.9)


def test_nonfinite_must_be_a_known_mode():
    with pytest.raises(ValueError, match=r"nonfinite must be one of 'propagate', 'skip', 'raise', got 'ignore'"):
        lrcore.SGD(nonfinite="ignore")


@pytest.mark.parametrize("name", list(STATES))
def test_a_none_gradient_freezes_its_array_and_its_count(backend, rng, name):
    """The frozen array keeps params, buffers and update count; when it comes back its
    bias corrections continue from its own count, as torch counts `step` per parameter."""
    cls, ref, lr, options = STATES[name]
    params = arrays(rng, sizes=(4, 6, 5))
    want = [p.copy() for p in params]
    start = options.get("initial_accumulator_value", 0.0)
    names = list(cls(lr=lr, **options)._buffers_needed())
    bufs = {n: [np.full_like(p, start if n == "sum" else 0.0) for p in params] for n in names}
    counts = [0, 0, 0]
    state = cls(lr=lr, **options)
    schedule = [[True, False, True], [True, False, True], [True, True, True], [False, True, True]]
    for present in schedule:
        grads = [rng.standard_normal(p.shape).astype(p.dtype) if keep else None
                 for p, keep in zip(params, present)]
        frozen_before = [p.copy() for p, keep in zip(params, present) if not keep]
        lrcore.step(params, grads, state)
        for i, g in enumerate(grads):
            if g is None:
                continue
            update_options = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
            ref(want[i], g, step=counts[i], lr=lr, **{n: b[i] for n, b in bufs.items()},
                **update_options)
            counts[i] += 1
        for p, c in zip([p for p, keep in zip(params, present) if not keep], frozen_before):
            np.testing.assert_array_equal(p, c)
        assert state.array_steps == counts
    for a, b in zip(params, want):
        np.testing.assert_array_equal(a, b)
    for n in names:
        for a, b in zip(state.buffers[n], bufs[n]):
            np.testing.assert_array_equal(a, b)
    assert state.step_count == len(schedule)


def test_a_none_gradient_still_checks_its_param(backend):
    state = lrcore.SGD(lr=0.1)
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] must be writeable"):
        lrcore.step([np.ones(2), read_only], [np.ones(2), None], state)


def test_one_state_from_two_threads_is_serialized_not_torn(backend, rng):
    """200 steps from two threads on one state == 200 steps in one thread."""
    p = rng.standard_normal(BIG).astype(np.float32)
    g = rng.standard_normal(BIG).astype(np.float32)
    sequential, shared = p.copy(), p.copy()
    one = lrcore.Adam(lr=1e-3)
    for _ in range(200):
        lrcore.step(sequential, g, one)
    state = lrcore.Adam(lr=1e-3)
    barrier = threading.Barrier(2)
    errors = []

    def worker():
        try:
            barrier.wait()
            for _ in range(100):
                lrcore.step(shared, g, state)
        except Exception as exc:       # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert state.step_count == 200 and state.array_steps == [200]
    np.testing.assert_array_equal(shared, sequential)


def test_different_states_in_parallel_threads_match_their_sequential_runs(backend, rng):
    starts = [rng.standard_normal(BIG).astype(np.float32) for _ in range(4)]
    grads = [rng.standard_normal(BIG).astype(np.float32) for _ in range(4)]
    makers = [lambda: lrcore.SGD(lr=0.01, momentum=0.9), lambda: lrcore.Adagrad(lr=0.01),
              lambda: lrcore.RMSprop(lr=0.001), lambda: lrcore.AdamW(lr=0.001)]
    expected = []
    for s, g, make in zip(starts, grads, makers):
        p, st = s.copy(), make()
        for _ in range(20):
            lrcore.step(p, g, st)
        expected.append(p)
    results = [s.copy() for s in starts]

    def worker(i):
        st = makers[i]()
        for _ in range(20):
            lrcore.step(results[i], grads[i], st)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(results, expected):
        np.testing.assert_array_equal(a, b)
