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


# -- the compact-state tables (issue 13) ----------------------------------------------------

N8 = 4096 + 300            # 8-bit (>= min_8bit_size) with a partial last block of 44


@pytest.fixture
def tiny_compact(tiny, monkeypatch):
    """The compact table's quick workloads made 8-bit-sized: "1 x 64K" one array of N8, "1 x 1M"
    an array of N8 and one below min_8bit_size (float32 buffers whatever state_format)."""
    monkeypatch.setitem(bench.WORKLOADS, "1 x 64K", [(N8,)])
    monkeypatch.setitem(bench.WORKLOADS, "1 x 1M", [(N8,), (300,)])


QUICK_COMPACT = {"adamw": ["1 x 64K", "1 x 1M"], "sgd": ["1 x 1M"], "rmsprop": ["1 x 1M"],
                 "adagrad": ["1 x 1M"]}


def test_compact_table_measures_every_optimizer_at_one_and_all_threads(compiled, tiny_compact):
    blocks = bench.compact_table(["lrcore"], progress=lambda _: None, quick=True)
    assert [(title, workload) for title, workload, *_ in blocks] == [
        (bench.COMPACT_GROUPS[o][0], w) for o in QUICK_COMPACT for w in QUICK_COMPACT[o]]
    for (_, workload, columns, headers, runs), optimizer in zip(
            blocks, [o for o in QUICK_COMPACT for _ in QUICK_COMPACT[o]]):
        assert columns == ["lrcore float32", "lrcore bfloat16", "lrcore 8bit"]    # only= honoured
        ratios = bench.COMPACT_GROUPS[optimizer][3]
        assert len(headers) == len(ratios)
        assert [threads for threads, *_ in runs] == [1, "all"]
        for _, times, over_base, cells in runs:
            assert all(times[c] > 0 for c in columns)
            assert over_base == {c: bench.ratio_cell(times[c], times["lrcore float32"])
                                 for c in columns}
            for (numerator, denominators, _), cell in zip(ratios, cells):
                if denominators == ("lrcore float32",):
                    assert cell == bench.ratio_cell(times[numerator], times["lrcore float32"])
                else:
                    assert cell == "-"               # a peer's ratio, none asked for


def test_compact_ratios_are_over_the_fastest_float32_peer_and_the_8bit_peers(compiled,
                                                                            tiny_compact):
    pytest.importorskip("torch")
    implementations = bench.selected()
    [(_, _, columns, headers, runs)] = bench.compact_table(implementations, lambda _: None,
                                                           quick=True, groups=["adamw"])[:1]
    assert headers == ["lrcore 8bit / lrcore float32 (<= 0.70)",
                       "lrcore bfloat16 / lrcore float32 (<= 0.85)",
                       "lrcore 8bit / fastest float32 peer (<= 0.75)",
                       "bitsandbytes 8bit / lrcore 8bit (>= 10)",
                       "torchao 8bit / lrcore 8bit (>= 10)"]
    assert "torch fused" in columns
    for _, times, _, cells in runs:
        peers = [times[c] for c in bench.FLOAT32_PEERS if c in times]
        assert cells[2] == bench.ratio_cell(times["lrcore 8bit"], min(peers))
        for cell, peer in zip(cells[3:], ("bitsandbytes 8bit", "torchao 8bit")):
            assert cell == (bench.ratio_cell(times[peer], times["lrcore 8bit"])
                            if peer in columns else "-")


def test_ratio_over_is_a_dash_when_either_side_was_not_measured():
    t = {"a": bench.Timing(2.0), "b": bench.Timing(4.0), "c": bench.Timing(1.0), "none": None}
    assert bench.ratio_over(t, "a", ("b", "c", "missing")) == "2.00"      # the fastest: c
    assert bench.ratio_over(t, "a", ("none", "missing")) == "-"
    assert bench.ratio_over(t, "none", ("b",)) == "-"


@pytest.fixture
def captured(monkeypatch):
    """Captures the arrays (numpy, lrcore cells) or torch params (peer cells) each make() of a
    bench cell creates: made[-1]."""
    made = []
    real_arrays, real_torch = bench.arrays, bench._torch_params
    monkeypatch.setattr(bench, "arrays", lambda *a: made.append(real_arrays(*a)) or made[-1])
    monkeypatch.setattr(bench, "_torch_params",
                        lambda *a: made.append(real_torch(*a)) or made[-1])
    return made


# half the widest gap between neighbouring codes of the signed dynamic map (0.0140625, between
# its two smallest-magnitude linear segments' ends near ±1), rounded up: the worst error of a
# nearest-code quantization relative to its block's absmax
HALF_GAP = 2**-7
ONE_STEP = [(N8,), (300,)]


