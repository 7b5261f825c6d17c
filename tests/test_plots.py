"""Pictures (optional: matplotlib). Skipped without it; CI installs it."""
import os
import pathlib
import re

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
    assert names == ["optimizers.png", "schedules.png", "schedules_today.png", "seed_runs.png"]
    assert all(is_png(tmp_path / "pictures" / n) for n in names)
    assert out.stdout.count("plot: ") == 4


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
    for name, schedule in {**plots.GALLERY, **plots.GALLERY_TODAY}.items():
        assert isinstance(schedule, schedules.LearningRateSchedule)
        assert np.all(np.isfinite(schedule(np.arange(1000)))), name


def test_an_unwritable_plot_path_is_a_one_line_error_before_any_work(tmp_path):
    """Checked before the table is printed or the demo runs (stdout stays empty)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [(("schedule", "Constant", "learning_rate=1", "--plot", str(blocker / "x.png")),
              "does not exist"),
             (("schedule", "Constant", "learning_rate=1", "--plot", str(tmp_path / "no" / "x.png")),
              "does not exist"),
             (("schedule", "Constant", "learning_rate=1", "--plot", str(tmp_path)), "is a directory"),
             (("demo", "--plot", str(blocker / "pictures")), "cannot create directory")]
    for args, message in cases:
        out = run_cli(*args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stdout == "", args
    assert blocker.read_text() == ""


# --- what each demo picture shows, read from the matplotlib objects -----------------------

def drawn(fig):
    """Draw the figure (layout settles) and return its renderer."""
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def data_lines(ax):
    """The labelled or unlabelled curves of ax, without reference lines (axhline)."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 2]


def style(line):
    return (line.get_color(), line.get_marker(), line.get_linestyle(), line.get_markersize())


def outside_every_axes(fig, legend):
    renderer = drawn(fig)
    box = legend.get_window_extent(renderer)
    return not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


@pytest.fixture
def seed_figure():
    from lrcore import plots
    fig = plots.seed_runs_figure()
    yield fig
    plots.pyplot().close(fig)


def test_seed_runs_show_every_run_distinguishably(seed_figure):
    from lrcore.demo import SEED_DECAY, descend
    w_ax, loss_ax, zero_ax, top_ax = seed_figure.axes
    labels = [t.get_text() for t in seed_figure.legends[0].get_texts()]
    assert labels == ["lr = 0.2", "lr = 0.3", "lr = 1", "lr = 0.0001", "lr = 0.1 * 0.99^step (decay)"]
    lines = data_lines(w_ax)
    assert [line.get_label() for line in lines] == labels
    assert len({style(line) for line in lines}) == len(lines)          # no two look alike
    for line, lr in zip(lines, (0.2, 0.3, 1.0, 0.0001, SEED_DECAY)):
        np.testing.assert_array_equal(line.get_ydata(), [w for _, w, _, _ in descend(lr)])
    np.testing.assert_array_equal(lines[2].get_ydata(), [-7.0, 5.0] * 20)   # lr 1 swings
    assert w_ax.get_ylabel() == "w" and w_ax.get_xlabel() == "step"
    assert outside_every_axes(seed_figure, seed_figure.legends[0])


def test_seed_losses_are_on_a_log_axis_with_exact_zeros_in_their_own_strip(seed_figure):
    """Every one of a run's 40 losses is drawn once: a positive one on the log axis, an exact
    0 (lr 0.3 reaches w = -1 exactly in float32) on the strip at 0; no symlog."""
    from lrcore.demo import descend
    _, loss_ax, zero_ax, top_ax = seed_figure.axes
    assert loss_ax.get_yscale() == "log" and "symlog" not in {ax.get_yscale() for ax in seed_figure.axes}
    assert [t.get_text() for t in zero_ax.get_yticklabels()] == ["0"]
    lr_03_zeros = [k for k, _, loss, _ in descend(0.3) if loss == 0]
    assert lr_03_zeros and lr_03_zeros[-1] == 39
    logged, zeros = data_lines(loss_ax), zero_ax.get_lines()
    assert len(logged) == 5
    for line, zero in zip(logged, zeros):
        y = np.asarray(line.get_ydata(), dtype=float)
        assert np.all(np.isnan(y) | (y > 0))
        assert np.count_nonzero(~np.isnan(y)) + len(zero.get_xdata()) == 40
        assert np.all(np.asarray(zero.get_ydata()) == 0)
    assert list(zeros[1].get_xdata()) == lr_03_zeros
    bottom, top = loss_ax.get_ylim()
    assert bottom < 1e-14 and top > 36                       # the smallest positive loss shows
    close_up = top_ax.get_lines()              # lr 1 stuck at 36, lr 0.0001 creeping below it
    assert [style(line) for line in close_up] == [style(logged[2]), style(logged[3])]
    for line, lr in zip(close_up, (1.0, 0.0001)):
        np.testing.assert_array_equal(line.get_ydata(), [loss for _, _, loss, _ in descend(lr)])
    low, high = top_ax.get_ylim()
    assert low < 35.43 and 36 < high < 37 and top_ax.get_yscale() == "linear"


