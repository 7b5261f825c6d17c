"""lrcore.save / lrcore.load: exact resume, atomic writes, and clear errors."""
import io
import errno
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import lrcore
from lrcore import checkpoint, schedules


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
    (write_npy, r"is not a readable lrcore checkpoint \(not an .npz archive"),
    (write_other_format, r"is not a readable lrcore checkpoint \(not the lrcore-checkpoint/1 format\)"),
    (write_bad_buffers, r"is not a readable lrcore checkpoint \(member 'buffer:momentum_buffer:0.npy' "
                        r"holds float64 \(7,\); expected a float64 array of shape \(4,\)\)"),
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


# -- hostile files: every one gives ValueError naming it, without allocating what it claims --

def npy_bytes(descr, shape, data=b""):
    """A .npy member with a hand-written header (numpy would refuse some of these)."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return f.getvalue() + data


def header_npy(header):
    text = header if isinstance(header, str) else json.dumps(header)
    f = io.BytesIO()
    np.save(f, np.array(text))
    return f.getvalue()


def write_members(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)


def momentum_checkpoint(path):
    """A small valid checkpoint (SGD with momentum, two arrays) and its members."""
    state = lrcore.SGD(lr=0.1, momentum=0.9)
    params = [np.ones(4), np.ones((2, 3), np.float32)]
    lrcore.step(params, [np.ones(4), np.ones((2, 3), np.float32)], state)
    lrcore.save(state, path)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def header_of(members):
    return json.loads(str(np.load(io.BytesIO(members["lrcore.npy"]))))


def assert_unreadable(path, message=r"is not a (readable|valid) lrcore checkpoint"):
    with pytest.raises(ValueError, match=message) as caught:
        lrcore.load(path)
    assert str(path) in str(caught.value)


def test_truncated_at_many_offsets_is_a_value_error(tmp_path):
    path = tmp_path / "opt.npz"
    momentum_checkpoint(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted(set(range(0, len(data), 5)) | set(range(len(data) - 100, len(data)))):
        cut.write_bytes(data[:n])
        assert_unreadable(cut)


def test_every_single_byte_corruption_loads_or_is_a_value_error(tmp_path):
    """Flipping any byte either leaves a readable checkpoint (a timestamp, say) or gives
    ValueError naming the file: never another exception."""
    path = tmp_path / "opt.npz"
    momentum_checkpoint(path)
    good = lrcore.load(path).state_dict()
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    refused = 0
    for i in range(len(data)):
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        try:
            state = lrcore.load(bad)
        except ValueError as exc:
            assert str(bad) in str(exc)
            refused += 1
            continue
        loaded = state.state_dict()
        assert loaded["step_count"] == good["step_count"]
        for a, b in zip(loaded["buffers"]["momentum_buffer"], good["buffers"]["momentum_buffer"]):
            np.testing.assert_array_equal(a, b)      # the CRC guards the data
    assert refused > len(data) // 2


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, 1, 99, 0xFFFF])
def test_a_flipped_compression_method_is_a_value_error(tmp_path, method):
    path = tmp_path / "opt.npz"
    momentum_checkpoint(path)
    data = bytearray(path.read_bytes())
    flipped = 0
    for signature, offset in ((b"PK\x01\x02", 10), (b"PK\x03\x04", 8)):   # central, local
        at = data.find(signature)
        while at >= 0:
            data[at + offset:at + offset + 2] = method.to_bytes(2, "little")
            flipped += 1
            at = data.find(signature, at + 1)
    assert flipped == 2 * 3                   # lrcore.npy and two buffers, both headers each
    path.write_bytes(bytes(data))
    assert_unreadable(path, r"is not a readable lrcore checkpoint \(member 'lrcore.npy' is "
                            rf"compressed \(method {method}\)")


def test_a_compressed_member_is_refused(tmp_path):
    """np.savez_compressed's deflate would let a member's declared size exceed the file."""
    path = tmp_path / "opt.npz"
    members = momentum_checkpoint(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert_unreadable(path, r"member '.*' is compressed \(method 8\)")


def peak_bytes_while(call):
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("declared", [10 ** 12, 2 ** 61])
def test_a_member_declaring_huge_sizes_fails_fast_without_allocating(tmp_path, declared):
    """The JSON header and the .npy header agree on `declared` elements, the data holds 4:
    refused from the headers alone (numpy would allocate the declared 8 TB first)."""
    path = tmp_path / "huge.npz"
    header = header_of(momentum_checkpoint(path))
    header["arrays"][0] = ["float64", [declared]]
    write_members(path, [("lrcore.npy", header_npy(header)),
                         ("buffer:momentum_buffer:0.npy", npy_bytes("<f8", (declared,), bytes(32))),
                         ("buffer:momentum_buffer:1.npy", npy_bytes("<f4", (2, 3), bytes(24)))])
    started = time.perf_counter()
    peak = peak_bytes_while(lambda: assert_unreadable(
        path, rf"member 'buffer:momentum_buffer:0.npy' declares float64 \({declared},\) but "
              rf"holds 32 bytes of data"))
    assert time.perf_counter() - started < 5
    assert peak < 2 ** 20


def test_a_zip_entry_declaring_more_bytes_than_the_file_is_refused(tmp_path):
    """Both sizes of the first buffer's zip entries edited to 4 GB, the .npy header made to
    agree: refused before reading, as the 1 kB file cannot hold them."""
    path = tmp_path / "huge.npz"
    header = header_of(momentum_checkpoint(path))
    claimed, n = 2 ** 32 - 4, (2 ** 32 - 4 - 128) // 4
    assert len(npy_bytes("<f4", (n,))) + 4 * n == claimed          # a 128-byte .npy header
    header["arrays"][1] = ["float32", [n]]
    write_members(path, [("lrcore.npy", header_npy(header)),
                         ("buffer:momentum_buffer:0.npy", npy_bytes("<f8", (4,), bytes(32))),
                         ("buffer:momentum_buffer:1.npy", npy_bytes("<f4", (n,), bytes(24)))])
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x01\x02", 20), (b"PK\x03\x04", 18)):   # central, local
        at = data.rfind(signature)                                           # the last entry
        data[at + offset:at + offset + 8] = claimed.to_bytes(4, "little") * 2
    path.write_bytes(bytes(data))
    peak = peak_bytes_while(lambda: assert_unreadable(
        path, rf"member 'buffer:momentum_buffer:1.npy' declares {claimed} bytes, beyond the "
              rf"end of the file"))
    assert peak < 2 ** 20


def edited(changes=None, members=None, drop=(), header_text=None):
    """A writer of the momentum checkpoint with header keys changed, members replaced or
    added (name -> bytes) and members dropped."""
    def write(path):
        original = momentum_checkpoint(path)
        header = header_of(original)
        header.update(changes or {})
        out = dict(original, **{"lrcore.npy": header_npy(header_text or header)})
        out.update(members or {})
        write_members(path, [(k, v) for k, v in out.items() if k not in drop])
    return write


HOSTILE = [
    ("negative dim in both headers",
     edited({"arrays": [["float64", [-4]], ["float32", [2, 3]]]},
            {"buffer:momentum_buffer:0.npy": npy_bytes("<f8", (-4,))}),
     r"member 'buffer:momentum_buffer:0.npy' declares a negative dimension: \(-4,\)"),
    ("negative dim in the JSON header", edited({"arrays": [["float64", [-4]], ["float32", [2, 3]]]}),
     r"member 'buffer:momentum_buffer:0.npy' holds float64 \(4,\); expected a float64 array"),
    ("deeply nested JSON", edited(header_text="[" * 100_000 + "]" * 100_000),
     r"is not a readable lrcore checkpoint \(maximum recursion depth"),
    ("deeply nested lr", edited({"lr": {"schedule": json.loads("[" * 900 + "]" * 900)}}),
     r"is not a valid lrcore checkpoint \(config must be"),
    ("a 5000-digit step_count",
     edited(header_text='{"format": "lrcore-checkpoint/1", "step_count": ' + "9" * 5000 + "}"),
     r"the header holds an int of 5000 digits"),
    ("step_count 10**30", edited({"step_count": 10 ** 30}),
     r"is not a valid lrcore checkpoint \(state_dict\['step_count'\] must be an int in "
     r"\[0, 2\*\*63 - 1\], got an int outside int64\)"),
    ("array_steps entry 2**64", edited({"array_steps": [1, 2 ** 64]}),
     r"is not a valid lrcore checkpoint \(state_dict\['array_steps'\] must hold 2 ints in"),
    ("float32 data where float64 is declared",
     edited(members={"buffer:momentum_buffer:0.npy": npy_bytes("<f4", (4,), bytes(16))}),
     r"member 'buffer:momentum_buffer:0.npy' holds float32 \(4,\); expected a float64 array "
     r"of shape \(4,\)"),
    ("big-endian data", edited(members={"buffer:momentum_buffer:0.npy": npy_bytes(">f8", (4,), bytes(32))}),
     r"member 'buffer:momentum_buffer:0.npy' holds >f8 \(4,\); expected a float64 array"),
    ("a pickled object array, never unpickled",
     edited(members={"buffer:momentum_buffer:0.npy": npy_bytes("|O", (4,), b"\x80\x04N." * 8)}),
     r"member 'buffer:momentum_buffer:0.npy' holds object \(4,\)"),
    ("int header in the JSON arrays", edited({"arrays": [["int64", [4]], ["float32", [2, 3]]]}),
     r"the header's arrays\[0\] is not a \(float32 / float64 / float16 / bfloat16, shape\) pair"),
    ("the header as bytes", edited(members={"lrcore.npy": npy_bytes("|S4", (), b"{}  ")}),
     r"member 'lrcore.npy' holds \|S4 \(\); expected a str of at most 16777216 characters"),
    ("the header as an array of str",
     edited(members={"lrcore.npy": npy_bytes("<U2", (1,), "{}".encode("utf-32-le"))}),
     r"member 'lrcore.npy' holds <U2 \(1,\); expected a str"),
    ("a header beyond 2**24 characters", edited(members={"lrcore.npy": npy_bytes("<U16777217", ())}),
     r"member 'lrcore.npy' holds <U16777217 \(\); expected a str of at most 16777216 characters"),
    ("a header of invalid code points",
     edited(members={"lrcore.npy": npy_bytes("<U1", (), b"\xff\xff\xff\xff")}),
     r"is not a readable lrcore checkpoint \('utf-32-le' codec can't decode"),
    ("a .npy header longer than numpy's bound",
     edited(members={"lrcore.npy": npy_bytes("<U1", (1,) * 5000)}),
     r"member 'lrcore.npy' has a .npy header of 1[0-9]{4} bytes, beyond numpy's bound of 10000"),
    ("an extra member", edited(members={"notes.txt": b"hello"}), r"unexpected member 'notes.txt'"),
    ("a buffer past the arrays", edited(members={"buffer:momentum_buffer:2.npy": npy_bytes("<f8", (4,), bytes(32))}),
     r"member 'buffer:momentum_buffer:2.npy' has no entry in the header's 'arrays'"),
    ("an index with a leading zero", edited(members={"buffer:momentum_buffer:01.npy": b""}),
     r"unexpected member 'buffer:momentum_buffer:01.npy'"),
    ("a missing buffer", edited(drop=["buffer:momentum_buffer:0.npy"]),
     r"member 'buffer:momentum_buffer:0.npy' is missing"),
    ("all buffers missing", edited(drop=["buffer:momentum_buffer:0.npy", "buffer:momentum_buffer:1.npy"]),
     r"is not a valid lrcore checkpoint \(state_dict\['buffers'\] must hold \['momentum_buffer'\]"),
    ("a buffer of other options", edited(members={"buffer:square_avg:0.npy": npy_bytes("<f8", (4,), bytes(32)),
                                                 "buffer:square_avg:1.npy": npy_bytes("<f4", (2, 3), bytes(24))}),
     r"is not a readable lrcore checkpoint \(member 'buffer:square_avg:0.npy' is not a buffer of "
     r"these options \(momentum_buffer\)\)"),
    ("a member with surplus data",
     edited(members={"buffer:momentum_buffer:0.npy": npy_bytes("<f8", (4,), bytes(40))}),
     r"member 'buffer:momentum_buffer:0.npy' declares float64 \(4,\) but holds 40 bytes"),
    ("no arrays list", edited({"arrays": {"0": 1}}), r"the header's 'arrays' is not a list"),
    ("unknown optimizer", edited({"optimizer": "Lion"}), r"holds an unknown optimizer 'Lion'"),
    ("hyperparameters a list", edited({"hyperparameters": [1]}), r"is not a valid lrcore checkpoint"),
]


@pytest.mark.parametrize("write, message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_files_give_value_error_naming_the_file(tmp_path, write, message):
    path = tmp_path / "hostile.npz"
    write(path)
    assert_unreadable(path, message)


def test_a_duplicated_member_is_refused(tmp_path):
    path = tmp_path / "dup.npz"
    members = momentum_checkpoint(path)
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_members(path, list(members.items()) + [("buffer:momentum_buffer:0.npy",
                                                      members["buffer:momentum_buffer:0.npy"])])
    assert_unreadable(path, r"a member name appears twice")


def test_an_encrypted_member_is_refused(tmp_path):
    path = tmp_path / "opt.npz"
    momentum_checkpoint(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    data[at + 8] |= 1                         # general purpose flag bit 0: encrypted
    path.write_bytes(bytes(data))
    assert_unreadable(path, r"member 'lrcore.npy' is encrypted")


def test_a_directory_is_a_value_error_naming_it(tmp_path):
    assert_unreadable(tmp_path, r"is not a readable lrcore checkpoint")


def test_a_path_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int"):
        lrcore.load(3)
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got NoneType"):
        lrcore.save(lrcore.SGD(lr=0.1), None)


def test_a_bytes_path_works(tmp_path):
    path = os.fsencode(tmp_path / "opt.npz")
    lrcore.save(lrcore.SGD(lr=0.25), path)
    assert lrcore.load(path).lr == 0.25


# -- save: stale temporary files, symlinks, permission bits, the directory's fsync ----------

BLOCKED_SAVE = """
import sys, numpy as np, lrcore
real_savez = np.savez
def blocked(file, **arrays):     # the archive is written, the rename not yet done
    real_savez(file, **arrays)
    file.flush()
    print("writing", flush=True)
    sys.stdin.readline()
