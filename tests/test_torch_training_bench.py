"""benchmarks/torch_training.py (lrcore.torch.Adam against torch's fused Adam in a training
loop): its --quick run prints the table it should, and its like-for-like check and confidence
interval are right. Not a speed test: the timings of tiny models on a shared machine say
nothing, only that they are measured and reported."""
import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "benchmarks", "torch_training.py")
VERDICTS = {"lrcore slower", "lrcore faster", "same within noise"}
TINY = ["--quick", "--rounds", "6", "--round-seconds", "0.005", "--warmup", "1"]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("lrcore_benchmarks_torch_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    """The script's stdout, run as a user runs it (its own process, from another cwd)."""
    result = subprocess.run([sys.executable, SCRIPT, *TINY, *args], capture_output=True,
                            text=True, timeout=600, cwd=os.path.dirname(SCRIPT))
    assert result.returncode == 0, result.stderr
    return result.stdout


def markdown_table(stdout, first_columns):
    """The data rows (lists of cells) of the markdown table whose header starts with
    `first_columns`."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(first_columns))
    assert set(lines[header + 1]) <= set("|-")
    width = lines[header].count("|") - 1
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == width, line
        rows.append(cells)
    return rows


def table_rows(stdout):
    """{(model, threads): cells} of the timing table."""
    return {(cells[0], int(cells[2])): cells
            for cells in markdown_table(stdout, "| model | params |")}


def split_rows(stdout):
    """{(model, threads, optimizer): [step, compiled update, rest]} of the --kernel-split
    table."""
    return {(cells[0], int(cells[1]), cells[2]): [number(c) for c in cells[3:]]
            for cells in markdown_table(stdout, "| model | threads | optimizer | step ms |")}


def number(text):
    value = float(text)
    assert math.isfinite(value) and value > 0, text
    return value


def check_row(cells):
    """Every figure of a row is a finite positive number and they are consistent."""
    lrcore_ms, torch_ms = number(cells[3]), number(cells[4])
    ratio, low, high = (number(x) for x in
                        re.fullmatch(r"(\S+) \((\S+)-(\S+)\)", cells[5]).groups())
    smallest, largest = (number(x) for x in cells[6].split("-"))
    # the median of the per-round ratios lies in its interval, which (with 6 rounds: the
    # extremes) lies within the per-round range
    assert smallest <= low <= ratio <= high <= largest
    for cell, iteration_ms in ((cells[7], lrcore_ms), (cells[8], torch_ms)):
        step_ms, share = re.fullmatch(r"(\S+) \((\d+) %\)", cell).groups()
        assert number(step_ms) <= iteration_ms * 1.0001
        assert 0 <= int(share) <= 100
        # the share is step / iteration before the ms were rounded to 0.01
        rounding = 100 * 0.005 * (1 + number(step_ms) / iteration_ms) / iteration_ms
        assert int(share) == pytest.approx(100 * number(step_ms) / iteration_ms,
                                           abs=0.5 + rounding)
    number(cells[9])
    assert cells[10] in VERDICTS
    assert cells[10] == ("lrcore slower" if low > 1 else "lrcore faster" if high < 1
                         else "same within noise")
    assert 0 <= float(re.fullmatch(r"(\d+\.\d\d) %", cells[11])[1]) <= 100


def test_quick_table_has_a_row_per_model_and_thread_count():
    out = run("--threads", "1", "2", "--schedstat", "--own-pool")
    rows = table_rows(out)
    assert set(rows) == {("mlp", 1), ("mlp", 2), ("transformer", 1), ("transformer", 2)}
    for cells in rows.values():
        check_row(cells)
    # the params column counts the models' parameters: the quick MLP 128-256-256-10
    mlp_params = 128 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert rows[("mlp", 1)][1] == f"{mlp_params / 1e3:.1f} K"
    assert re.search(r"^start: .*load average", out, re.M)
    assert re.search(r"^end: .*load average", out, re.M)
    assert "no competing process" in out
    assert "torch 2" in out and "threading pthreads, steps on its own pool" in out
    if not os.path.exists(f"/proc/self/task/{os.getpid()}/schedstat"):
        return
    # --schedstat: a row per optimizer at 2 threads (1 thread has no pools to compare)
    usage = {(cells[0], int(cells[1]), cells[2]): [float(c) for c in cells[3:]]
             for cells in markdown_table(out, "| model | threads | optimizer |")}
    assert set(usage) == {(m, 2, o) for m in ("mlp", "transformer")
                          for o in ("lrcore", "torch fused")}
    for figures in usage.values():
        assert len(figures) == 7 and all(math.isfinite(f) and f >= 0 for f in figures)
        # lrcore's idle workers poll for at most 50 us after a step (LRC_SPIN_NS in
        # src/pool.h), then sleep: they take no CPU from torch's forward and backward
        assert figures[4] <= 0.1


def test_steps_run_on_torch_s_openmp_threads_unless_told_otherwise():
    """lrcore.torch puts lrcore's steps on torch's OpenMP threads: no lrcore worker takes CPU
    time anywhere in the --schedstat table."""
    out = run("--threads", "2", "--models", "transformer", "--schedstat")
    assert "steps on torch's OpenMP threads" in out
    if not os.path.exists(f"/proc/self/task/{os.getpid()}/schedstat"):
        return
    for cells in markdown_table(out, "| model | threads | optimizer |"):
        assert float(cells[3]) == float(cells[6]) == float(cells[7]) == 0.0


def test_contention_run_reports_its_competing_process():
    out = run("--threads", "1", "--models", "mlp", "--contention")
    rows = table_rows(out)
    assert set(rows) == {("mlp", 1)}
    check_row(rows[("mlp", 1)])
    assert "with one core kept busy by another process" in out


def test_kernel_split_parts_each_step_into_its_compiled_update_and_the_rest():
    out = run("--threads", "1", "2", "--models", "transformer", "--kernel-split")
    steps = {(cells[0], int(cells[2])): cells for cells in table_rows(out).values()}
    split = split_rows(out)
    assert set(split) == {("transformer", t, o) for t in (1, 2)
                          for o in ("lrcore", "torch fused")}
    for (model, threads, optimizer), (step, update, rest) in split.items():
        # the step column is the timing table's, and each part is a share of the step
        # (medians: the two parts need not add up to the step exactly)
        cells = steps[(model, threads)]
        assert f"{step:.2f}" == cells[7 if optimizer == "lrcore" else 8].split()[0]
        assert update <= step * 1.0001 and rest <= step * 1.0001


def test_control_run_steps_both_columns_with_torch_fused_adam():
    out = run("--threads", "1", "--models", "transformer", "--control", "--kernel-split")
    check_row(table_rows(out)[("transformer", 1)])
    assert "control run: the lrcore column is torch's fused Adam too" in out
    # the lrcore column's steps call torch's _fused_adam_ (the split times the op of the
    # optimizer that runs: a column that ran no such call would show no time, which number()
    # refuses)
    assert set(split_rows(out)) == {("transformer", 1, "lrcore"),
                                    ("transformer", 1, "torch fused")}


def test_flush_denormal_run_says_so_and_its_grads_hold_no_subnormal_values():
    out = run("--threads", "1", "--models", "mlp", "--flush-denormal")
    cells = table_rows(out)[("mlp", 1)]
    check_row(cells)
    assert "flush-to-zero set" in out
    assert cells[11] == "0.00 %"


def test_the_subnormal_share_counts_nonzero_values_below_the_smallest_normal(script):
    model = torch.nn.Linear(2, 2)
    tiny = torch.finfo(torch.float32).tiny
    model.weight.grad = torch.tensor([[tiny / 4, -tiny / 2], [tiny, 0.0]])
    model.bias.grad = torch.tensor([-tiny * 0.99, 1.0])
    assert script.subnormal_share(model) == 3 / 6


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_same_hyperparameters_agree_to_float32_rounding(script, model):
    net, batches = script.make_model(model, script.SIZES["quick"][model], seed=3)
    worst = script.check_same_updates(net, batches)
    assert 0 <= worst <= 1


@pytest.mark.parametrize("model", ["mlp", "transformer"])
@pytest.mark.parametrize("different", [dict(lr=1.001e-3), dict(eps=1e-6),
                                       dict(betas=(0.9, 0.99)), dict(weight_decay=1e-4)])
def test_a_different_hyperparameter_fails_the_check(script, model, different):
    # the check must tell optimizers apart that differ by as little as an lr 0.1 % off
    net, batches = script.make_model(model, script.SIZES["quick"][model], seed=3)
    with pytest.raises(AssertionError, match="disagree"):
        script.check_same_updates(net, batches, lrcore_overrides=different)


def test_sign_test_interval_matches_the_tables(script):
    # the 95 % distribution-free interval of a median is the (k, n + 1 - k)-th order
    # statistics: k = 1 for n = 6..8, 2 for 9..11, 3 for 12..14, 4 for 15..16 (Conover,
    # Practical Nonparametric Statistics, table A3); none exists below n = 6
    for n, k in [(6, 1), (8, 1), (9, 2), (11, 2), (12, 3), (14, 3), (15, 4), (16, 4)]:
        values = [10.0 * i for i in range(n)][::-1]           # any order
        assert script.sign_test_interval(values) == (10.0 * (k - 1), 10.0 * (n - k))
    assert script.sign_test_interval([1.0] * 5) is None


# -- benchmarks/subnormal_step.py ---------------------------------------------------------

SUBNORMAL_SCRIPT = os.path.join(os.path.dirname(SCRIPT), "subnormal_step.py")


def test_subnormal_step_draws_the_gradients_it_describes():
    spec = importlib.util.spec_from_file_location("lrcore_benchmarks_subnormal", SUBNORMAL_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    smallest = torch.finfo(torch.float32).tiny
    normal, sprinkled, tiny, subnormal = (module.gradient(kind, 100000).abs() for kind in
                                          ("normal", "sprinkled", "tiny", "subnormal"))
    assert normal.min() >= smallest and normal.max() < 1.0
    # one value in a thousand as tiny ones are (below 1e-15), the others as normal ones
    below = sprinkled < 1e-15
    assert 60 < below.sum() < 140 and sprinkled[~below].min() > 1e-12
    assert torch.equal(sprinkled[~below], normal[~below])
    # (1 − β2)·g·g below the smallest normal for nearly every tiny gradient, never 0 for all
    square = 0.001 * tiny.double() ** 2
    assert (tiny >= smallest).all() and (square < smallest).float().mean() > 0.99
    assert ((subnormal > 0) & (subnormal < smallest)).float().mean() > 0.99


@pytest.mark.parametrize("flush", [[], ["--flush-denormal"]])
def test_subnormal_step_prints_a_row_per_kind_and_thread_count(flush):
    result = subprocess.run([sys.executable, SUBNORMAL_SCRIPT, "--elements", "70000", "--steps",
                             "2", "--threads", "1", "2", *flush], capture_output=True,
                            text=True, timeout=600, cwd=os.path.dirname(SUBNORMAL_SCRIPT))
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()
            if re.match(r"\| (normal|sprinkled|tiny|subnormal) \|", line)]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (kind, threads) for threads in "12"
        for kind in ("normal", "sprinkled", "tiny", "subnormal")]
    for row in rows:
        mine, theirs, ratio = (float(cell) for cell in row[2:])
        assert mine > 0 and theirs > 0 and ratio > 0
    assert ("flush-to-zero" in result.stdout) == bool(flush)
