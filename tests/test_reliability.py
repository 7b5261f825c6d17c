"""Faults and concurrency: non-finite gradients, frozen parameters (None grads), one state
stepped from several threads, several states in parallel."""
import threading

import numpy as np
import pytest

import lrcore
from lrcore import reference

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


# -- interrupts, snapshots and re-entry ------------------------------------------------------

INTERRUPTED_STEPS = """
import signal, sys, time
import numpy as np
import lrcore
from lrcore import reference

lrcore.set_backend(sys.argv[1])
kind = sys.argv[2]              # how params are passed: one array, a list, a tuple
rng = np.random.default_rng(1)
start = [rng.standard_normal(n).astype(np.float32) for n in (700, 3, 1200)]
g = [rng.standard_normal(p.size).astype(np.float32) for p in start]
STEPS = 6

# expected[k][i]: params[i] after k updates, from the reference alone
expected, p = [], [a.copy() for a in start]
m, v = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
for k in range(STEPS + 1):
    expected.append([a.copy() for a in p])
    for i in range(3):
        reference.adam(p[i], g[i], m[i], v[i], step=k, lr=1e-2)

def interrupt(signum, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
rng = np.random.default_rng(2)
interrupted = checked = 0
deadline = time.monotonic() + 20
while time.monotonic() < deadline and checked < 1500:
    params = [a.copy() for a in start]
    state = lrcore.Adam(lr=1e-2)
    for _ in range(STEPS):
        try:        # a one-shot timer: it fires at most once, inside this try
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 3e-4))
            if kind == "array":
                lrcore.step(params[0], g[0], state)
            else:
                lrcore.step(params if kind == "list" else tuple(params),
                            g if kind == "list" else tuple(g), state)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except KeyboardInterrupt:
            interrupted += 1
        checked += 1
        k, counts = state.step_count, state.array_steps
        # either the step happened completely (counts advanced) or not at all
        if k == 0:      # no step completed: the state is not bound yet
            assert counts == [] and state.buffers == {}, counts
            assert all(np.array_equal(a, b) for a, b in zip(params, start))
            continue
        assert counts == ([k] if kind == "array" else [k, k, k]), (k, counts)
        for i, a in enumerate(params[:len(counts)]):
            assert np.array_equal(a, expected[k][i]), (kind, k, i)
print(interrupted, checked)
"""


@pytest.mark.parametrize("kind", ["array", "list", "tuple"])
@pytest.mark.parametrize("name", ["cython", "numpy"])
def test_an_interrupted_step_happened_completely_or_not_at_all(compiled, name, kind):
    """KeyboardInterrupt (from a signal handler, like Ctrl-C) at random moments of first and
    later steps: afterwards params, buffers and every count agree with one another."""
    from conftest import run_python
    out = run_python("-c", INTERRUPTED_STEPS, name, kind, timeout=120)
    assert out.returncode == 0, out.stderr
    interrupted, checked = map(int, out.stdout.split())
    assert interrupted > 50 and checked > 300      # the interrupts really landed


def test_a_snapshot_is_of_one_state_while_another_thread_steps(backend):
    """Steps with a constant gradient keep every element of a buffer equal; a snapshot that
    mixed two steps would hold two values, or one that disagrees with its step_count."""
    g = np.full(BIG, 0.5, dtype=np.float32)
    p = np.zeros(BIG, dtype=np.float32)
    m, v, expected_m = np.zeros(1, np.float32), np.zeros(1, np.float32), [np.float32(0)]
    for k in range(400):
        reference.adam(np.zeros(1, np.float32), g[:1], m, v, step=k, lr=1e-3)
        expected_m.append(m[0])
    state = lrcore.Adam(lr=1e-3)
    lrcore.step(p, g, state)
    stop = threading.Event()

    def stepper():
        while not stop.is_set() and state.step_count < 400:
            lrcore.step(p, g, state)
    thread = threading.Thread(target=stepper)
    thread.start()
    try:
        for _ in range(100):
            sd = state.state_dict()
            exp_avg = sd["buffers"]["exp_avg"][0]
            assert exp_avg.min() == exp_avg.max() == expected_m[sd["step_count"]]
    finally:
        stop.set()
        thread.join()


def test_the_numpy_backend_is_all_or_nothing_when_numpy_raises(numpy_backend):
    """np.seterr(all="raise") makes the update of the second array raise (float32 overflow):
    the first array, the buffers and the counts are left as they were."""
    params = [np.ones(4, np.float32), np.full(4, 3e38, np.float32)]
    grads = [np.ones(4, np.float32), np.full(4, -3e38, np.float32)]
    state = lrcore.SGD(lr=1.0, momentum=0.9)
    lrcore.step([np.ones(4, np.float32), np.ones(4, np.float32)], [g * 0 for g in params], state)
    before = snapshot(params, state)
    with np.errstate(all="raise"), pytest.raises(FloatingPointError, match="overflow"):
        lrcore.step(params, grads, state)
    assert_same(params, state, before)


