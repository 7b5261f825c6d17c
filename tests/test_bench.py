"""The bench command's tables (on tiny workloads: the timings themselves are benchmarks/')."""
import math

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
