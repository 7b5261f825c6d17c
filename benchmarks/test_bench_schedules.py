"""Cost of a built-in schedule inside the step, against a constant rate, side by side.

    pytest benchmarks/test_bench_schedules.py --benchmark-only --benchmark-group-by=param:size

Built-in schedules are evaluated in C inside the kernel call, so each should cost about what
a constant lr does; a Python callable (the documented slow path) is shown for comparison.
"""
import numpy as np
import pytest

import lrcore
from lrcore import _backend, schedules

LRS = {
    "constant": 0.01,
    "ExponentialDecay": schedules.ExponentialDecay(0.01, 100, 0.96, staircase=True),
    "PolynomialDecay-cycle": schedules.PolynomialDecay(0.01, 1000, power=2.0, cycle=True),
    "CosineDecayRestarts": schedules.CosineDecayRestarts(0.01, 100, t_mul=1.5),
    "NoisyLinearCosineDecay": schedules.NoisyLinearCosineDecay(0.01, 10_000, initial_variance=1e-4),
    "Warmup(CosineDecay)": schedules.Warmup(schedules.CosineDecay(0.01, 10_000), 500),
    "python-callable": lambda k: 0.01 * 0.96 ** (k // 100),
}


@pytest.mark.parametrize("size", [1024, 2**20])
@pytest.mark.parametrize("lr", list(LRS))
def test_sgd_step_with_schedule(benchmark, lr, size):
    if _backend._kernels is None:
        pytest.skip("compiled kernels not built")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(size).astype(np.float32)
    g = (rng.standard_normal(size) * 1e-3).astype(np.float32)
    state = lrcore.SGD(lr=LRS[lr], momentum=0.9)
    lrcore.step(p, g, state)
    benchmark(lrcore.step, p, g, state)
