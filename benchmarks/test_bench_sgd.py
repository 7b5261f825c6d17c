"""SGD step speed: compiled kernels vs the numpy reference, side by side in one run.

    pytest benchmarks --benchmark-only --benchmark-group-by=param:case

Each case steps the same float32 arrays with lrcore.SGD(momentum=0.9, weight_decay=1e-4)
once per round; group-by case puts the two backends of a case next to each other.
"""
import numpy as np
import pytest

import lrcore
from lrcore import _backend

CASES = {
    "1 x 1K": [1024],
    "1 x 64K": [65536],
    "1 x 1M": [2**20],
    "100 x 1K": [1024] * 100,
}


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("case", list(CASES))
def test_sgd_momentum_step(benchmark, case, backend):
    if backend == "cython" and _backend._kernels is None:
        pytest.skip("compiled kernels not built")
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for n in CASES[case]]
    grads = [rng.standard_normal(n).astype(np.float32) * 1e-3 for n in CASES[case]]
    state = lrcore.SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)
    previous = _backend.active
    lrcore.set_backend(backend)
    try:
        lrcore.step(params, grads, state)        # bind and allocate outside the timing
        benchmark.extra_info["elements"] = sum(CASES[case])
        benchmark(lrcore.step, params, grads, state)
    finally:
        _backend.active = previous
