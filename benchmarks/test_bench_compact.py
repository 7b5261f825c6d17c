"""Compact optimizer state (issue 13): the comparisons of `python -m lrcore bench --compact`
under pytest-benchmark, at 1 thread and at all usable threads.

    pytest benchmarks/test_bench_compact.py --benchmark-only \\
        --benchmark-group-by=param:optimizer,param:workload,param:threads

Grouped this way, each table is one block of the bench's compact table at one thread count,
every column side by side:
- adamw, 4M and 32M float32 params: lrcore AdamW with state_format None (float32 moments),
  "bfloat16" and "8bit", against torch's fused AdamW and DeepSpeedCPUAdam (adamw_mode, float32
  moments), and the block-wise 8-bit AdamW8bit of bitsandbytes and of torchao on the CPU
  (slow: about a second per step at 32M; torchao compiles its step first, outside the timing);
- sgd (momentum 0.9), rmsprop, adagrad, 32M: lrcore's float32, bfloat16 and 8-bit states.
Every AdamW has weight_decay 1e-2. torch / DeepSpeed / bitsandbytes / torchao cases skip when
those are not installed (or, for the 8-bit peers, cannot step on the CPU in this version).
The state bytes each case keeps per parameter are in its extra_info ("state bytes / param").
"""
import math

import pytest

from lrcore import bench

CASES = [(optimizer, workload, column)
         for optimizer, (_, workloads, columns, _) in bench.COMPACT_GROUPS.items()
         for workload in workloads for column in columns]


@pytest.mark.parametrize("threads", [1, "all"])
@pytest.mark.parametrize("optimizer,workload,column", CASES)
def test_compact_step(benchmark, optimizer, workload, column, threads):
    make, implementation = bench.COMPACT_COLUMNS[column]
    if not bench.available(implementation):
        pytest.skip(f"{implementation} is not installed")
    bench.set_threads(bench.all_threads() if threads == "all" else 1)
    shapes = bench.WORKLOADS[workload]
    step = make(optimizer, shapes)
    if step is None:
        pytest.skip(f"{column} cannot step {optimizer} here")
    elements = sum(math.prod(s) for s in shapes)
    benchmark.extra_info["elements"] = elements
    benchmark.extra_info["state bytes / param"] = bench.state_bytes_of(step) / elements
    benchmark(step)
