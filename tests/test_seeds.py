"""The seed tutorial's experiments on loss = (w + 1)², reproduced by lrcore.

tests/data holds the TensorFlow traces printed in the seeds (seed 001: lr 0.2 and the
exponential-decay run, seed 003: lr 0.3), copied verbatim; lrcore in float32 must print the
same digits.
"""
import pathlib
import re

import numpy as np
import pytest

from lrcore.demo import SEED_DECAY, descend

DATA = pathlib.Path(__file__).parent / "data"
NUMBER = r"(-?\d+\.\d+)"
LINE = re.compile(rf"After (\d+) steps: ?w is {NUMBER} , loss is {NUMBER}")
DECAY_LINE = re.compile(rf"After (\d+) steps: global_step is {NUMBER} ,w is {NUMBER},"
                        rf"learning rate is {NUMBER},loss is {NUMBER}$")


def printed_trace(name, pattern=LINE):
    return [pattern.match(line).groups() for line in (DATA / name).read_text().splitlines()]


@pytest.mark.parametrize("lr, name", [(0.2, "seed001_sgd_lr0.2.txt"), (0.3, "seed003_sgd_lr0.3.txt")])
def test_reproduces_the_printed_trace(backend, lr, name):
    want = printed_trace(name)
    assert len(want) == 40
    got = [(str(k), f"{w:f}", f"{loss:f}") for k, w, loss, _ in descend(lr)]
    assert got == want


def decay_rows(lr):
    """descend() printed as the tutorial's exponential-decay run prints it."""
    return [(str(k), f"{k + 1:f}", f"{w:f}", f"{next_lr:f}", f"{loss:f}")
            for k, w, loss, next_lr in descend(lr)]


def test_reproduces_the_exponential_decay_trace_given_tensorflows_float32_rate(backend):
    """TensorFlow evaluates 0.1 · 0.99^p in float32; fed that rate, lrcore's SGD prints
    every digit of the tutorial's run."""
    tf_rate = lambda k: float(np.float32(0.1) * np.power(np.float32(0.99), np.float32(k)))
    assert decay_rows(tf_rate) == printed_trace("seed001_exponential_decay.txt", DECAY_LINE)


def test_exponential_decay_schedule_reproduces_the_printed_rates(backend):
    """lrcore's schedule is evaluated in float64 (API.md) and cast once, so the rate may differ
    from TensorFlow's float32 one in its last bit: the printed rates and global steps are
    identical, and w / loss agree within one unit of the sixth decimal."""
    want = printed_trace("seed001_exponential_decay.txt", DECAY_LINE)
    got = decay_rows(SEED_DECAY)
    assert len(got) == len(want) == 40
    for row, expected in zip(got, want):
        assert row[:2] == expected[:2] and row[3] == expected[3]          # step, global step, rate
        for value, printed in ((row[2], expected[2]), (row[4], expected[4])):  # w, loss
            assert abs(float(value) - float(printed)) <= 1.000001e-6


@pytest.mark.parametrize("lr", [0.2, 0.3, 0.0001])
def test_follows_the_closed_form(backend, lr):
    """w_k + 1 = (1 − 2·lr)^(k+1) · (w_0 + 1) for gradient descent on (w + 1)²."""
    trace = descend(lr)
    w = np.array([w for _, w, _, _ in trace], dtype=np.float64)
    k = np.arange(40)
    np.testing.assert_allclose(w + 1, (1 - 2 * lr) ** (k + 1) * 6, rtol=2e-5, atol=2e-6)


def test_lr_one_swings_between_5_and_minus_7(backend):
    trace = descend(1.0)
    assert [w for _, w, _, _ in trace] == [-7.0, 5.0] * 20
    assert all(loss == 36.0 for _, _, loss, _ in trace)


def test_lr_0_0001_creeps(backend):
    trace = descend(0.0001)
    ws = [w for _, w, _, _ in trace]
    assert all(a > b for a, b in zip([5.0] + ws, ws))        # every step moves down ...
    assert 4.95 < ws[-1] < 4.96                               # ... by about 0.0012
    assert trace[-1][2] > 35.4                                # the loss is still near 36
