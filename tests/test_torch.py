"""Trajectories against torch.optim itself (optional: skipped when torch is not installed).

Every option combination of test_optimizers runs 25 steps in lrcore and in torch.optim
(single-tensor path) from the same start on a noisy quadratic, each computing its gradient
from its own parameters; params and every buffer must agree to rounding. torch orders some
operations differently (lerp for the moment averages, fused multiply-adds in its vector
kernels), so agreement is to a few ulps per step, not bit for bit.
"""
import numpy as np
import pytest

import lrcore

from test_optimizers import CASE_IDS, CASES

torch = pytest.importorskip("torch")

STEPS = 25
# relative to the array's largest magnitude: cancellation makes some elements small
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def gradient(p, k, curvature, noise):
    """∇ of ½·Σ curvature·(p − 1)², plus a fixed noise term per step."""
    return curvature * (p - 1) + noise[k]


def assert_close(actual, desired, tolerance, what):
    scale = float(np.abs(desired).max())
    np.testing.assert_allclose(actual, desired, rtol=tolerance, atol=tolerance * scale,
                               err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch_optim(backend, rng, cls, ref, lr, options, dtype):
    n = 257
    start = rng.standard_normal(n).astype(dtype)
    curvature = np.geomspace(0.1, 10, n).astype(dtype)
    noise = (rng.standard_normal((STEPS, n)) * 0.1).astype(dtype)

    p = start.copy()
    state = cls(lr=lr, **options)
    tp = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = getattr(torch.optim, cls.__name__)([tp], lr=lr, foreach=False, **options)
    for k in range(STEPS):
        lrcore.step(p, gradient(p, k, curvature, noise), state)
        tp.grad = torch.from_numpy(gradient(tp.detach().numpy(), k, curvature, noise))
        topt.step()

    assert_close(p, tp.detach().numpy(), TOLERANCE[dtype], "params")
    torch_state = topt.state[tp]
    for name, arrays in state.buffers.items():
        assert_close(arrays[0], torch_state[name].numpy(), TOLERANCE[dtype], name)
    if "step" in torch_state:
        assert state.array_steps == [int(torch_state["step"])]
