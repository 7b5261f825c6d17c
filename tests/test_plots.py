"""Pictures (optional: matplotlib). Skipped without it; CI installs it."""
import os

import numpy as np
import pytest

import lrcore
from lrcore import schedules

from conftest import run_cli

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path, min_bytes=5000):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) >= min_bytes


def test_demo_writes_its_pictures(tmp_path):
    out = run_cli("demo", "--plot", str(tmp_path / "pictures"))
    assert out.returncode == 0, out.stderr
    names = sorted(os.listdir(tmp_path / "pictures"))
    assert names == ["optimizers.png", "schedules.png", "seed_runs.png"]
    assert all(is_png(tmp_path / "pictures" / n) for n in names)
    assert out.stdout.count("plot: ") == 3


def test_schedule_plot(tmp_path):
    out = run_cli("schedule", "CosineDecayRestarts", "initial_learning_rate=0.1",
                  "first_decay_steps=20", "--steps", "200", "--plot", str(tmp_path / "s.png"))
    assert out.returncode == 0, out.stderr
    assert is_png(tmp_path / "s.png")


def test_find_lr_plot(tmp_path, rng):
    X = rng.standard_normal((64, 4))
    fn = lambda p: (0.5 * np.mean((X @ p[0]) ** 2), [X.T @ (X @ p[0]) / 64])
    result = lrcore.find_lr(fn, [np.ones(4)], lrcore.SGD())
    result.plot(tmp_path / "lr.png")
    assert is_png(tmp_path / "lr.png")


def test_every_gallery_schedule_is_finite_over_the_plotted_range():
    from lrcore import plots
    for name, schedule in plots.GALLERY.items():
        assert isinstance(schedule, schedules.LearningRateSchedule)
        assert np.all(np.isfinite(schedule(np.arange(1000)))), name


def test_an_unwritable_plot_path_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run_cli("schedule", "Constant", "learning_rate=1", "--plot", str(blocker / "x.png"))
    assert out.returncode == 2 and "cannot write" in out.stderr and "Traceback" not in out.stderr
