"""Threads, ISA dispatch and build information."""

import numpy as np
import pytest

import lrcore
from lrcore import reference

from conftest import run_python
from test_optimizers import OPTIMIZERS

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


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_non_positive_ints(restore_threads, n):
    before = lrcore.get_num_threads()
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got "):
        lrcore.set_num_threads(n)
    assert lrcore.get_num_threads() == before


def test_set_num_threads_round_trips(restore_threads):
    lrcore.set_num_threads(3)
    assert lrcore.get_num_threads() == 3 and lrcore.build_info()["num_threads"] == 3


def test_the_environment_sets_the_default_thread_count():
    out = run_python("-c", "import lrcore; print(lrcore.get_num_threads())", LRCORE_NUM_THREADS="3")
    assert out.returncode == 0 and out.stdout.strip() == "3"
    default = run_python("-c", "import lrcore, os; print(lrcore.get_num_threads(), len(os.sched_getaffinity(0)))")
    got, cores = default.stdout.split()
    assert got == cores


def test_a_bad_thread_count_in_the_environment_is_an_error():
    out = run_python("-c", "import lrcore", LRCORE_NUM_THREADS="many")
    assert out.returncode != 0
    assert "LRCORE_NUM_THREADS must be an int >= 1, got 'many'" in out.stderr


def test_build_info_describes_the_build(compiled):
    info = lrcore.build_info()
    assert info["version"] == lrcore.__version__ and info["backend"] == "cython"
    assert info["isa_dispatched"] in info["isa_compiled"] and "default" in info["isa_compiled"]
    assert isinstance(info["openmp"], int) and info["compiler"]
