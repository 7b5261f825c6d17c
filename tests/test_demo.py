"""The demo's optimizer comparison: SGD's counts against the closed form, and the property it
shows a reader (adaptive optimizers do not care about conditioning)."""
import math

import pytest

from lrcore import demo


def sgd_steps_closed_form(lr, curvatures, offsets):
    """Gradient descent on Σ ½·λ·(x − x*)² shrinks each offset by |1 − lr·λ| per step."""
    worst = 0
    for lam, offset in zip(curvatures, offsets):
        if abs(offset) < demo.TOLERANCE:
            continue
        rate = abs(1 - lr * lam)
        if rate >= 1:
            return None
        steps = 1 if rate == 0 else math.floor(math.log(demo.TOLERANCE / abs(offset)) / math.log(rate)) + 1
        worst = max(worst, steps)
    return worst if worst <= demo.MAX_STEPS else None


def best(runs):
    reached = [(steps, lr) for steps, lr in runs if steps is not None]
    return min(reached) if reached else None


@pytest.fixture(scope="module")
def table():
    return demo.compare_optimizers()


@pytest.mark.parametrize("problem, curvatures, offsets", [
    ("(w + 1)^2 from 5", [2.0], [6.0]),
    ("quadratic k=10", [1.0, 10.0], [2.0, 1.3]),
    ("quadratic k=1000", [1.0, 1000.0], [2.0, 1.3]),
])
def test_sgd_counts_follow_the_closed_form(table, problem, curvatures, offsets):
    want = best([(sgd_steps_closed_form(lr, curvatures, offsets), lr) for lr in demo.LR_GRID])
    assert table["SGD"][problem] == want


def test_sgd_cannot_reach_the_ill_conditioned_minimum_but_the_others_can(table):
    assert table["SGD"]["quadratic k=1000"] is None
    for name in ("Momentum", "Adagrad", "RMSprop", "Adam"):
        assert table[name]["quadratic k=1000"] is not None


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Adam"])
def test_adaptive_optimizers_are_indifferent_to_conditioning(table, name):
    assert table[name]["quadratic k=10"] == table[name]["quadratic k=1000"]


def test_the_demo_prints_the_comparison(capsys):
    demo.run()
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert rows["SGD"].rstrip().endswith("not reached")
    assert "Adam" in rows and "RMSprop" in rows and "Adagrad" in rows and "Momentum" in rows
