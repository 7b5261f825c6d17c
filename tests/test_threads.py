"""Threads, ISA dispatch and build information."""

import contextlib

import numpy as np
import pytest

import lrcore
from lrcore import reference

from conftest import run_python
from test_optimizers import OPTIMIZERS, assert_state_equals, reference_run

CHUNK = 32768       # src/kernels.h LRC_CHUNK: the parallel work item
# a list that crosses chunk boundaries, with empty and tiny arrays between large ones
SHAPES = [(3 * CHUNK + 5,), (1,), (0,), (70001,), (CHUNK,), (17, 1000), ()]


@pytest.fixture
def restore_threads():
    previous = lrcore.get_num_threads()
    yield
    lrcore.set_num_threads(previous)


@pytest.mark.parametrize("cls, ref, lr, options", [(c, r, lr, o[-1]) for c, r, lr, o in OPTIMIZERS],
                         ids=[c.__name__ for c, *_ in OPTIMIZERS])
def test_results_are_bit_identical_for_any_thread_count(compiled, restore_threads, rng, cls, ref,
                                                        lr, options):
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[np.asarray(rng.standard_normal(s), dtype=np.float32) for s in SHAPES] for _ in range(3)]
    results = []
    for threads in (1, 2, 3, 5):
        lrcore.set_num_threads(threads)
        params = [p.copy() for p in start]
        state = cls(lr=lr, **options)
        for g in grads:
            lrcore.step(params, g, state)
        results.append((params, state.buffers))
    first_params, first_buffers = results[0]
    for params, buffers in results[1:]:
        for a, b in zip(first_params, params):
            np.testing.assert_array_equal(a, b)
        for name in first_buffers:
            for a, b in zip(first_buffers[name], buffers[name]):
                np.testing.assert_array_equal(a, b)


def test_a_parallel_step_equals_the_reference(compiled, restore_threads, rng):
    lrcore.set_num_threads(2)
    p = rng.standard_normal(5 * CHUNK + 3).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    want, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    reference.adam(want, g, m, v, step=0, lr=0.01)
    lrcore.step(p, g, lrcore.Adam(lr=0.01))
    np.testing.assert_array_equal(p, want)


@contextlib.contextmanager
def subnormals_flushed():
    """Flush-to-zero and denormals-are-zero set in this thread, as torch.set_flush_denormal
    sets them, then cleared (the test is skipped where the CPU has no such control)."""
    kernels = lrcore._backend._kernels
    if not kernels._set_flush_to_zero(True):
        pytest.skip("this CPU's floating-point control cannot flush subnormals")
    try:
        yield
    finally:
        kernels._set_flush_to_zero(False)


FTZ_CASES = [(lrcore.SGD, reference.sgd, 0.05, dict(momentum=0.9)),
             (lrcore.Adagrad, reference.adagrad, 0.05, {}),
             (lrcore.RMSprop, reference.rmsprop, 0.01, dict(centered=True, momentum=0.9)),
             (lrcore.Adam, reference.adam, 0.01, dict(amsgrad=True))]


@pytest.mark.parametrize("cls, ref, lr, options", FTZ_CASES, ids=[c[0].__name__ for c in FTZ_CASES])
def test_workers_compute_under_the_callers_flush_to_zero(compiled, restore_threads, rng, cls, ref,
                                                         lr, options):
    """With subnormals flushed in the calling thread, a parallel step gives the bits the
    reference computes in that thread, and without, the gradual-underflow bits again: the
    pool's workers (started before, so not born with the caller's mode) take the caller's
    floating-point control for each job."""
    n = 24 * CHUNK + 7
    start = [rng.standard_normal(n).astype(np.float32)]
    grads = []
    for _ in range(3):
        g = rng.standard_normal(n) * 1e-19      # squares underflow: subnormal or flushed
        g[::5] = 1e-40 * np.sign(g[::5])          # subnormal gradients: read as 0 or not
        grads.append([g.astype(np.float32)])

    def run(threads):
        lrcore.set_num_threads(threads)
        params = [p.copy() for p in start]
        state = cls(lr=lr, **options)
        for g in grads:
            lrcore.step(params, g, state)
        return state, params

    gradual = [run(2)]
    with subnormals_flushed():
        flushed_params, flushed_buffers = reference_run(cls, ref, start, grads, [lr] * 3, options)
        flushed = [run(1), run(2)]
    gradual.append(run(2))
    # compared with subnormals read as themselves (under DAZ one equals 0)
    gradual_params, gradual_buffers = reference_run(cls, ref, start, grads, [lr] * 3, options)
    assert any(not np.array_equal(a, b) for name in flushed_buffers
               for a, b in zip(flushed_buffers[name], gradual_buffers[name]))
    for state, params in flushed:
        assert_state_equals(state, params, flushed_params, flushed_buffers)
    for state, params in gradual:
        assert_state_equals(state, params, gradual_params, gradual_buffers)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", 1025, 40000, 2**31 - 1, 10**400])