np.savez = blocked
state = lrcore.Adam(lr=1e-3)
p = np.zeros(int(sys.argv[2]), np.float32)
for _ in range(int(sys.argv[3])):
    lrcore.step(p, np.ones_like(p), state)
lrcore.save(state, sys.argv[1])
"""


def start_blocked_save(path, size=1_000_000, steps=1):
    """A child process inside lrcore.save(path): its temporary file is written; it finishes
    the save when a line arrives on its stdin. Returns the Popen once it is there."""
    child = subprocess.Popen([sys.executable, "-c", BLOCKED_SAVE, str(path), str(size), str(steps)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([child.stdout], [], [], 60)
    if not ready or child.stdout.readline().strip() != "writing":
        child.kill()
        child.wait()
        pytest.fail("the child process did not reach the middle of its save")
    return child


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)


def temporaries(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the pid check are POSIX")
def test_saves_killed_again_and_again_leave_one_temporary_at_most(tmp_path):
    """The issue's case (453 MiB after 30 kills): each save removes the file of the killed
    one before it, and a completed save leaves none."""
    target = tmp_path / "opt.npz"
    for _ in range(3):
        kill(start_blocked_save(target))
        (left,) = temporaries(tmp_path)
        assert left.startswith(".opt.npz.lrcore-") and os.path.getsize(tmp_path / left) > 8_000_000
    lrcore.save(lrcore.SGD(lr=0.5), target)
    assert temporaries(tmp_path) == [] and lrcore.load(target).lr == 0.5


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the pid check are POSIX")
def test_a_save_removes_the_killed_temporaries_of_its_target_only(tmp_path):
    target, other = tmp_path / "opt.npz", tmp_path / "other.npz"
    children = [start_blocked_save(path) for path in (target, target, target, other, other)]
    for child in children:          # all alive together: none removed another's file
        kill(child)
    left = temporaries(tmp_path)
    assert [n.split(".lrcore-")[0] for n in left] == [".opt.npz"] * 3 + [".other.npz"] * 2

    lrcore.save(lrcore.SGD(lr=0.5), target)
    assert temporaries(tmp_path) == left[3:]
    assert lrcore.load(target).lr == 0.5
    lrcore.save(lrcore.SGD(lr=0.25), other)
    assert temporaries(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="the pid check is POSIX")
def test_a_concurrent_save_of_a_live_process_is_left_to_finish(tmp_path):
    target = tmp_path / "opt.npz"
    child = start_blocked_save(target, size=1000, steps=3)
    try:
        (theirs,) = temporaries(tmp_path)
        lrcore.save(lrcore.SGD(lr=0.5), target)      # must not remove the live one's file
        assert temporaries(tmp_path) == [theirs]
        child.stdin.write("go on\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            kill(child)
    assert temporaries(tmp_path) == []
    assert lrcore.load(target).step_count == 3     # the child's save landed after ours


def test_temporaries_of_other_hosts_or_live_processes_are_kept(tmp_path):
    """A pid only identifies a process on this host: another host's file (a shared network
    directory) is never removed, nor one of a live pid (this very process)."""
    names = [".opt.npz.lrcore-some_other_host-999999-0123456789abcdef.tmp",
             f".opt.npz.lrcore-{checkpoint._host_tag()}-{os.getpid()}-0123456789abcdef.tmp",
             ".opt.npz.lrcore-x.tmp", "opt.npz.lrcore.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    lrcore.save(lrcore.SGD(lr=0.5), tmp_path / "opt.npz")
    assert temporaries(tmp_path) == sorted(names)


def test_saving_through_a_symlink_keeps_the_link(tmp_path):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "real.npz"
    lrcore.save(lrcore.SGD(lr=0.5), real)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    lrcore.save(lrcore.SGD(lr=0.25), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert lrcore.load(real).lr == 0.25
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "store"]
    assert os.listdir(tmp_path / "store") == ["real.npz"]     # written beside the real file


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    link = tmp_path / "latest.npz"
    link.symlink_to(tmp_path / "new.npz")
    lrcore.save(lrcore.SGD(lr=0.5), link)
    assert link.is_symlink() and lrcore.load(tmp_path / "new.npz").lr == 0.5


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o444, 0o755])
def test_an_existing_file_keeps_its_permission_bits(tmp_path, mode):
    path = tmp_path / "opt.npz"
    lrcore.save(lrcore.SGD(lr=0.5), path)
    os.chmod(path, mode)
    lrcore.save(lrcore.SGD(lr=0.25), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert lrcore.load(path).lr == 0.25


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_mode_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain", "wb"):
            pass
        lrcore.save(lrcore.SGD(lr=0.5), tmp_path / "opt.npz")
    finally:
        os.umask(previous)
    want = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "opt.npz").st_mode) == want


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd)))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", dst))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "opt.npz"
    lrcore.save(lrcore.SGD(lr=0.5), path)
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    file_stat, dir_stat = events[0][1], events[2][1]
    assert stat.S_ISREG(file_stat.st_mode) and os.path.samestat(file_stat, os.stat(path))
    assert stat.S_ISDIR(dir_stat.st_mode) and os.path.samestat(dir_stat, os.stat(tmp_path))


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO])
def test_a_directory_fsync_error_is_skipped_only_where_unsupported(tmp_path, monkeypatch, code):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "opt.npz"
    if code == errno.EIO:           # the rename may not be durable: the caller must know
        with pytest.raises(OSError, match=os.strerror(code)):
            lrcore.save(lrcore.SGD(lr=0.5), path)
    else:                           # a file system without directory fsync
        lrcore.save(lrcore.SGD(lr=0.5), path)
    assert lrcore.load(path).lr == 0.5 and temporaries(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the pid check are POSIX")
def test_a_long_target_name_gets_a_short_temporary_name_and_its_cleanup(tmp_path):
    """255 bytes is the longest file name: the temporary's name abbreviates it (a hash keeps
    targets that share a prefix apart) and the cleanup still finds it."""
    target = tmp_path / ("c" * 251 + ".npz")
    sibling = tmp_path / ("c" * 250 + "d.npz")
    for path in (target, sibling):
        kill(start_blocked_save(path, size=1000))
    left = temporaries(tmp_path)
    assert len(left) == 2 and all(len(n) <= 255 and n.startswith("." + "c" * 32 + "~")
                                  for n in left)
    lrcore.save(lrcore.SGD(lr=0.5), target)
    assert lrcore.load(target).lr == 0.5
    (kept,) = temporaries(tmp_path)            # the sibling target's file
    lrcore.save(lrcore.SGD(lr=0.5), sibling)
    assert temporaries(tmp_path) == [] and kept in left


# -- half precision: float16 / bfloat16 params and buffers, grad_scale, max_grad_norm --------

import math  # noqa: E402  (the mixed-precision part of this file)

import ml_dtypes  # noqa: E402
from lrcore import _validate, reference  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
HALF = {"float16": np.dtype(np.float16), "bfloat16": BF16, "bfloat16-bits": _validate.BFLOAT16_BITS}


def in_dtype(values, dtype):
    values, dtype = np.asarray(values, np.float32), np.dtype(dtype)
    if _validate.format_of(dtype) == "bfloat16":
        return values.astype(BF16).view(np.uint16).view(dtype)
    return values.astype(dtype)


def bits_of(a):
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


HALF_STATES = [
    lambda: lrcore.SGD(lr=0.05, momentum=0.9, nesterov=True, max_grad_norm=2.0),
    lambda: lrcore.Adagrad(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, max_grad_norm=9.0),
    lambda: lrcore.RMSprop(lr=schedules.ExponentialDecay(0.01, 5, 0.5), centered=True,
                           momentum=0.5, max_grad_norm=1.0, nonfinite="skip"),
    lambda: lrcore.Adam(lr=schedules.Warmup(schedules.CosineDecay(0.01, 30), 4), amsgrad=True,
                        max_grad_norm=3.0),
]


@pytest.mark.parametrize("half", list(HALF))
@pytest.mark.parametrize("make", HALF_STATES, ids=lambda f: type(f()).__name__)
def test_half_precision_save_at_10_load_and_10_more_equals_20_straight(backend, rng, tmp_path,
                                                                       make, half):
    dtype = HALF[half]
    start = [in_dtype(rng.standard_normal((5, 3)), dtype), in_dtype(rng.standard_normal(4), np.float32)]

    def run(params, state, steps):
        for _ in range(steps):
            grads = [in_dtype(2 * (reference.widen(p) - np.float32(3)), dtype) for p in params]
            lrcore.step(params, grads, state, grad_scale=8.0)

    straight = [p.copy() for p in start]
    state = make()
    run(straight, state, 20)

    resumed = [p.copy() for p in start]
    first = make()
    run(resumed, first, 10)
    lrcore.save(first, tmp_path / "opt.npz")
    second = lrcore.load(tmp_path / "opt.npz")
    assert second.max_grad_norm == first.max_grad_norm
    assert second.state_dict()["hyperparameters"] == first.state_dict()["hyperparameters"]
    assert second.state_dict()["arrays"] == [(_validate.format_of(dtype), (5, 3)), ("float32", (4,))]
    run(resumed, second, 10)

    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(bits_of(a), bits_of(b))
    assert second.last_grad_norm == state.last_grad_norm
    for name, arrays in state.buffers.items():
        for a, b in zip(arrays, second.buffers[name]):
            assert _validate.format_of(a.dtype) == _validate.format_of(b.dtype)
            np.testing.assert_array_equal(bits_of(a), bits_of(b))


def half_checkpoint(path, dtype):
    """A saved SGD-with-momentum state over one half-precision array of 4 and one float32 of
    (2, 3) (with float16 grads), and the archive's members."""
    state = lrcore.SGD(lr=0.1, momentum=0.9, max_grad_norm=1.0)
    params = [in_dtype(np.ones(4), dtype), np.ones((2, 3), np.float32)]
    lrcore.step(params, [in_dtype(np.ones(4), dtype), np.ones((2, 3), np.float16)], state)
    lrcore.save(state, path)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("half", ["bfloat16", "bfloat16-bits"])
