"""Mixed precision (issue 12), Adam: the comparisons of `python -m lrcore bench`'s mixed
table under pytest-benchmark, at 1 thread and at all usable threads.

    pytest benchmarks/test_bench_mixed.py --benchmark-only \\
        --benchmark-group-by=param:group,param:workload,param:threads

Grouped this way, each table is one row of the bench's mixed table, every column side by side:
- bf16 grads: float32 params with bfloat16 grads (lrcore) vs lrcore's all-float32 step vs torch
  (bfloat16 grads cast into the float32 .grad, then fused Adam), 32M elements;
- bf16 params: bfloat16 params and grads, lrcore vs torch fused Adam and DeepSpeedCPUAdam on
  bfloat16 params (bfloat16 moments; DeepSpeed also with its default float32 moments), 1M, 32M;
- scale+clip+skip: grad_scale + max_grad_norm + nonfinite="skip" vs the plain lrcore step vs
  torch's GradScaler.unscale_ + clip_grad_norm_ + fused Adam, 32M;
- small bf16: the bf16 params comparison on 100 arrays of 1K.
lrcore's bfloat16 arrays are ml_dtypes.bfloat16 when ml_dtypes is installed, else uint16 tagged
lrcore._validate.BFLOAT16_BITS. torch / DeepSpeed cases skip when those are not installed.
"""
import math

import pytest

from lrcore import bench

CASES = [(group, workload, column)
         for group, (_, workloads, columns, _) in bench.MIXED_GROUPS.items()
         for workload in workloads for column in columns]


@pytest.mark.parametrize("threads", [1, "all"])
@pytest.mark.parametrize("group,workload,column", CASES)
def test_mixed_step(benchmark, group, workload, column, threads):
    make, implementation = bench.MIXED_COLUMNS[column]
    if not bench.available(implementation):
        pytest.skip(f"{implementation} is not installed")
    bench.set_threads(bench.all_threads() if threads == "all" else 1)
    step = make(bench.WORKLOADS[workload])
    if step is None:
        pytest.skip(f"{column} is not available with this {implementation}")
    benchmark.extra_info["elements"] = sum(math.prod(s) for s in bench.WORKLOADS[workload])
    benchmark(step)
