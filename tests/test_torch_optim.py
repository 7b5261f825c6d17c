"""lrcore.torch: torch.optim.Optimizer subclasses on lrcore's kernels (optional: torch).

Against torch.optim itself: trajectories, state_dict interchange both ways, lr_scheduler,
and ZeroRedundancyOptimizer over two gloo processes on 127.0.0.1.
"""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lrcore

torch = pytest.importorskip("torch")
import lrcore.torch as lt  # noqa: E402

OPTIONS = {
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "RMSprop": dict(lr=0.01, centered=True, momentum=0.5),
    "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=0.01, weight_decay=0.1),
}


def model_and_data(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    model = model.to(dtype)
    x = torch.randn(32, 6, generator=gen, dtype=dtype)
    return model, x


def train(model, opt, x, steps, scheduler=None):
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if scheduler:
            scheduler.step()


def params_of(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def assert_close(a, b, rtol):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * float(np.abs(y).max()))


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_trains_like_torch_optim(backend, name, dtype, rtol):
    ref, x = model_and_data(dtype)
    mine, _ = model_and_data(dtype)
    train(ref, getattr(torch.optim, name)(ref.parameters(), **OPTIONS[name], foreach=False), x, 15)
    train(mine, getattr(lt, name)(mine.parameters(), **OPTIONS[name]), x, 15)
    assert_close(params_of(mine), params_of(ref), rtol)


def ten_steps(module, name):
    model, x = model_and_data()
    train(model, getattr(module, name)(model.parameters(), **OPTIONS[name]), x, 10)
    return params_of(model)


def five_then_five(first, second, name):
    """5 steps with `first`'s optimizer, its state_dict loaded into `second`'s, 5 more."""
    model, x = model_and_data()
    a = getattr(first, name)(model.parameters(), **OPTIONS[name])
    train(model, a, x, 5)
    b = getattr(second, name)(model.parameters(), **OPTIONS[name])
    b.load_state_dict(a.state_dict())
    train(model, b, x, 5)
    return params_of(model)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_state_dicts_interchange_with_torch_optim(backend, name):
    """torch 5 steps -> lrcore 5 more, and lrcore 5 -> torch 5 more, both == torch 10."""
    straight = ten_steps(torch.optim, name)
    assert_close(five_then_five(torch.optim, lt, name), straight, 1e-5)
    assert_close(five_then_five(lt, torch.optim, name), straight, 1e-5)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_resuming_from_its_own_state_dict_is_exact(backend, name):
    for got, want in zip(five_then_five(lt, lt, name), ten_steps(lt, name)):
        np.testing.assert_array_equal(got, want)


def test_param_groups_keep_their_own_hyperparameters_and_lr_scheduler_works(backend):
    ref, x = model_and_data()
    mine, _ = model_and_data()
    runs = []
    for module, model in ((torch.optim, ref), (lt, mine)):
        first, second = list(model)[0], list(model)[2]
        opt = module.SGD([{"params": first.parameters()},
                          {"params": second.parameters(), "lr": 0.01, "momentum": 0.5}],
                         lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        train(model, opt, x, 9, scheduler=sched)
        runs.append([g["lr"] for g in opt.param_groups])
    assert runs[0] == runs[1] == [0.1 * 0.125, 0.01 * 0.125]
    assert_close(params_of(mine), params_of(ref), 1e-5)


def test_an_lrcore_schedule_as_lr(backend):
    schedule = lrcore.schedules.ExponentialDecay(0.1, 1, 0.9)
    model, x = model_and_data()
    opt = lt.SGD(model.parameters(), lr=schedule)
    params = [p.detach().numpy().copy() for p in model.parameters()]
    for k in range(4):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        opt.step()
        for p, g in zip(params, grads):
            lrcore.reference.sgd(p, g, step=k, lr=schedule(k))
    for got, want in zip(params_of(model), params):
        np.testing.assert_array_equal(got, want)
    assert opt.param_groups[0]["lrcore_step_count"] == 4


def bad_params():
    transposed = torch.nn.Parameter(torch.randn(4, 3).t())
    half = torch.nn.Parameter(torch.randn(3).half())
    return [
        (transposed, ValueError, r"param_groups\[0\]\['params'\]\[0\] is not contiguous"),
        (half, TypeError, r"param_groups\[0\]\['params'\]\[0\] has dtype torch.float16"),
    ]


@pytest.mark.parametrize("param, exc, message", bad_params(), ids=["non-contiguous", "float16"])
def test_unsupported_tensors_raise_naming_the_parameter(param, exc, message):
    param.grad = torch.ones_like(param)
    before = param.detach().clone()
    opt = lt.Adam([param])
    with pytest.raises(exc, match=message):
        opt.step()
    assert torch.equal(param.detach(), before)


def test_invalid_hyperparameters_are_rejected_as_lrcore_does():
    with pytest.raises(ValueError, match=r"betas\[0\] must be a finite number >= 0 and < 1"):
        lt.Adam([torch.nn.Parameter(torch.ones(2))], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="does not support capturable"):
        lt.Adam([torch.nn.Parameter(torch.ones(2))], capturable=True)


ZERO_WORKER = textwrap.dedent("""
    import sys, numpy as np, torch, torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    import lrcore.torch as lt
    sys.path.insert(0, sys.argv[4])
    from test_torch_optim import model_and_data, train, params_of
    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, x = model_and_data()
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=lt.Adam, lr=0.01,
                                  amsgrad=True)
    train(model, opt, x, 6)
    owned = sum(len(g["params"]) for g in opt.optim.param_groups)
    if rank == 0:
        np.savez(out, *params_of(model), owned=owned)
    dist.barrier()
    dist.destroy_process_group()
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero_redundancy_optimizer_with_two_gloo_processes(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    out = tmp_path / "rank0.npz"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    workers = [subprocess.Popen([sys.executable, "-c", ZERO_WORKER, str(rank), "2", str(out),
                                 tests_dir], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for w in workers:
        try:
            _, err = w.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
        assert w.returncode == 0, err
    single, x = model_and_data()
    train(single, lt.Adam(single.parameters(), lr=0.01, amsgrad=True), x, 6)
    with np.load(out) as data:
        sharded = [data[f"arr_{i}"] for i in range(len(params_of(single)))]
        assert 0 < int(data["owned"]) < len(sharded)         # rank 0 held part of the state
    for got, want in zip(sharded, params_of(single)):
        np.testing.assert_array_equal(got, want)


def test_the_readme_torch_example_runs_and_prints_what_it_says(capsys):
    import pathlib
    import re
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("not run from a checkout")
    code = re.search(r"```python torch\n(.*?)```", readme.read_text(), flags=re.S).group(1)
    exec(compile(code, "README torch example", "exec"), {})
    assert capsys.readouterr().out.strip() == str(list(range(8)))