@pytest.fixture(scope="module")
def optimizer_figure():
    from lrcore import demo, plots
    runs = demo.optimizer_runs()
    fig = plots.optimizers_figure(runs)
    yield fig, demo.compare_optimizers(runs), runs
    plots.pyplot().close(fig)


def test_optimizers_picture_shows_whole_runs_at_the_tables_rates(optimizer_figure):
    from lrcore import demo
    fig, table, runs = optimizer_figure
    assert [ax.get_title() for ax in fig.axes] == list(demo.PROBLEMS)
    assert fig.get_suptitle() and fig.axes[0].get_ylabel().startswith("max |x - x*|")
    for ax, problem in zip(fig.axes, demo.PROBLEMS):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "10", "100", "1000", "2000"]
        assert ax.get_xlim() == (0, demo.MAX_STEPS) and ax.get_yscale() == "log"
        curves = {line.get_label(): line for line in data_lines(ax)}
        for name in demo.OPTIMIZERS:
            cell = table[name][problem]
            want = (f": converged at step {cell[0]}" if cell else ": not reached (closest)")
            lr = cell[1] if cell else None
            matches = [label for label in curves if label.startswith(f"{name} lr ")
                       and label.endswith(want) and (lr is None or label.startswith(f"{name} lr {lr:g}:"))]
            assert len(matches) == 1, (problem, name, list(curves))
            line = curves[matches[0]]
            assert len(line.get_xdata()) == demo.MAX_STEPS + 1          # the whole run
        assert any(label.startswith("SGD lr ") and label.endswith(": diverges") for label in curves)
        assert any(label.endswith("leaves again") for label in curves)
        legend = ax.get_legend()
        assert outside_every_axes(fig, legend)
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels[-1] == f"tolerance {demo.TOLERANCE:g}"
        styles = [style(curves[label]) for label in labels[:5]]
        assert len(set(styles)) == 5


def test_a_blow_up_of_a_shown_run_is_inside_the_picture(optimizer_figure):
    """RMSprop at lr 3 on (w + 1)^2 is the table's pick; it first jumps from 6 to above 20:
    the plotted curve carries that peak and the y axis reaches it. SGD's diverging run
    leaves through the top."""
    fig, table, runs = optimizer_figure
    ax = fig.axes[0]
    assert table["RMSprop"]["(w + 1)^2 from 5"] == (8, 3.0)
    curves = {line.get_label(): line for line in data_lines(ax)}
    rms = curves["RMSprop lr 3: converged at step 8"]
    peak = np.max(rms.get_ydata())
    assert peak > 20 and peak == np.nanmax(runs["RMSprop"]["(w + 1)^2 from 5"][3.0])
    assert ax.get_ylim()[1] > peak
    diverging = next(line for label, line in curves.items() if label.endswith(": diverges"))
    assert np.nanmax(diverging.get_ydata()) > ax.get_ylim()[1]


@pytest.mark.parametrize("today", [False, True])
def test_schedules_picture_labels_every_panel(tmp_path, today):
    from lrcore import plots
    gallery = plots.GALLERY_TODAY if today else plots.GALLERY
    fig = plots.schedules_figure(today=today)
    try:
        assert fig.get_suptitle().startswith("Schedules in use today" if today
                                             else "The learning-rate schedules")
        panels = fig.axes
        assert len(panels) == len(gallery)
        for ax, (name, schedule) in zip(panels, gallery.items()):
            assert ax.get_ylabel() == "learning rate"
            title = ax.get_title()
            text = repr(schedule)
            assert title.split("\n")[0] == name
            assert " ".join(title.split("\n")[1:]).replace(" ", "") == text[text.index("(") + 1:-1].replace(" ", "")
            (line,) = ax.get_lines()
            np.testing.assert_array_equal(line.get_ydata(), schedule(np.arange(1000)))
        assert [ax.get_xlabel() for ax in panels[-4:]] == ["step"] * 4
    finally:
        plots.pyplot().close(fig)


def test_the_readme_shows_the_picture_of_today_s_schedules():
    """The README's picture is the demo's schedules_today.png, committed under docs/, and the
    families the README names beside it are the gallery's."""
    from lrcore import plots
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "](docs/schedules_today.png)" in readme
    assert is_png(root / "docs" / "schedules_today.png", min_bytes=50_000)
    drawn = {type(s).__name__ for s in plots.GALLERY_TODAY.values()}
    named = set(re.findall(r"`(\w+)`", readme.split("![The schedules in use today")[0]
                           .rsplit("Besides TensorFlow's", 1)[1]))
    assert {"Linear", "WarmupStableDecay", "OneCycle", "Cyclic", "InverseSqrt", "Sequence",
            "CosineDecay"} <= named & drawn