def test_set_num_threads_refuses_what_it_cannot_run(restore_threads, n):
    before = lrcore.get_num_threads()
    with pytest.raises(ValueError, match=r"n must be an int from 1 to 1024, got "):
        lrcore.set_num_threads(n)
    assert lrcore.get_num_threads() == before


def test_the_thread_cap_is_the_pools(compiled):
    from lrcore import _backend
    assert _backend.MAX_THREADS == _backend._kernels.MAX_THREADS


def test_set_num_threads_round_trips(restore_threads):
    lrcore.set_num_threads(3)
    assert lrcore.get_num_threads() == 3 and lrcore.build_info()["num_threads"] == 3


def test_the_largest_thread_count_steps_correctly_and_starts_no_more_threads_than_chunks(
        compiled, restore_threads, rng):
    """1024 threads on a 3-chunk call: the pool starts at most 2 workers (one per chunk the
    caller does not take) and the result is the reference's."""
    lrcore.set_num_threads(1024)
    p = rng.standard_normal(3 * CHUNK).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    want = p.copy()
    reference.sgd(want, g, step=0, lr=0.1)
    lrcore.step(p, g, lrcore.SGD(lr=0.1))
    np.testing.assert_array_equal(p, want)
    assert lrcore._backend._kernels.pool_workers() <= 1023


def test_the_environment_sets_the_default_thread_count():
    out = run_python("-c", "import lrcore; print(lrcore.get_num_threads())", LRCORE_NUM_THREADS="3")
    assert out.returncode == 0 and out.stdout.strip() == "3"
    default = run_python("-c", "import lrcore, os; print(lrcore.get_num_threads(), len(os.sched_getaffinity(0)))")
    got, cores = default.stdout.split()
    assert got == cores


@pytest.mark.parametrize("value", ["many", "0", "40000", "2147483647", "9" * 400])
def test_a_bad_thread_count_in_the_environment_is_an_error_not_a_dead_process(value):
    out = run_python("-c", "import lrcore", LRCORE_NUM_THREADS=value, timeout=60)
    assert out.returncode == 1          # a Python exception, not a signal or an OOM kill
    assert "ValueError: LRCORE_NUM_THREADS must be an int from 1 to 1024, got " in out.stderr


FORK_CHILD_STEPS = """
import os, sys, time
import numpy as np
import lrcore
from lrcore import reference

lrcore.set_num_threads(2)
rng = np.random.default_rng(0)
p = rng.standard_normal(200_000).astype(np.float32)
g = rng.standard_normal(p.size).astype(np.float32)
want, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
for step in range(2):
    reference.adam(want, g, m, v, step=step, lr=1e-3)
state = lrcore.Adam(lr=1e-3)
lrcore.step(p, g, state)               # the pool's workers are running now

def child():
    if lrcore._backend._kernels.pool_workers() != 0:
        return 4                        # the parent's workers do not exist here
    lrcore.step(p, g, state)            # parallel again: the pool is rebuilt in the child
    if lrcore._backend._kernels.pool_workers() != 1:
        return 5
    return 0 if np.array_equal(p, want) else 3

if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:
        os._exit(child())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            sys.exit(os.waitstatus_to_exitcode(status))
        time.sleep(0.05)
    os.kill(pid, 9)
    sys.exit("the forked child hung")
else:
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        results = [pool.apply_async(child) for _ in range(4)]
        sys.exit(max(r.get(timeout=20) for r in results))
"""


@pytest.mark.parametrize("how", ["fork", "multiprocessing"])
def test_a_forked_child_steps_in_parallel_after_the_parent_did(compiled, how):
    """After a 2-thread step the parent has pool workers; a forked child has none of them and
    must rebuild the pool (libgomp's OpenMP hung here)."""
    out = run_python("-c", FORK_CHILD_STEPS, how, timeout=60)
    assert out.returncode == 0, out.stderr


def test_build_info_describes_the_build(compiled):
    info = lrcore.build_info()
    assert info["version"] == lrcore.__version__ and info["backend"] == "cython"
    assert info["isa_dispatched"] in info["isa_compiled"] and "default" in info["isa_compiled"]
    assert info["threading"] == "pthreads" and "openmp" not in info and info["compiler"]
    assert info["vector_level"] in lrcore._backend._kernels.VECTOR_LEVELS
