"""The bench command's tables (on tiny workloads: the timings themselves are benchmarks/')."""
import math
import os
import time

import numpy as np
import pytest

from lrcore import bench


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(bench.WORKLOADS, "1 x 1K", [(64,)])
    monkeypatch.setitem(bench.WORKLOADS, "1 x 1M", [(300,), (5,)])
    monkeypatch.setattr(bench, "QUICK_CASES", [("1 x 1K", 1), ("1 x 1M", "all")])
    fast = bench.time_per_step
    monkeypatch.setattr(bench, "time_per_step", lambda step: fast(step, min_seconds=1e-4, repeats=1))


def test_report_prints_adam_and_bandwidth_tables(compiled, tiny):
    lines = []
    rows = bench.report(quick=True, only=["numpy reference"], out=lines.append, progress=lambda _: None)
    text = "\n".join(lines)
    assert "Adam (lr 1e-3), time per step" in text and "memory-bound floor" in text
    assert [(w, t) for w, t, _, _ in rows] == [("1 x 1K", 1), ("1 x 1M", "all")]
    for _, _, times, ratio in rows:
        assert times["lrcore"] > 0 and times["numpy reference"] > 0
        assert ratio is None                      # no torch / DeepSpeed column asked for
    for optimizer in bench.OPTIMIZERS:
        assert any(line.startswith(optimizer + " ") for line in lines)
    assert "skipping steps with NaN / inf gradients" in text


def test_resnet50_list_has_torchvisions_shapes():
    shapes = bench.resnet50_shapes()
    assert len(shapes) == 161
    assert sum(math.prod(s) for s in shapes) == 25_557_032


def test_every_implementation_steps_the_arrays_it_was_given(compiled):
    for name in bench.IMPLEMENTATIONS:
        if not bench.available(name):
            continue
        step = bench.IMPLEMENTATIONS[name]("adam", [(8,)])
        assert step is not None, name
        step()


def test_check_only_case_is_a_skipped_step(compiled, monkeypatch):
    made = []
    real = bench.arrays
    monkeypatch.setattr(bench, "arrays", lambda shapes: made.append(real(shapes)) or made[-1])
    step = bench.NONFINITE["check only"]([(8,), (3,)])
    params, grads = made[0]
    before = [p.copy() for p in params]
    assert np.isnan(grads[-1][-1])
    assert step() == 0.0
    assert all(np.array_equal(a, b) for a, b in zip(before, params))


def test_every_nonfinite_case_steps(compiled):
    for name, make in bench.NONFINITE.items():
        if bench.available(name):
            make([(8,)])()


def test_a_negative_cost_is_reported_as_noise_not_as_a_number():
    assert bench.cost_cell(bench.Timing(1.0), bench.Timing(1.25)) == "+25 %"
    assert bench.cost_cell(bench.Timing(1.0), bench.Timing(0.97)) == "noise"


def test_figures_whose_repeats_spread_widely_are_marked_unreliable():
    steady, busy = bench.Timing(2e-3, spread=0.02), bench.Timing(1e-3, spread=0.5)
    assert bench.format_time(steady) == "2 ms" and bench.format_time(busy) == "1 ms*"
    assert bench.ratio_cell(steady, steady) == "1.00"
    assert bench.ratio_cell(busy, steady) == "0.50*"
    assert bench.cost_cell(busy, steady) == "+100 %*"


def test_time_per_step_measures_the_spread_of_its_repeats():
    durations = iter([0.0, 0.0] + [1e-3] * 2 + [2e-3] * 3)     # warm-up, probe, 5 repeats
    timing = bench.time_per_step(lambda: time.sleep(next(durations)), min_seconds=0, repeats=5)
    assert timing >= 1e-3 and timing.spread > 0.5 and timing.unreliable


def test_the_busy_process_competes_while_the_block_runs_and_is_gone_after():
    with bench.busy_process(seconds=30) as proc:
        time.sleep(0.3)
        assert proc.poll() is None
        cpu = cpu_seconds(proc.pid)
        assert cpu > 0.1                    # it spins
    assert proc.poll() is not None


def cpu_seconds(pid):
    """CPU seconds a Linux process has used (utime + stime from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_report_prints_the_contention_table(compiled, tiny, monkeypatch):
    monkeypatch.setattr(bench, "QUICK_CONTENTION_CASES", ("1 x 1K",))
    monkeypatch.setattr(bench, "all_threads", lambda: 2)
    lines = []
    bench.report(quick=True, only=[], out=lines.append, progress=lambda _: None)
    start = next(i for i, line in enumerate(lines) if "competing for a core" in line)
    rows = [line.split() for line in lines[start + 2:start + 4]]
    assert [r[:4] for r in rows] == [["1", "x", "1K", "none"], ["1", "x", "1K", "1"]]
