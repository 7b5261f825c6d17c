"""A full torch training iteration (zero_grad, forward, loss, backward, optimizer.step) with
lrcore.torch.Adam and with torch.optim.Adam(fused=True), on smaller models than
benchmarks/torch_training.py's (an MLP 256-1024-1024-1024-10 of 2.4 M params, batch 32; a
2-layer TransformerEncoder, d_model 128, of 0.4 M params, batch 8 of 32 tokens):

    pytest benchmarks/test_bench_training.py --benchmark-only

test_step_of_50_small_tensors times optimizer.step() alone on 50 tiny params: the cost of a
step beside its arithmetic.

Each (model, thread count) is one benchmark group, so both optimizers appear side by side.
torch.set_num_threads and lrcore.set_num_threads are both set to the thread count. Skipped when
torch is not installed. benchmarks/torch_training.py times the same loop on larger models with
interleaved rounds, and checks both optimizers compute the same updates first.
"""
import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
import lrcore  # noqa: E402

SIZES = {
    "mlp": dict(in_features=256, width=1024, hidden_layers=3, batch=32),
    "transformer": dict(d_model=128, heads=4, feedforward=512, layers=2, tokens=32, batch=8),
}
WARMUP = 3


def _training_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_training.py")
    spec = importlib.util.spec_from_file_location("lrcore_benchmarks_torch_training", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


training = _training_module()


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}-thread")
def threads(request):
    """torch's and lrcore's thread counts for the test, restored afterwards."""
    before = torch.get_num_threads(), lrcore.get_num_threads()
    torch.set_num_threads(request.param)
    lrcore.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before[0])
    lrcore.set_num_threads(before[1])


@pytest.mark.parametrize("optimizer", training.OPTIMIZERS)
@pytest.mark.parametrize("model", list(SIZES))
def test_training_iteration(benchmark, model, optimizer, threads):
    net, batches = training.make_model(model, SIZES[model], seed=0)
    opt = training.make_optimizer(optimizer, net.parameters())
    batch = iter(range(10**12))

    def one_iteration():
        return training.iteration(net, opt, batches[next(batch) % len(batches)])

    for _ in range(WARMUP):             # state allocation, the pools' threads
        one_iteration()
    benchmark.group = f"{model}, {threads} thread(s)"
    benchmark.extra_info["params"] = sum(p.numel() for p in net.parameters())
    benchmark(one_iteration)


@pytest.mark.parametrize("optimizer", training.OPTIMIZERS)
def test_step_of_50_small_tensors(benchmark, optimizer):
    """optimizer.step() alone on 50 params of 16 elements (the Transformer's tensor count),
    1 thread: what a step costs beside the arithmetic (lrcore.torch's checks of the views it
    keeps, torch's per-tensor dispatch)."""
    before = torch.get_num_threads(), lrcore.get_num_threads()
    torch.set_num_threads(1)
    lrcore.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(16, generator=generator)) for _ in range(50)]
        for p in params:
            p.grad = torch.randn(16, generator=generator)
        opt = training.make_optimizer(optimizer, params)
        for _ in range(WARMUP):
            opt.step()
        benchmark.group = "step of 50 tensors of 16 elements, 1 thread"
        benchmark(opt.step)
    finally:
        torch.set_num_threads(before[0])
        lrcore.set_num_threads(before[1])
