"""The bench command's tables (on tiny workloads: the timings themselves are benchmarks/')."""
import math
import os
import sys
import time

import numpy as np
import pytest

from lrcore import bench
from lrcore._validate import format_of
from lrcore.reference import widen


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(bench.WORKLOADS, "1 x 1K", [(64,)])
    monkeypatch.setitem(bench.WORKLOADS, "1 x 1M", [(300,), (5,)])
    monkeypatch.setitem(bench.WORKLOADS, "1 x 64K", [(40,)])
    monkeypatch.setitem(bench.WORKLOADS, "100 x 1K", [(16,)] * 3)
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


# -- the mixed-precision table (issue 12) ---------------------------------------------------

QUICK_MIXED = {"bf16 grads": ["1 x 1M"], "bf16 params": ["1 x 64K", "1 x 1M"],
               "scale+clip+skip": ["1 x 1M"], "small bf16": ["100 x 1K"]}


def test_mixed_table_measures_every_group_at_one_and_all_threads(compiled, tiny):
    tables = bench.mixed_table(["lrcore"], progress=lambda _: None, quick=True)
    assert [t[0] for t in tables] == [g[0] for g in bench.MIXED_GROUPS.values()]
    for name, (title, columns, headers, rows) in zip(bench.MIXED_GROUPS, tables):
        assert columns[0].startswith("lrcore")
        assert all(bench.MIXED_COLUMNS[c][1] == "lrcore" for c in columns)     # only= honoured
        assert len(headers) == len(bench.MIXED_GROUPS[name][3])
        assert [(w, t) for w, t, _, _ in rows] == [(w, t) for w in QUICK_MIXED[name]
                                                   for t in (1, "all")]
        for _, _, times, cells in rows:
            assert all(times[c] > 0 for c in columns)
            for (denominators, _), cell in zip(bench.MIXED_GROUPS[name][3], cells):
                if denominators == ("lrcore float32",):
                    assert cell == bench.ratio_cell(times[columns[0]], times["lrcore float32"])
                else:
                    assert cell == "-"                   # no peer asked for


def test_mixed_ratios_are_over_the_fastest_peer_measured(compiled, tiny):
    pytest.importorskip("torch")
    implementations = ["lrcore", "torch fused", "DeepSpeed"]     # DeepSpeed: when installed
    implementations = [name for name in implementations if bench.available(name)]
    [(_, columns, headers, rows)] = bench.mixed_table(implementations, lambda _: None, quick=True,
                                                      groups=["small bf16"])
    assert "torch fused bf16" in columns and headers == ["/ fastest peer (<= 0.25)"]
    for _, _, times, [cell] in rows:
        peers = [times[c] for c in bench.BF16_PEERS if c in times]
        assert cell == bench.ratio_cell(times["lrcore bf16"], min(peers))


def test_report_prints_the_mixed_precision_table(compiled, tiny):
    lines = []
    bench.report(quick=True, only=[], out=lines.append, progress=lambda _: None)
    start = next(i for i, line in enumerate(lines) if line.startswith("Mixed precision, Adam"))
    for name, (title, _, columns, ratios) in bench.MIXED_GROUPS.items():
        at = lines.index(title, start)
        header = lines[at + 1]
        assert header.split()[:2] == ["workload", "threads"] and columns[0] in header
        goals = [goal for _, goal in ratios]
        assert all(f"({goal})" in header for goal in goals)
        rows = lines[at + 2:at + 2 + 2 * len(QUICK_MIXED[name])]
        assert [row.split()[:4] for row in rows] == [
            w.split() + [str(t)] for w in QUICK_MIXED[name] for t in (1, "all")]


def bfloat16_bits_of(values):
    return np.asarray(values, dtype=np.float32).view(np.uint32) >> 16


# 1, a tie rounding down to even 1, a tie rounding up to even 1 + 2**-6, just above a tie, -2
ROUNDING = ([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.0],
            [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000])


def test_bfloat16_without_ml_dtypes_is_tagged_uint16_rounded_to_nearest_even(monkeypatch):
    from lrcore._validate import BFLOAT16_BITS
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)          # import ml_dtypes fails
    values, bits = ROUNDING
    out = bench.bfloat16(np.array(values, dtype=np.float32))
    assert out.dtype == np.uint16 and out.dtype.metadata == BFLOAT16_BITS.metadata
    assert out.tolist() == bits


def test_bfloat16_with_ml_dtypes_is_an_ml_dtypes_array():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values, bits = ROUNDING
    out = bench.bfloat16(np.array(values, dtype=np.float32))
    assert out.dtype == ml_dtypes.bfloat16 and out.view(np.uint16).tolist() == bits


def is_bfloat16(array):
    """An ml_dtypes.bfloat16 array or uint16 tagged as lrcore's bfloat16."""
    return format_of(array.dtype) == "bfloat16"


