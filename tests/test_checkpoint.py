"""lrcore.save / lrcore.load: exact resume, atomic writes, and clear errors."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lrcore
from lrcore import schedules


def quadratic_grads(params):
    return [2 * (p - p.dtype.type(3)) for p in params]


STATES = [
    lambda: lrcore.SGD(lr=0.05, momentum=0.9, nesterov=True),
    lambda: lrcore.Adagrad(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    lambda: lrcore.RMSprop(lr=schedules.ExponentialDecay(0.01, 5, 0.5), centered=True, momentum=0.5),
    lambda: lrcore.Adam(lr=schedules.Warmup(schedules.CosineDecay(0.01, 30), 4), amsgrad=True),
    lambda: lrcore.AdamW(lr=schedules.NoisyLinearCosineDecay(0.01, 30, initial_variance=1e-4, seed=9)),
]


@pytest.mark.parametrize("make", STATES, ids=lambda f: type(f()).__name__)
def test_save_at_10_load_and_10_more_equals_20_straight(backend, rng, tmp_path, make):
    start = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(4)]
    straight = [p.copy() for p in start]
    state = make()
    for _ in range(20):
        lrcore.step(straight, quadratic_grads(straight), state)

    resumed = [p.copy() for p in start]
    first = make()
    for _ in range(10):
        lrcore.step(resumed, quadratic_grads(resumed), first)
    lrcore.save(first, tmp_path / "opt.npz")
    second = lrcore.load(tmp_path / "opt.npz")
    assert type(second) is type(first) and second.lr == first.lr and second.step_count == 10
    for _ in range(10):
        lrcore.step(resumed, quadratic_grads(resumed), second)

    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert state.state_dict()["array_steps"] == second.state_dict()["array_steps"]
    for name, arrays in state.buffers.items():
        for a, b in zip(arrays, second.buffers[name]):
            np.testing.assert_array_equal(a, b)


def test_an_unbound_state_round_trips(tmp_path):
    lrcore.save(lrcore.Adam(lr=0.5, betas=(0.8, 0.9)), tmp_path / "fresh.ckpt")
    state = lrcore.load(tmp_path / "fresh.ckpt")
    assert repr(state) == repr(lrcore.Adam(lr=0.5, betas=(0.8, 0.9)))
    assert state.step_count == 0 and state.buffers == {}


def test_a_callable_lr_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="state.lr is a Python callable"):
        lrcore.save(lrcore.SGD(lr=lambda k: 0.1), tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "opt.npz"
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    lrcore.step(np.ones(4), np.ones(4), state)
    lrcore.save(state, path)
    lrcore.step(np.ones(4), np.ones(4), state)

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lrcore.save(state, path)
    assert os.listdir(tmp_path) == ["opt.npz"]
    assert lrcore.load(path).step_count == 1


KILL_WHILE_SAVING = """
import sys, numpy as np, lrcore
state = lrcore.Adam(lr=1e-3)
p = np.zeros(3_000_000, np.float32)
lrcore.step(p, np.ones_like(p), state)
lrcore.save(state, sys.argv[1])
print("ready", flush=True)
while True:
    lrcore.step(p, np.ones_like(p), state)
    lrcore.save(state, sys.argv[1])
"""


def test_a_process_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "opt.npz"
    child = subprocess.Popen([sys.executable, "-c", KILL_WHILE_SAVING, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.7)                      # several saves of ~36 MB are under way by now
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    state = lrcore.load(path)
    assert state.step_count >= 1
    assert state.buffers["exp_avg"][0].shape == (3_000_000,)


def write_foreign(path):
    np.savez(path, weights=np.ones(3))


def write_truncated(path):
    lrcore.save(lrcore.SGD(lr=0.1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_text(path):
    path.write_text("not a checkpoint")


def write_npy(path):
    with open(path, "wb") as f:
        np.save(f, np.ones(3))


def write_other_format(path):
    np.savez(path, lrcore=np.array(json.dumps({"format": "lrcore-checkpoint/99"})))


def write_bad_buffers(path):
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    lrcore.step(np.ones(4), np.ones(4), state)
    lrcore.save(state, path)
    with np.load(path) as data:
        header = data["lrcore"]
    np.savez(path, lrcore=header, **{"buffer:momentum_buffer:0": np.ones(7)})  # 7, not 4


@pytest.mark.parametrize("write, message", [
    (write_foreign, r"is not a readable lrcore checkpoint \(no lrcore header\)"),
    (write_truncated, r"is not a readable lrcore checkpoint"),
    (write_text, r"is not a readable lrcore checkpoint"),
    (write_npy, r"is not a readable lrcore checkpoint \(not an .npz archive\)"),
    (write_other_format, r"is not a readable lrcore checkpoint \(not the lrcore-checkpoint/1 format\)"),
    (write_bad_buffers, r"is not a valid lrcore checkpoint \(state_dict\['buffers'\]"),
])
def test_unreadable_files_raise_value_error_naming_the_file(tmp_path, write, message):
    path = tmp_path / "suspect.npz"
    write(path)
    with pytest.raises(ValueError, match=message) as caught:
        lrcore.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        lrcore.load(tmp_path / "nope.npz")
