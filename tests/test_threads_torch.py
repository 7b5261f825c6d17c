"""lrcore's parallel steps beside torch: once lrcore.torch is imported they run on the OpenMP
runtime torch loaded (src/pool.h), with the same bits and the caller's floating-point
control, and a forked child goes back to lrcore's own pool."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lrcore  # noqa: E402
import lrcore.torch  # noqa: E402, F401 - shares torch's OpenMP runtime
from lrcore import _backend, reference  # noqa: E402

from conftest import run_python  # noqa: E402
from test_threads import FORK_CHILD_STEPS, restore_threads  # noqa: E402, F401
# collected here as well, to run on torch's runtime (the autouse fixture checks that they do)
from test_threads import (test_a_parallel_step_equals_the_reference,  # noqa: E402, F401
                          test_results_are_bit_identical_for_any_thread_count,
                          test_workers_compute_under_the_callers_flush_to_zero)

if not torch.backends.openmp.is_available():
    pytest.skip("this torch does not run on OpenMP", allow_module_level=True)


@pytest.fixture(autouse=True)
def on_torch_s_runtime(compiled):
    """Every test here runs its parallel calls on torch's OpenMP runtime."""
    assert _backend._kernels.openmp_shared()


SHARED_STEPS = """
import sys
import numpy as np
import lrcore
from lrcore import reference

kernels = lrcore._backend._kernels
shared_before = kernels.openmp_shared()
import lrcore.torch
lrcore.set_num_threads(2)
rng = np.random.default_rng(0)
p = rng.standard_normal(400_000).astype(np.float32)
g = rng.standard_normal(p.size).astype(np.float32)
want, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
state = lrcore.Adam(lr=1e-3)
for step in range(2):
    reference.adam(want, g, m, v, step=step, lr=1e-3)
    lrcore.step(p, g, state)
print(shared_before, kernels.openmp_shared(), kernels.pool_workers(), np.array_equal(p, want))
"""


def test_importing_lrcore_torch_moves_parallel_steps_onto_torch_s_openmp_threads():
    """Before `import lrcore.torch` the process's steps would use lrcore's pool; after it, a
    2-thread step of 13 chunks gives the reference's bits and starts none of its workers."""
    out = run_python("-c", SHARED_STEPS, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "0", "True"]


@pytest.mark.parametrize("how", ["fork", "multiprocessing"])
def test_a_forked_child_steps_on_lrcore_s_own_pool(how):
    """The parent's 2-thread step runs on torch's OpenMP threads; a forked child (where that
    runtime can hang) starts lrcore's own worker for its parallel step and gets the same bits."""
    out = run_python("-c", "import lrcore.torch\n" + FORK_CHILD_STEPS, how, timeout=60)
    assert out.returncode == 0, out.stderr


def test_sharing_can_be_turned_off_and_on(restore_threads, rng):
    """share_openmp_runtime(False) puts the steps back on lrcore's pool; the bits are the same."""
    kernels = _backend._kernels
    lrcore.set_num_threads(2)
    start = rng.standard_normal(300_000).astype(np.float32)
    g = rng.standard_normal(start.size).astype(np.float32)
    want = start.copy()
    reference.sgd(want, g, step=0, lr=0.1)
    try:
        assert kernels.share_openmp_runtime(False) is False and not kernels.openmp_shared()
        p = start.copy()
        lrcore.step(p, g, lrcore.SGD(lr=0.1))
        np.testing.assert_array_equal(p, want)
    finally:
        assert kernels.share_openmp_runtime(True) is True
    p = start.copy()
    lrcore.step(p, g, lrcore.SGD(lr=0.1))
    np.testing.assert_array_equal(p, want)