def torch_adamw_after_one_step(shapes):
    """torch.optim.AdamW (lr 1e-3, weight_decay 1e-2, for-loop) after one step on
    bench.arrays(shapes): (params, exp_avg, exp_avg_sq) as float64 numpy arrays."""
    import torch
    params, grads = bench.arrays(shapes)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    for t, g in zip(tparams, grads):
        t.grad = torch.from_numpy(g.copy())
    opt = torch.optim.AdamW(tparams, lr=1e-3, weight_decay=1e-2, foreach=False)
    opt.step()
    return [[x.detach().double().numpy() for x in xs] for xs in (
        tparams, [opt.state[t]["exp_avg"] for t in tparams],
        [opt.state[t]["exp_avg_sq"] for t in tparams])]


def test_lrcore_compact_cells_are_adamw_with_the_state_format_they_say(compiled, captured):
    pytest.importorskip("torch")
    params_t, m_t, v_t = torch_adamw_after_one_step(ONE_STEP)
    # column -> the stored format of the N8 array's and of the 300-element array's moments
    # (below min_8bit_size "8bit" keeps float32)
    for column, stored in (("lrcore float32", ("float32", "float32")),
                           ("lrcore bfloat16", ("bfloat16", "bfloat16")),
                           ("lrcore 8bit", ("8bit", "float32"))):
        step = bench.COMPACT_COLUMNS[column][0]("adamw", ONE_STEP)
        params, _ = captured.pop()
        state = step.state
        assert state.step_count == 1 and state.weight_decay == 1e-2
        for name in ("exp_avg", "exp_avg_sq"):
            big, small = state.buffers[name]
            assert (("8bit" if big.dtype == np.uint8 else format_of(big.dtype)),
                    format_of(small.dtype)) == stored
        # the first step's update uses the moments before they are stored: torch's params
        for p, pt in zip(params, params_t):
            np.testing.assert_allclose(p, pt, rtol=1e-6, atol=1e-7)
        for name, exact in (("exp_avg", m_t), ("exp_avg_sq", v_t)):
            for decoded, e, fmt in zip(state.buffer_values(name), exact, stored):
                # float32: torch's rounding; bfloat16: one unit of its 8-bit significand;
                # 8-bit: nearest code, HALF_GAP of the block's absmax (e.max(): an upper bound)
                bound = {"float32": 1e-6 * np.abs(e), "bfloat16": 2**-7 * np.abs(e),
                         "8bit": HALF_GAP * np.abs(e).max()}[fmt]
                assert np.all(np.abs(decoded - e) <= bound + 1e-30), (column, name)
        step()
        assert state.step_count == 2


@pytest.mark.parametrize("peer", bench.EIGHT_BIT_PEERS)
def test_8bit_peer_cells_are_adamw_with_8bit_block_wise_moments(peer, captured):
    if not bench.available(peer):
        pytest.skip(f"{peer} is not installed")
    import torch
    shapes = [(8192,)]                  # both peers' 8-bit rule: >= 4096 elements (torchao: a
    step = bench.COMPACT_COLUMNS[f"{peer} 8bit"][0]("adamw", shapes)     # whole number of blocks)
    if step is None:
        pytest.skip(f"{peer} cannot step on the CPU here")
    [tparam] = captured.pop()
    opt = step.__self__
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-2
    params_t, _, _ = torch_adamw_after_one_step(shapes)
    np.testing.assert_allclose(tparam.detach().numpy(), params_t[0], rtol=1e-5, atol=1e-7)
    n = 8192
    # codes: 1 byte per element per moment; 2 x n/256 float32 absmax (scales); the signed and
    # the unsigned map, 256 float32 each
    assert bench.state_bytes_of(step) == 2 * n + 2 * 4 * n // 256 + 2 * 256 * 4
    codes = [t for v in opt.state[tparam].values() if isinstance(v, torch.Tensor)
             for t in ([getattr(v, a) for a in v.__tensor_flatten__()[0]]
                       if hasattr(v, "__tensor_flatten__") and type(v) is not torch.Tensor
                       else [v]) if t.dtype == torch.uint8]
    assert sorted(c.numel() for c in codes) == [n, n]
    step()


def test_a_failing_8bit_peer_is_skipped_with_a_warning(monkeypatch):
    pytest.importorskip("torch")

    class Broken:
        def __init__(self, params, lr, weight_decay):
            pass

        def step(self):
            raise RuntimeError("no CPU kernel")
    monkeypatch.setattr(bench, "_import_eight_bit_peer", lambda name: Broken)
    with pytest.warns(UserWarning, match="bitsandbytes AdamW8bit cannot step on the CPU here, "
                                         "skipped: RuntimeError: no CPU kernel"):
        assert bench.eight_bit_peer_step("bitsandbytes", "adamw", [(8,)]) is None
    assert bench.eight_bit_peer_step("bitsandbytes", "sgd", [(8,)]) is None   # AdamW only


