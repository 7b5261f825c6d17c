"""Compact optimizer state trains as well as float32 state: a short run of
benchmarks/convergence.py (optional: torch and scikit-learn).

The same MLP 64-256-256-10 on scikit-learn's digits, trained through lrcore.torch.AdamW with
state_format None (float32), "bfloat16" and "8bit" (min_8bit_size=4096: both hidden weight
matrices in 8-bit), and through torch.optim.AdamW, over the same seeds: every run starts from
the seed's weights and sees the seed's batches, so the formats are compared seed by seed.
4 epochs (88 steps) instead of the script's 30, 3 seeds, 1 thread (so the numbers do not
depend on the machine's thread count).

Tolerance. Measured with this short configuration over 10 seeds (`python
benchmarks/convergence.py --seeds 10 --epochs 4 --optimizers float32 bfloat16 8bit torch`):
the float32 final validation loss is 0.282 with a seed-to-seed standard deviation of 0.016
(5.7 % of the mean; accuracy 0.934 ± 0.0065); the 8-bit run of the same seed differs by
-0.33 % ± 0.41 % (mean ± std of the per-seed relative differences), the bfloat16 run by
+0.00 % ± 0.01 %, torch.optim.AdamW by 0.0000 %. Because each format is compared with float32
seed by seed, the seed's own variance cancels; what is asked is that a compact format move the
final loss by much less than drawing another seed does: at most a third of the seed spread,
TOLERANCE = 5.7 % / 3 = 1.9 % for the mean relative difference over the 3 seeds (the issue's
goal for 8-bit is 2 %). The per-seed scatter (0.41 %, so 0.24 % for a mean of 3) puts the
measured 8-bit difference more than 6 standard errors inside the bound, so the test is not
flaky, while a format that costs the issue's 2 % fails it. The accuracy likewise: at most a
third of its seed spread (0.0065 / 3, under one image of 450 on average; measured per seed:
at most 2 images apart, 0.1 on average).
"""
import importlib.util
import os
import statistics

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
import lrcore  # noqa: E402

SEEDS = [0, 1, 2]
EPOCHS = 4
# measured over 10 seeds (see the docstring): the seed-to-seed standard deviation of float32's
# final validation loss relative to its mean, and of its accuracy
SEED_SPREAD, ACCURACY_SPREAD = 0.057, 0.0065
TOLERANCE = SEED_SPREAD / 3                 # 1.9 %
ACCURACY_TOLERANCE = ACCURACY_SPREAD / 3
# lrcore.torch float32 against torch.optim.AdamW: the same arithmetic up to the order of a
# few float32 operations, so the trajectories agree to rounding (measured: 0.0000 % over 10
# seeds at 4 epochs); 0.1 % leaves room for a BLAS that orders its sums differently
ANCHOR_TOLERANCE = 1e-3


def _convergence_module():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "benchmarks", "convergence.py")
    spec = importlib.util.spec_from_file_location("lrcore_benchmarks_convergence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def convergence():
    return _convergence_module()


@pytest.fixture(scope="module")
def runs(convergence):
    """{name: [(val loss, val accuracy) per seed]}, the untrained loss, on 1 thread."""
    threads, lrcore_threads = torch.get_num_threads(), lrcore.get_num_threads()
    torch.set_num_threads(1)
    lrcore.set_num_threads(1)
    try:
        data = convergence.load_data()
        results = convergence.run(SEEDS, EPOCHS, ["float32", "bfloat16", "8bit", "torch"], data)
        return results, convergence.untrained_loss(SEEDS, data)
    finally:
        torch.set_num_threads(threads)
        lrcore.set_num_threads(lrcore_threads)


@pytest.mark.parametrize("state_format", ["bfloat16", "8bit"])
def test_compact_state_final_loss_is_within_tolerance_of_float32(convergence, runs,
                                                                 state_format):
    results, _ = runs
    paired = convergence.paired_relative_differences(results, state_format)
    assert abs(statistics.mean(paired)) <= TOLERANCE, paired
    means = {name: statistics.mean(r[0] for r in results[name])
             for name in ("float32", state_format)}
    assert abs(means[state_format] / means["float32"] - 1) <= TOLERANCE, means
    accuracy = {name: statistics.mean(r[1] for r in results[name])
                for name in ("float32", state_format)}
    assert abs(accuracy[state_format] - accuracy["float32"]) <= ACCURACY_TOLERANCE, accuracy


def test_the_8bit_run_really_has_8bit_state(convergence):
    """What the table calls 8-bit: the hidden matrices' moments are uint8 codes."""
    model = convergence.make_model(0)
    opt = convergence.OPTIMIZERS["8bit"](model.parameters(), 0)
    x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    dtypes = [opt.state[p]["exp_avg"].dtype for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    assert dtypes == [torch.uint8 if n >= 4096 else torch.float32 for n in sizes]
    assert sum(n for n, d in zip(sizes, dtypes) if d == torch.uint8) == 64 * 256 + 256 * 256


def test_every_run_beats_the_untrained_model_by_far(runs):
    """Untrained: loss ≈ ln 10 = 2.30, accuracy ≈ 10 %; after 4 epochs every run of every
    optimizer is below a fifth of that loss (measured: 0.25 to 0.32) and above 90 %
    accuracy (measured: 92 to 94 %)."""
    results, untrained = runs
    assert 2.0 < untrained < 2.7
    for name, per_seed in results.items():
        for seed, (loss, accuracy) in zip(SEEDS, per_seed):
            assert loss < 0.2 * untrained, (name, seed, loss)
            assert accuracy > 0.9, (name, seed, accuracy)


def test_lrcore_float32_state_trains_as_torch_optim(convergence, runs):
    results, _ = runs
    for d in convergence.paired_relative_differences(results, "torch"):
        assert abs(d) <= ANCHOR_TOLERANCE


def test_the_table_has_a_row_per_optimizer(convergence, runs):
    results, untrained = runs
    lines = convergence.table(results, untrained).splitlines()
    assert lines[0].startswith("| state | final val loss")
    assert [line.split("|")[1].strip() for line in lines[2:]] == \
        ["float32", "bfloat16", "8bit", "torch", "untrained"]