@pytest.mark.parametrize("descr, shown", [("<f2", "float16"), ("<i2", "int16"), ("<f4", "float32"),
                                          (">u2", ">u2")])
def test_a_bfloat16_member_of_another_dtype_is_refused(tmp_path, half, descr, shown):
    path = tmp_path / "bf16.npz"
    members = half_checkpoint(path, HALF[half])
    assert header_of(members)["arrays"][0] == ["bfloat16", [4]]
    data = bytes(8 if descr[-1] == "2" else 16)
    members["buffer:momentum_buffer:0.npy"] = npy_bytes(descr, (4,), data)
    write_members(path, list(members.items()))
    assert_unreadable(path, rf"member 'buffer:momentum_buffer:0.npy' holds {shown} \(4,\); "
                            rf"expected a uint16 array of shape \(4,\) \(bfloat16 bits\)")


def test_a_float16_member_of_another_dtype_is_refused(tmp_path):
    path = tmp_path / "f16.npz"
    members = half_checkpoint(path, np.float16)
    members["buffer:momentum_buffer:0.npy"] = npy_bytes("<u2", (4,), bytes(8))
    write_members(path, list(members.items()))
    assert_unreadable(path, r"member 'buffer:momentum_buffer:0.npy' holds uint16 \(4,\); "
                            r"expected a float16 array of shape \(4,\)")


@pytest.mark.parametrize("half", list(HALF))
def test_half_precision_buffers_are_stored_as_their_bits(tmp_path, half):
    """The .npz holds a float16 buffer as float16 and a bfloat16 one as its uint16 bit
    patterns (the header says which), and loads back bit for bit, max_grad_norm included."""
    path = tmp_path / "half.npz"
    members = half_checkpoint(path, HALF[half])
    stored = np.load(io.BytesIO(members["buffer:momentum_buffer:0.npy"]))
    want = "float16" if half == "float16" else "uint16"
    assert stored.dtype == np.dtype(want)
    assert header_of(members)["hyperparameters"]["max_grad_norm"] == 1.0
    state = lrcore.load(path)
    assert state.max_grad_norm == 1.0
    (b, _) = state.buffers["momentum_buffer"]
    assert _validate.format_of(b.dtype) == _validate.format_of(HALF[half])
    coef = 1.0 / (math.sqrt(4 + 6) + 1e-6)      # clipped: every gradient is 1
    np.testing.assert_array_equal(bits_of(b), bits_of(in_dtype(np.full(4, np.float32(coef)),
                                                               HALF[half])))
