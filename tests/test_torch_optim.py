"""lrcore.torch: torch.optim.Optimizer subclasses on lrcore's kernels (optional: torch).

Against torch.optim itself: trajectories, state_dict interchange both ways, lr_scheduler,
and ZeroRedundancyOptimizer over two gloo processes on 127.0.0.1.
"""
import os
import re
import socket
import subprocess
import sys
import textwrap
import warnings

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


def as_bytes(t):
    """t's values as bytes (a lazy conj / negated view resolved: one value per memory state)."""
    return t.detach().resolve_conj().resolve_neg().contiguous().view(torch.uint8)


def bad_params():
    """(param, its grad, error, message): the tensors a step refuses, naming the tensor."""
    gappy = torch.nn.Parameter(torch.randn(4, 6)[:, ::2])
    permuted = torch.nn.Parameter(torch.randn(4, 3).t())
    with warnings.catch_warnings():     # torch: "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        chalf = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64).to(torch.complex32))
    fp8 = torch.nn.Parameter(torch.randn(3).to(torch.float8_e4m3fn), requires_grad=False)
    # lazy views: memory holding the conjugate / negation of the values
    conjugated = torch.randn(3, dtype=torch.complex64).conj()
    plain = torch.nn.Parameter(torch.randn(3))
    return [
        (gappy, torch.ones_like(gappy), ValueError,
         r"param_groups\[0\]\['params'\]\[0\] is not dense"),
        (permuted, torch.ones(3, 4), ValueError,        # contiguous grad, transposed param
         r"param_groups\[0\]\['params'\]\[0\]\.grad has strides \(4, 1\) where the param "
         r"has \(1, 3\)"),
        (chalf, torch.ones_like(chalf), TypeError,
         r"param_groups\[0\]\['params'\]\[0\] has dtype torch.complex32: complex "
         r"half-precision params are not supported"),
        (fp8, torch.ones_like(fp8), TypeError,
         r"param_groups\[0\]\['params'\]\[0\] has dtype torch.float8_e4m3fn; lrcore.torch "
         r"takes float16, bfloat16, float32, float64, complex64 or complex128"),
        (conjugated, torch.ones_like(conjugated), ValueError,
         r"param_groups\[0\]\['params'\]\[0\] is a lazy view with its conjugate bit set: "
         r"its memory does not hold its values.*resolve_conj\(\)"),
        (plain, torch._neg_view(torch.ones(3)), ValueError,
         r"param_groups\[0\]\['params'\]\[0\]\.grad is a lazy view with its negative bit "
         r"set.*resolve_neg\(\)"),
    ]


@pytest.mark.parametrize("param, grad, exc, message", bad_params(),
                         ids=["not-dense", "grad-strides", "complex32", "float8", "conj-param",
                              "negated-grad"])
def test_unsupported_tensors_raise_naming_the_parameter(param, grad, exc, message):
    param.grad = grad
    before = param.detach().clone()
    opt = lt.Adam([param])
    with pytest.raises(exc, match=message):
        opt.step()
    # compared as bytes: torch.equal has no complex32 / float8 kernel
    assert torch.equal(as_bytes(param), as_bytes(before))
    assert len(opt.state) == 0


def test_invalid_hyperparameters_are_rejected_as_lrcore_does():
    with pytest.raises(ValueError, match=r"betas\[0\] must be a finite number >= 0 and < 1"):
        lt.Adam([torch.nn.Parameter(torch.ones(2))], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="does not support capturable"):
        lt.Adam([torch.nn.Parameter(torch.ones(2))], capturable=True)


