"""One optimizer step, every optimizer, against the numpy reference, torch.optim (for-loop,
foreach, fused) and DeepSpeed's CPU optimizers, on the same float32 arrays.

    pytest benchmarks/test_bench_step.py --benchmark-only \\
        --benchmark-group-by=param:optimizer,param:workload,param:threads

Grouped this way, each table holds one (optimizer, workload, thread count) with every
implementation side by side. torch / DeepSpeed cases skip when those are not installed, and
where they have no such optimizer (torch has no fused RMSprop; DeepSpeed has Adam, AdamW and
Adagrad). `python -m lrcore bench` prints the ratio table of the same implementations.
"""
import math

import pytest

from lrcore import bench

WORKLOADS = ["1 x 1K", "1 x 64K", "1 x 1M", "1 x 32M", "1000 x 256", "ResNet-50 list"]
LARGE = {"1 x 32M", "ResNet-50 list"}            # the only ones threads change


@pytest.mark.parametrize("implementation", list(bench.IMPLEMENTATIONS))
@pytest.mark.parametrize("threads", [1, "all"])
@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("optimizer", bench.OPTIMIZERS)
def test_step(benchmark, optimizer, workload, threads, implementation):
    if threads == "all" and workload not in LARGE:
        pytest.skip("small workloads run on one thread")
    if not bench.available(implementation):
        pytest.skip(f"{implementation} is not installed")
    if implementation in ("numpy reference", "numpy naive", "torch for-loop") and workload in LARGE \
            and threads == "all":
        pytest.skip("single-threaded implementation")
    bench.set_threads(bench.all_threads() if threads == "all" else 1)
    step = bench.IMPLEMENTATIONS[implementation](optimizer, bench.WORKLOADS[workload])
    if step is None:
        pytest.skip(f"{implementation} has no {optimizer}")
    benchmark.extra_info["elements"] = sum(
        math.prod(s) for s in bench.WORKLOADS[workload])
    benchmark(step)


@pytest.mark.parametrize("threads", [1, "all"])
@pytest.mark.parametrize("case", list(bench.NONFINITE))
def test_nonfinite_check(benchmark, case, threads):
    """Adam on 32M elements: lrcore with and without nonfinite='skip', a skipped step (the
    finiteness pass alone), and torch fused Adam with and without an amp GradScaler."""
    if not bench.available(case):
        pytest.skip(f"{case} is not installed")
    bench.set_threads(bench.all_threads() if threads == "all" else 1)
    benchmark(bench.NONFINITE[case](bench.WORKLOADS["1 x 32M"]))


@pytest.fixture(params=["none", "1 busy"])
def competing(request):
    """Run the benchmark alone, or while another process keeps one core busy."""
    if request.param == "none":
        yield request.param
    else:
        with bench.busy_process():
            yield request.param


@pytest.mark.parametrize("threads", [1, "all"])
@pytest.mark.parametrize("workload", bench.CONTENTION_CASES)
def test_contended_step(benchmark, workload, threads, competing):
    """Adam at 1 thread and at the default thread count, idle and with a busy process
    competing for a core (group by param:workload,param:competing to compare):

        pytest benchmarks -k contended --benchmark-only \\
            --benchmark-group-by=param:workload,param:competing
    """
    bench.set_threads(bench.all_threads() if threads == "all" else 1)
    benchmark(bench.lrcore_step("adam", bench.WORKLOADS[workload]))