def test_the_numpy_backend_updates_a_memmap_in_place(numpy_backend, tmp_path):
    """numpy.memmap (an ndarray subclass with ndarray arithmetic) is stepped like an ndarray."""
    p = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(5,))
    p[:] = 1.0
    lrcore.step(p, np.ones(5, np.float32), lrcore.SGD(lr=0.5))
    p.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), np.full(5, 0.5, np.float32))


def at_counts(make, step_count, array_steps, skipped=0):
    """A state of `make()` bound to two float32 arrays of 3, with these counts."""
    state = make()
    lrcore.step([np.ones(3, np.float32)] * 1 + [np.ones(3, np.float32)],
                [np.ones(3, np.float32), np.ones(3, np.float32)], state)
    sd = state.state_dict()
    sd.update(step_count=step_count, array_steps=array_steps, skipped_steps=skipped)
    state.load_state_dict(sd)
    return state


LIMIT = 2**63 - 1


@pytest.mark.parametrize("structure", [list, tuple])
@pytest.mark.parametrize("counts, grads_present, message", [
    ((LIMIT, [5, 5]), (True, True), r"state.step_count is 9223372036854775807, the largest"),
    ((5, [5, LIMIT]), (True, True), r"state.array_steps\[1\] is 9223372036854775807, the largest"),
])
def test_a_step_past_the_largest_count_is_refused_before_writing(backend, structure, counts,
                                                                  grads_present, message):
    state = at_counts(lrcore.Adam, *counts)
    params = [np.ones(3, np.float32), np.ones(3, np.float32)]
    grads = [np.ones(3, np.float32) if keep else None for keep in grads_present]
    before = snapshot(params, state)
    with pytest.raises(ValueError, match=message):
        lrcore.step(structure(params), structure(grads), state)
    assert_same(params, state, before)


def test_an_array_at_the_largest_count_can_still_be_frozen(backend):
    state = at_counts(lrcore.Adam, 5, [5, LIMIT])
    lrcore.step([np.ones(3, np.float32), np.ones(3, np.float32)], [np.ones(3, np.float32), None],
                state)
    assert state.array_steps == [6, LIMIT] and state.step_count == 6


def test_the_last_countable_step_is_taken(backend):
    state = at_counts(lrcore.SGD, LIMIT - 1, [LIMIT - 1, LIMIT - 1])
    lrcore.step([np.ones(3, np.float32)] * 1 + [np.ones(3, np.float32)],
                [np.ones(3, np.float32), np.ones(3, np.float32)], state)
    assert state.step_count == LIMIT and state.array_steps == [LIMIT, LIMIT]


def test_a_skip_past_the_largest_skip_count_is_refused(backend):
    state = at_counts(lambda: lrcore.SGD(nonfinite="skip"), 5, [5, 5], skipped=LIMIT)
    params = [np.ones(3, np.float32), np.ones(3, np.float32)]
    before = snapshot(params, state)
    with pytest.raises(ValueError, match=r"state.skipped_steps is 9223372036854775807"):
        lrcore.step(params, [np.ones(3, np.float32), np.full(3, np.nan, np.float32)], state)
    assert_same(params, state, before)


REENTRANT_LR = """
import sys
import numpy as np
import lrcore

lrcore.set_backend(sys.argv[1])
p, g = np.ones(3), np.ones(3)
state = None

def lr(step):
    if sys.argv[2] == "step":
        lrcore.step(p, g, state)            # the state's own step, from inside its rate
    elif sys.argv[2] == "state_dict":
        state.state_dict()
    else:
        state.load_state_dict(lrcore.SGD(lr=0.1).state_dict())
    return 0.1

for first in (True, False):
    state = lrcore.SGD(lr=lr if first else 0.1)
    if not first:
        lrcore.step(p, g, state)
        state.lr = lr
    before = p.copy(), state.step_count
    try:
        lrcore.step(p, g, state)
    except RuntimeError as exc:
        assert "already in use by this thread" in str(exc), exc
    else:
        sys.exit("no RuntimeError")
    assert np.array_equal(p, before[0]) and state.step_count == before[1]
    assert (state.state_dict()["arrays"] == []) == first     # a failed first step binds nothing
print("ok")
"""


@pytest.mark.parametrize("what", ["step", "state_dict", "load_state_dict"])
@pytest.mark.parametrize("name", ["cython", "numpy"])
def test_an_lr_callable_using_its_own_state_raises_instead_of_deadlocking(compiled, name, what):
    from conftest import run_python
    out = run_python("-c", REENTRANT_LR, name, what, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
