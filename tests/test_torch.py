"""Trajectories against torch.optim itself (optional: skipped when torch is not installed).

Every option combination of test_optimizers runs 25 steps in lrcore and in torch.optim
(single-tensor path) from the same start on a noisy quadratic, each computing its gradient
from its own parameters; params and every buffer must agree to rounding. The same runs
through lrcore.torch cover complex params and dense params in a permuted dimension order. torch orders some
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


def torch_pair(cls, lr, options, start):
    """(lrcore.torch param and optimizer, torch.optim param and optimizer) from one start."""
    import lrcore.torch as lt
    mine, ref = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    name = cls.__name__
    return ((mine, getattr(lt, name)([mine], lr=lr, **options)),
            (ref, getattr(torch.optim, name)([ref], lr=lr, foreach=False, **options)))


def run_both(pair, curvature, noise):
    for k in range(STEPS):
        for p, opt in pair:
            p.grad = gradient(p.detach(), k, curvature, noise)
            opt.step()


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_complex_params_follow_torch_optim(cls, ref, lr, options, dtype):
    """torch.optim updates a complex param as its real view; lrcore.torch does the same."""
    gen = torch.Generator().manual_seed(7)
    n = 64
    start = torch.randn(n, generator=gen, dtype=dtype)
    curvature = torch.logspace(-1, 1, n, dtype=start.real.dtype)
    noise = torch.randn(STEPS, n, generator=gen, dtype=dtype) * 0.1
    pair = torch_pair(cls, lr, options, start)
    run_both(pair, curvature, noise)
    (mine, mine_opt), (ref_p, ref_opt) = pair
    tolerance = TOLERANCE[np.float32 if dtype == torch.complex64 else np.float64]
    assert mine.dtype == dtype
    assert_close(torch.view_as_real(mine.detach()).numpy(),
                 torch.view_as_real(ref_p.detach()).numpy(), tolerance, "params")
    assert mine_opt.state[mine].keys() == ref_opt.state[ref_p].keys()
    for name, buf in ref_opt.state[ref_p].items():
        got = mine_opt.state[mine][name]
        assert got.dtype == buf.dtype, name
        as_real = (lambda t: torch.view_as_real(t)) if buf.is_complex() else (lambda t: t)
        assert_close(as_real(got).numpy(), as_real(buf).numpy(), tolerance, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_dense_permuted_params_are_updated_in_place_as_torch_optim(cls, ref, lr, options, dtype):
    """A dense param in another dimension order (its grad laid out alike) is updated on its
    own memory, state buffers take its strides, and the numbers are torch.optim's."""
    gen = torch.Generator().manual_seed(11)
    shape, order = (4, 5, 6), (2, 0, 1)
    start = torch.randn(shape, generator=gen, dtype=dtype).permute(order)
    curvature = torch.logspace(-1, 1, start.numel(), dtype=dtype).reshape(shape).permute(order)
    noise = (torch.randn((STEPS,) + shape, generator=gen, dtype=dtype) * 0.1).permute(0, 3, 1, 2)
    pair = torch_pair(cls, lr, options, start)
    (mine, mine_opt), (ref_p, ref_opt) = pair
    assert not mine.is_contiguous()         # clone() kept the permuted layout
    address, strides = mine.data_ptr(), mine.stride()
    run_both(pair, curvature, noise)
    assert (mine.data_ptr(), mine.stride()) == (address, strides)
    tolerance = TOLERANCE[np.float32 if dtype == torch.float32 else np.float64]
    assert_close(mine.detach().numpy(), ref_p.detach().numpy(), tolerance, "params")
    assert mine_opt.state[mine].keys() == ref_opt.state[ref_p].keys()
    for name, buf in ref_opt.state[ref_p].items():
        got = mine_opt.state[mine][name]
        if got.dim():
            assert got.stride() == strides, name
        assert_close(got.numpy(), buf.numpy(), tolerance, name)
