"""The seed tutorial's experiments on loss = (w + 1)², reproduced by lrcore.

tests/data holds the TensorFlow traces printed in the seeds (seed 001: lr 0.2, seed 003:
lr 0.3), copied verbatim; lrcore in float32 must print the same digits.
"""
import pathlib
import re

import numpy as np
import pytest

from lrcore.demo import descend

DATA = pathlib.Path(__file__).parent / "data"
LINE = re.compile(r"After (\d+) steps: ?w is (-?\d+\.\d+) , loss is (\d+\.\d+)")


def printed_trace(name):
    rows = [LINE.match(line).groups() for line in (DATA / name).read_text().splitlines()]
    return [(int(k), w, loss) for k, w, loss in rows]


@pytest.mark.parametrize("lr, name", [(0.2, "seed001_sgd_lr0.2.txt"), (0.3, "seed003_sgd_lr0.3.txt")])
def test_reproduces_the_printed_trace(backend, lr, name):
    want = printed_trace(name)
    assert len(want) == 40
    got = [(k, f"{w:f}", f"{loss:f}") for k, w, loss in descend(lr)]
    assert got == want


@pytest.mark.parametrize("lr", [0.2, 0.3, 0.0001])
def test_follows_the_closed_form(backend, lr):
    """w_k + 1 = (1 − 2·lr)^(k+1) · (w_0 + 1) for gradient descent on (w + 1)²."""
    trace = descend(lr)
    w = np.array([w for _, w, _ in trace], dtype=np.float64)
    k = np.arange(40)
    np.testing.assert_allclose(w + 1, (1 - 2 * lr) ** (k + 1) * 6, rtol=2e-5, atol=2e-6)


def test_lr_one_swings_between_5_and_minus_7(backend):
    trace = descend(1.0)
    assert [w for _, w, _ in trace] == [-7.0, 5.0] * 20
    assert all(loss == 36.0 for _, _, loss in trace)


def test_lr_0_0001_creeps(backend):
    trace = descend(0.0001)
    ws = [w for _, w, _ in trace]
    assert all(a > b for a, b in zip([5.0] + ws, ws))        # every step moves down ...
    assert 4.95 < ws[-1] < 4.96                               # ... by about 0.0012
    assert trace[-1][2] > 35.4                                # the loss is still near 36