ZERO_WORKER = textwrap.dedent("""
    import os, sys, numpy as np, torch, torch.distributed as dist
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
    # skip the interpreter's teardown: torch 2.13's gloo threads race it now and then
    # (std::terminate, "terminate called without an active exception"), after the work
    os._exit(0)
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


# -- torch.optim 2.x behaviour (issue 11) ------------------------------------------------

def test_adam_with_decoupled_weight_decay_is_adamw(backend):
    runs = []
    for make in (lambda ps: lt.Adam(ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
                 lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, foreach=False)):
        model, x = model_and_data(torch.float64)
        train(model, make(model.parameters()), x, 10)
        runs.append(params_of(model))
    assert_close(runs[0], runs[1], 1e-12)


@pytest.mark.parametrize("target", ["Adam", "AdamW"])
def test_an_adamw_state_dict_makes_adam_an_adamw_as_in_torch(target):
    """torch: loading AdamW's state_dict into Adam sets decoupled_weight_decay; the reverse
    keeps AdamW decoupled. lrcore.torch follows torch's loaded optimizer step for step."""
    source = "AdamW" if target == "Adam" else "Adam"
    runs, flags = [], []
    for module in (torch.optim, lt):
        model, x = model_and_data(torch.float64)
        first = getattr(torch.optim, source)(model.parameters(), lr=0.01, weight_decay=0.1,
                                             foreach=False)
        train(model, first, x, 3)
        second = getattr(module, target)(model.parameters(), lr=0.01, weight_decay=0.1)
        second.load_state_dict(first.state_dict())
        flags.append(second.param_groups[0]["decoupled_weight_decay"])
        train(model, second, x, 4)
        runs.append(params_of(model))
    assert flags == [True, True]
    assert_close(runs[1], runs[0], 1e-12)


# the param_group keys torch.optim 2.13 fills in for a state_dict saved by an older torch
NEWER_KEYS = ("maximize", "foreach", "differentiable", "fused", "capturable",
              "decoupled_weight_decay", "amsgrad", "nesterov")


@pytest.mark.parametrize("name", list(OPTIONS))
def test_an_older_torch_state_dict_gets_torch_defaults(name):
    """param_groups lacking newer keys and a plain-number `step`, as an older torch saved
    them: loaded as torch loads them, training goes on as in torch."""
    options = {k: v for k, v in OPTIONS[name].items() if k not in NEWER_KEYS}
    runs, groups = [], []
    for module in (torch.optim, lt):
        model, x = model_and_data(torch.float64)
        first = getattr(torch.optim, name)(model.parameters(), **options, foreach=False)
        train(model, first, x, 3)
        old = first.state_dict()
        for group in old["param_groups"]:
            for key in NEWER_KEYS:
                group.pop(key, None)
        for st in old["state"].values():
            if "step" in st:
                st["step"] = int(st["step"])
        second = getattr(module, name)(model.parameters(), **options)
        second.load_state_dict(old)
        groups.append({k: v for k, v in second.param_groups[0].items() if k != "params"})
        train(model, second, x, 4)
        runs.append(params_of(model))
        if name != "SGD":
            assert all(torch.is_tensor(st["step"]) for st in second.state.values())
    assert groups[1] == {k: v for k, v in groups[0].items() if k in groups[1]}
    assert_close(runs[1], runs[0], 1e-12)


TENSOR_HYPERPARAMETERS = {
    "SGD": dict(momentum=0.9),
    "Adagrad": dict(lr_decay=0.01),
    "RMSprop": dict(centered=True),
    "Adam": dict(betas=(torch.tensor(0.8, dtype=torch.float64),
                        torch.tensor([0.99], dtype=torch.float64))),
    "AdamW": dict(betas=(torch.tensor(0.8, dtype=torch.float64),
                         torch.tensor(0.99, dtype=torch.float64))),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_tensor_lr_is_read_at_every_step_as_torch_writes_it(backend, name):
    """lr (and Adam's betas) as 1-element tensors; StepLR writes into the lr tensor."""
    runs, lrs = [], []
    for module, extra in ((torch.optim, dict(foreach=False)), (lt, {})):
        model, x = model_and_data(torch.float64)
        lr = torch.tensor(0.05, dtype=torch.float64)
        opt = getattr(module, name)(model.parameters(), lr=lr, **TENSOR_HYPERPARAMETERS[name],
                                    **extra)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        train(model, opt, x, 7, scheduler=sched)
        assert opt.param_groups[0]["lr"] is lr
        lrs.append(float(lr))
        runs.append(params_of(model))
    assert lrs == [0.05 * 0.5 ** 3] * 2
    assert_close(runs[1], runs[0], 1e-12)


# torch.optim's own error inputs (torch/testing/_internal/common_optimizers.py, CPU) and the
# messages of its constructors: (optimizer, kwargs, torch's regex, lrcore's detail or None)
TORCH_ERRORS = [
    (name, dict(lr=torch.tensor([0.001, 0.001])), "Tensor lr must be 1-element", None)
    for name in OPTIONS
] + [
    (name, dict(lr=-0.1), "Invalid learning rate: -0.1", "lr must be a finite number >= 0")
    for name in OPTIONS
] + [
    ("SGD", dict(lr=1e-2, momentum=-0.5), "Invalid momentum value: -0.5", "momentum must be"),
    ("SGD", dict(weight_decay=-0.5), "Invalid weight_decay value: -0.5", "weight_decay must"),
    ("SGD", dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening",
     r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.0"),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening", "dampening=0.1"),
    ("Adagrad", dict(lr=1e-2, lr_decay=-0.5), "Invalid lr_decay value: -0.5", "lr_decay must"),
    ("Adagrad", dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1",
     "initial_accumulator_value must"),
    ("Adagrad", dict(eps=-1e-3), "Invalid epsilon value: -0.001", "eps must"),
    ("RMSprop", dict(lr=1e-2, momentum=-1.0), "Invalid momentum value: -1.0", "momentum must"),
    ("RMSprop", dict(alpha=-0.5), "Invalid alpha value: -0.5", "alpha must"),
    ("Adam", dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0",
     r"betas\[0\] must be a finite number >= 0 and < 1"),
    ("AdamW", dict(lr=1e-2, betas=(0.0, 1.0)), "Invalid beta parameter at index 1: 1.0",
     r"betas\[1\] must"),
    ("Adam", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1", "weight_decay"),
    ("AdamW", dict(eps=-1.0), "Invalid epsilon value: -1.0", "eps must"),
    ("Adam", dict(lr=torch.tensor(0.001), foreach=True),
     "lr as a Tensor is not supported for capturable=False and foreach=True", None),
    ("Adam", dict(lr=1e-2, betas=(0.9, torch.tensor(0.99))),
     "betas must be either both floats or both Tensors", None),
    ("AdamW", dict(lr=1e-2, betas=(torch.tensor(0.9), 0.99)),
     "betas must be either both floats or both Tensors", None),
    ("Adam", dict(lr=1e-2, betas=(torch.tensor(0.9), torch.tensor(0.99)), foreach=True),
     r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True", None),
]


@pytest.mark.parametrize("name, kwargs, regex, detail", TORCH_ERRORS,
                         ids=[f"{e[0]}-{e[2][:40]}" for e in TORCH_ERRORS])
def test_invalid_arguments_raise_torch_s_error(name, kwargs, regex, detail):
    """The error torch.optim raises (checked against torch itself), with lrcore's detail
    naming the argument after torch's wording."""
    for module in (torch.optim, lt):
        with pytest.raises(ValueError, match=regex) as info:
            getattr(module, name)([torch.nn.Parameter(torch.ones(2))], **kwargs)
    if detail is not None:
        assert re.search(r"\(.*" + detail, str(info.value)), str(info.value)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_state_holds_what_torch_s_holds(momentum):
    states = []
    for module in (torch.optim, lt):
        model, x = model_and_data()
        opt = module.SGD(model.parameters(), lr=0.1, momentum=momentum)
        train(model, opt, x, 2)
        states.append(opt.state_dict()["state"])
    assert states[1].keys() == states[0].keys()
    assert all(states[1][k].keys() == states[0][k].keys() for k in states[0])
    assert (states[0] == {}) == (momentum == 0)


def test_a_state_buffer_laid_out_unlike_its_param_is_refused_naming_it():
    """A loaded state whose buffer has other strides than its (permuted) param."""
    p = torch.nn.Parameter(torch.randn(3, 4).t())
    p.grad = torch.ones(3, 4).t()
    opt = lt.Adam([p])
    opt.state[p].update(step=torch.tensor(1.0), exp_avg=torch.zeros(4, 3),
                        exp_avg_sq=torch.zeros(3, 4).t())
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\]'s state 'exp_avg' "
                                         r"has strides \(3, 1\) where the param has \(1, 4\)"):
        opt.step()
    assert torch.equal(p.detach(), before) and int(opt.state[p]["step"]) == 1


# -- a failed step changes nothing -------------------------------------------------------

def snapshot(opt):
    """The optimizer's state_dict with every tensor copied."""
    def copy(v):
        if torch.is_tensor(v):
            return v.clone()
        if isinstance(v, dict):
            return {k: copy(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(copy(x) for x in v)
        return v
    return copy(opt.state_dict())


def assert_same(a, b):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def overlapping_views():
    """Two leaf params sharing memory: base[0:4] and base[2:6]."""
    base = torch.randn(6, generator=torch.Generator().manual_seed(3))
    a, b = base[0:4].requires_grad_(), base[2:6].requires_grad_()
    a.grad, b.grad = torch.full((4,), 0.5), torch.full((4,), -0.25)
    return base, a, b


@pytest.mark.parametrize("name", list(OPTIONS))
def test_tied_params_raise_naming_them_and_change_nothing(backend, name):
    p = torch.nn.Parameter(torch.randn(5))
    p.grad = torch.ones(5)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = getattr(lt, name)([p, p], **OPTIONS[name])
    before, values = snapshot(opt), p.detach().clone()
    # the param or its state buffer (whichever lies first in memory) is named
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\](\S* state '\w+')? "
                                         r"shares memory with param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    assert torch.equal(p.detach(), values)
    assert len(opt.state) == 0
    assert_same(opt.state_dict(), before)


def test_after_a_failed_step_sgd_s_next_step_is_still_its_first_momentum_step(backend):
    """SGD with dampening: the first momentum step copies the gradient (no dampening); a
    failed step must not have created the buffer that would make the next one dampen."""
    base, a, b = overlapping_views()
    opt = lt.SGD([a, b], lr=0.1, momentum=0.9, dampening=0.5)
    with pytest.raises(ValueError, match=r"\['params'\]\[1\] shares memory with"):
        opt.step()
    assert len(opt.state) == 0
    b.grad = None                   # now only `a` is updated
    ref = torch.nn.Parameter(a.detach().clone())
    ref.grad = a.grad.clone()
    ref_opt = torch.optim.SGD([ref], lr=0.1, momentum=0.9, dampening=0.5, foreach=False)
    for _ in range(2):
        opt.step()
        ref_opt.step()
        assert torch.equal(a.detach(), ref.detach())
        assert torch.equal(opt.state[a]["momentum_buffer"], ref_opt.state[ref]["momentum_buffer"])


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_step_failing_in_its_second_group_leaves_the_first_untouched(backend, name):
    x = torch.nn.Parameter(torch.randn(3))
    x.grad = torch.ones(3)
    base, a, b = overlapping_views()
    opt = getattr(lt, name)([{"params": [x]}, {"params": [a, b]}], **OPTIONS[name])
    before, x_before, base_before = snapshot(opt), x.detach().clone(), base.clone()
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\] shares memory"):
        opt.step()
    assert torch.equal(x.detach(), x_before) and torch.equal(base, base_before)
    assert len(opt.state) == 0
    assert_same(opt.state_dict(), before)
    b.grad = None                   # the step then goes through, each param's first
    opt.step()
    assert not torch.equal(x.detach(), x_before)
    if name != "SGD":
        assert int(opt.state[x]["step"]) == int(opt.state[a]["step"]) == 1


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_channels_last_model_trains_in_place_as_with_torch_optim(backend, name):
    runs, layouts = [], []
    for module, extra in ((torch.optim, dict(foreach=False)), (lt, {})):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(),
                                    torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
        model = model.to(torch.float64).to(memory_format=torch.channels_last)
        x = torch.randn(8, 3, 6, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
        weight = model[0].weight
        assert not weight.is_contiguous()
        address = weight.data_ptr()
        opt = getattr(module, name)(model.parameters(), **OPTIONS[name], **extra)
        train(model, opt, x, 6)
        assert weight.data_ptr() == address
        assert weight.is_contiguous(memory_format=torch.channels_last)
        layouts.append({k: v.stride() for k, v in opt.state[weight].items() if v.dim()})
        runs.append(params_of(model))
    assert layouts[1] == layouts[0] and all(s == weight.stride() for s in layouts[1].values())
    assert_close(runs[1], runs[0], 1e-12)


# -- the views a step keeps for the next (lrcore.torch's _GroupViews) --------------------

def replace_param_memory(model, opt):
    model[0].weight.data = model[0].weight.data * 0.5


def replace_state_tensor(model, opt):
    st = opt.state[model[0].weight]
    st["exp_avg"] = st["exp_avg"] * 2


def swap_state_memory(model, opt):      # the same tensor object, on other memory
    st = opt.state[model[0].weight]
    st["exp_avg_sq"].data = st["exp_avg_sq"] * 3


def set_step_in_place(model, opt):
    opt.state[model[0].bias]["step"].fill_(10.0)


def replace_step(model, opt):
    opt.state[model[0].bias]["step"] = torch.tensor(20.0)


def replace_step_by_one_requiring_grad(model, opt):     # torch.optim adds 1 under no_grad
    opt.state[model[0].bias]["step"] = torch.tensor(20.0, requires_grad=True)


def drop_state(model, opt):
    del opt.state[model[2].weight]


def freeze_param(model, opt):           # no grad at the next steps
    model[2].bias.requires_grad_(False)


def change_hyperparameters(model, opt):
    opt.param_groups[0].update(lr=0.03, betas=(0.8, 0.99), weight_decay=0.1)


def reload_state_dict(model, opt):
    opt.load_state_dict(opt.state_dict())


def change_list_betas_in_place(model, opt):     # the same list object, other values
    opt.param_groups[0]["betas"] = betas = [0.9, 0.999]
    opt.step()
    betas[0] = 0.5


def refill_tensor_betas(model, opt):            # the same tensors, other values
    opt.param_groups[0]["betas"] = betas = (torch.tensor(0.9, dtype=torch.float64),
                                            torch.tensor(0.999, dtype=torch.float64))
    opt.step()
    betas[0].fill_(0.5)


CHANGES = [replace_param_memory, replace_state_tensor, swap_state_memory, set_step_in_place,
           replace_step, replace_step_by_one_requiring_grad, drop_state, freeze_param,
           change_hyperparameters, reload_state_dict,
           change_list_betas_in_place, refill_tensor_betas]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
def test_what_changes_between_steps_is_seen_as_torch_optim_sees_it(backend, change):
    """A step reuses the last one's views of params and state only while they are the same
    tensors on the same memory: each change here makes the next steps follow torch.optim."""
    runs = []
    for module, extra in ((torch.optim, dict(foreach=False)), (lt, {})):
        model, x = model_and_data(torch.float64)
        opt = module.Adam(model.parameters(), lr=0.01, amsgrad=True, **extra)
        train(model, opt, x, 2)
        change(model, opt)
        train(model, opt, x, 2)
        runs.append((params_of(model),
                     [{k: v.detach().clone() for k, v in opt.state[p].items()}
                      for p in model.parameters()]))
    (want, want_state), (got, got_state) = runs
    assert_close(got, want, 1e-12)
    for got_st, want_st in zip(got_state, want_state):
        assert got_st.keys() == want_st.keys()
        for key in want_st:
            np.testing.assert_allclose(got_st[key].numpy(), want_st[key].numpy(), rtol=1e-12,
                                       atol=1e-14)


@pytest.mark.parametrize("enabled", [True, False], ids=["grad enabled", "no_grad"])
def test_a_step_records_no_graph_and_leaves_the_grad_mode(backend, enabled):
    """As torch.optim's step (run under no_grad), lrcore.torch's records nothing for autograd
    in either grad mode, at the first step (which makes the state) and at the next (which
    reuse the views), and leaves the grad mode as it found it."""
    model, x = model_and_data()
    opt = lt.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        with torch.set_grad_enabled(enabled):
            opt.step()
            assert torch.is_grad_enabled() is enabled
    for p in model.parameters():
        assert p.is_leaf and p.grad_fn is None
        for key, t in opt.state[p].items():
            assert not t.requires_grad and t.grad_fn is None, key


def negative_eps(opt):
    opt.param_groups[0]["eps"] = -1.0


def list_beta_past_one(opt):
    opt.param_groups[0]["betas"] = betas = [0.9, 0.999]
    opt.step()
    betas[0] = 1.5


def tensor_beta_of_one(opt):
    opt.param_groups[0]["betas"] = betas = (torch.tensor(0.9), torch.tensor(0.999))
    opt.step()
    betas[1].fill_(1.0)


INVALIDATED = [(negative_eps, r"Invalid epsilon value: -1.0"),
               (list_beta_past_one, r"Invalid beta parameter at index 0: 1.5"),
               (tensor_beta_of_one, r"Invalid beta parameter at index 1")]


@pytest.mark.parametrize("change, message", INVALIDATED, ids=[c.__name__ for c, _ in INVALIDATED])
def test_a_hyperparameter_made_invalid_after_steps_is_refused(backend, change, message):
    """The hyperparameters a step validated are validated again when the group holds other
    values, whether new objects or the same list or tensors changed in place."""
    model, x = model_and_data(torch.float64)
    opt = lt.Adam(model.parameters(), lr=0.01)
    train(model, opt, x, 2)
    change(opt)
    before, params = snapshot(opt), params_of(model)
    with pytest.raises(ValueError, match=message):
        opt.step()
    assert_same(opt.state_dict(), before)
    assert_close(params_of(model), params, 0.0)


def square_param():
    p = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(5)))
    p.grad = torch.full((4, 4), 0.5, dtype=torch.float64)
    return p


def transpose_in_place(p):       # the same address, dtype and shape; other strides
    p.data = p.data.t()


def retype_in_place(p):          # the same address and shape; another dtype
    p.data = p.data.view(torch.complex64)


def transposed_grad(p):
    p.grad = torch.full((4, 4), 0.5, dtype=torch.float64).t()


def grad_aliasing_param(p):
    p.grad = p.detach()


def negate_lazily_in_place(p):   # the same memory, read by torch as its negation
    p.data = torch._neg_view(p.data)


def negated_grad(p):
    p.grad = torch._neg_view(torch.full((4, 4), 0.5, dtype=torch.float64))


HOSTILE = [
    (transpose_in_place, ValueError,
     r"param_groups\[1\]\['params'\]\[0\]\.grad has strides \(4, 1\) where the param has "
     r"\(1, 4\)"),
    (retype_in_place, TypeError,
     r"param_groups\[1\]\['params'\]\[0\]\.grad has dtype torch.float64, the param "
     r"torch.complex64"),
    (transposed_grad, ValueError,
     r"param_groups\[1\]\['params'\]\[0\]\.grad has strides \(1, 4\) where the param has "
     r"\(4, 1\)"),
    (grad_aliasing_param, ValueError,
     r"param_groups\[1\]\['params'\]\[0\]\.grad shares memory with "
     r"param_groups\[1\]\['params'\]\[0\]"),
    (negate_lazily_in_place, ValueError,
     r"param_groups\[1\]\['params'\]\[0\] is a lazy view with its negative bit set"),
    (negated_grad, ValueError,
     r"param_groups\[1\]\['params'\]\[0\]\.grad is a lazy view with its negative bit set"),
]


@pytest.mark.parametrize("change, exc, message", HOSTILE, ids=[h[0].__name__ for h in HOSTILE])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_step_after_others_refuses_what_a_first_step_refuses(backend, name, change, exc,
                                                                message):
    """After steps that went through, a param or grad changed in place of the checked ones
    is refused as at a first step; the group before it (updated first) is left untouched."""
    x = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    x.grad = torch.ones(3, dtype=torch.float64)
    p = square_param()
    opt = getattr(lt, name)([{"params": [x]}, {"params": [p]}], **OPTIONS[name])
    opt.step()
    opt.step()
    change(p)
    before, x_before, p_before = snapshot(opt), x.detach().clone(), p.detach().clone()
    with pytest.raises(exc, match=message):
        opt.step()
    assert torch.equal(x.detach(), x_before)
    # as bytes: float64 memory seen as complex64 holds NaNs
    assert torch.equal(as_bytes(p), as_bytes(p_before))
    assert_same(opt.state_dict(), before)