def test_selected_keeps_lrcore_and_the_installed_names_asked_for(monkeypatch):
    monkeypatch.setattr(bench, "available", lambda name: name != "torchao")
    assert bench.selected(["bitsandbytes", "torchao", "DeepSpeed"]) == [
        "lrcore", "DeepSpeed", "bitsandbytes"]
    assert bench.selected() == [n for n in list(bench.IMPLEMENTATIONS) + ["bitsandbytes"]]


def test_state_bytes_table_is_the_closed_form_of_each_format(compiled, tiny_compact):
    rows = bench.state_bytes_table(["lrcore"], lambda _: None, workload="1 x 1M")
    buffers = {"adamw": 2, "sgd": 1, "rmsprop": 1, "adagrad": 1}
    # N8 elements: 8-bit codes + one float32 absmax per 256 (18 blocks, the last partial);
    # 300 elements: below min_8bit_size, float32 buffers even under "8bit"
    per_buffer = {"lrcore float32": 4 * (N8 + 300), "lrcore bfloat16": 2 * (N8 + 300),
                  "lrcore 8bit": N8 + 4 * 18 + 4 * 300}
    assert rows == [(o, c, buffers[o] * per_buffer[c], N8 + 300)
                    for o in buffers for c in bench.LRCORE_FORMATS]


def test_state_bytes_of_a_torch_optimizer_counts_each_storage_once_without_step_counters():
    torch = pytest.importorskip("torch")
    shared = torch.zeros(256)                                    # a map both states hold

    class Optimizer:
        state = {0: {"step": torch.tensor(3.0), "codes": torch.zeros(100, dtype=torch.uint8),
                     "qmap": shared, "lr": 1e-3},
                 1: {"step": torch.tensor(3.0), "codes": torch.zeros(50, dtype=torch.uint8),
                     "qmap": shared}}

        def step(self):
            pass
    assert bench.state_bytes_of(Optimizer().step) == 100 + 50 + 256 * 4


def test_per_param_cell_is_exact_in_256ths():
    n = 2**22
    assert bench.per_param_cell(2 * n + 2 * 4 * n // 256, n) == "2 + 8/256 = 2.03125"
    assert bench.per_param_cell(n + 4 * n // 256, n) == "1 + 4/256 = 1.015625"
    assert bench.per_param_cell(8 * n, n) == "8"
    assert bench.per_param_cell(2 * n + 2 * 4 * n // 256 + 2048, n) == "2.031738"


def test_report_prints_the_compact_tables(compiled, tiny_compact):
    lines = []
    bench.report(quick=True, only=[], out=lines.append, progress=lambda _: None)
    start = next(i for i, line in enumerate(lines) if line.startswith("Compact optimizer state"))
    for optimizer, workloads in QUICK_COMPACT.items():
        title, _, _, ratios = bench.COMPACT_GROUPS[optimizer]
        for workload in workloads:
            at = lines.index(f"{title}, {workload}", start)
            assert lines[at + 1].split() == ["1", "thread", "all", f"({bench.all_threads()})",
                                             "threads"]
            rows = lines[at + 3:at + 3 + 3 + len(ratios)]
            assert [r.split()[:2] for r in rows[:3]] == [
                ["lrcore", "float32"], ["lrcore", "bfloat16"], ["lrcore", "8bit"]]
            cells = rows[0].split()                 # lrcore float32 <time> <unit> / f32 ...
            assert cells[4].rstrip("*") == cells[-1].rstrip("*") == "1.00"
            assert [r[:len(bench.ratio_header(*ratio))] for r, ratio in zip(rows[3:], ratios)] \
                == [bench.ratio_header(*ratio) for ratio in ratios]
    at = next(i for i, line in enumerate(lines) if line.startswith("State bytes per parameter"))
    assert "(1 x 64K," in lines[at]
    assert lines[at + 4].split()[:3] == ["AdamW", "lrcore", "8bit"]
    expected = 2 * (N8 + 4 * 18) / N8 * 8
    assert lines[at + 4].split()[-2] == f"{expected:.4g}"          # GB for 8B params


def test_bench_compact_command_prints_only_the_compact_tables(compiled, tiny_compact, capsys):
    from lrcore.__main__ import main
    assert main(["bench", "--compact", "--quick", "--only", "lrcore"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Compact optimizer state")
    assert "State bytes per parameter" in out
    assert "Mixed precision" not in out and "Adam (lr 1e-3), time per step; ratio" not in out
    with pytest.raises(SystemExit):
        main(["bench", "--compact", "--mixed"])                   # one table set or the other
    assert "not allowed with argument" in capsys.readouterr().err