@pytest.fixture
def lrcore_cell(monkeypatch):
    """make(column, shapes) -> (step, params, grads, state) for an lrcore mixed column: the
    arrays and the Adam state its step function works on."""
    import lrcore
    made, states = [], []
    real_arrays, real_adam = bench.mixed_arrays, lrcore.Adam
    monkeypatch.setattr(bench, "mixed_arrays", lambda *a: made.append(real_arrays(*a)) or made[-1])
    monkeypatch.setattr(lrcore, "Adam", lambda **kw: states.append(real_adam(**kw)) or states[-1])

    def make(column, shapes):
        step = bench.MIXED_COLUMNS[column][0](shapes)
        return (step, *made.pop(), states.pop())
    return make


SHAPES = [(700,), (3, 7)]


@pytest.fixture
def torch_cell(monkeypatch):
    """make(column, shapes) -> (step, torch params) for a torch / DeepSpeed mixed column."""
    made = []
    real = bench._torch_params
    monkeypatch.setattr(bench, "_torch_params", lambda *a: made.append(real(*a)) or made[-1])

    def make(column, shapes):
        step = bench.MIXED_COLUMNS[column][0](shapes)
        return step, made.pop()
    return make


def test_lrcore_bf16_cell_steps_bfloat16_arrays_as_torch_fused_adam_does(compiled, lrcore_cell,
                                                                         torch_cell):
    step, params, grads, state = lrcore_cell("lrcore bf16", SHAPES)
    assert all(is_bfloat16(a) for a in params + grads)
    assert all(is_bfloat16(b) for buffers in state.buffers.values() for b in buffers)
    before = [widen(p) for p in params]
    step()                                      # its second step, as the torch cell's below
    changed = sum(np.count_nonzero(widen(p) != b) for p, b in zip(params, before))
    assert changed > 0.2 * sum(p.size for p in params)       # lr 1e-3 moves the small values
    torch = pytest.importorskip("torch")
    peer, tparams = torch_cell("torch fused bf16", SHAPES)
    peer()
    opt = peer.__self__
    assert opt.defaults["fused"]
    for p, t in zip(params, tparams):
        assert t.dtype == t.grad.dtype == opt.state[t]["exp_avg"].dtype == torch.bfloat16
        np.testing.assert_allclose(widen(p), t.detach().float().numpy(), rtol=2**-7)


def test_lrcore_bf16_grads_cell_is_torchs_cast_then_fused_adam(compiled, lrcore_cell, torch_cell):
    step, params, grads, state = lrcore_cell("lrcore bf16 grads", SHAPES)
    assert all(p.dtype == np.float32 for p in params) and all(is_bfloat16(g) for g in grads)
    assert all(b.dtype == np.float32 for buffers in state.buffers.values() for b in buffers)
    step()
    torch = pytest.importorskip("torch")
    peer, tparams = torch_cell("torch cast+fused", SHAPES)
    peer()
    for p, g, t in zip(params, grads, tparams):
        assert t.dtype == t.grad.dtype == torch.float32
        assert np.array_equal(t.grad.numpy(), widen(g))     # the bf16 grads, cast
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-6, atol=1e-7)


CLIPPED = [(40_000,), (3, 7)]     # grads of norm ~2: MAX_GRAD_NORM clips them


def test_scale_clip_skip_cell_unscales_clips_as_torch_and_skips(compiled, lrcore_cell, torch_cell):
    step, params, grads, state = lrcore_cell("lrcore scale+clip+skip", CLIPPED)
    unscaled = bench.arrays(CLIPPED)[1]
    assert all(np.array_equal(g, u * np.float32(bench.GRAD_SCALE)) for g, u in zip(grads, unscaled))
    norm = math.sqrt(sum(np.sum(u.astype(np.float64) ** 2) for u in unscaled))
    assert norm > bench.MAX_GRAD_NORM                               # the clipping is active
    assert state.last_grad_norm == pytest.approx(norm, rel=1e-12)
    coef = bench.MAX_GRAD_NORM / (norm + 1e-6)
    for m, u in zip(state.buffers["exp_avg"], unscaled):         # after one step: 0.1 g coef
        np.testing.assert_allclose(m, 0.1 * coef * u.astype(np.float64), rtol=1e-5)
    if bench.available("torch GradScaler"):                     # torch's clipped grads, same
        _, tparams = torch_cell("torch unscale+clip+fused", CLIPPED)
        for m, t in zip(state.buffers["exp_avg"], tparams):
            np.testing.assert_allclose(m, 0.1 * t.grad.numpy(), rtol=1e-5)
    grads[0][0] = np.nan
    before = [p.copy() for p in params]
    step()
    assert all(np.array_equal(b, p) for b, p in zip(before, params))       # skipped
    assert state.skipped_steps == 1


def test_deepspeed_bf16_cells_keep_the_moments_they_say(torch_cell):
    if not bench.available("DeepSpeed"):
        pytest.skip("DeepSpeed is not installed")
    import torch
    for column, moments in (("DeepSpeed bf16", torch.bfloat16),
                            ("DeepSpeed fp32 state", torch.float32)):
        step, tparams = torch_cell(column, SHAPES)
        before = [t.detach().clone() for t in tparams]
        step()
        opt = step.__self__
        for t, b in zip(tparams, before):
            assert t.dtype == t.grad.dtype == torch.bfloat16
            assert opt.state[t]["exp_avg"].dtype == opt.state[t]["exp_avg_sq"].dtype == moments
            assert not torch.equal(t, b)
