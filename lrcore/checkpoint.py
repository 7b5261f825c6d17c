"""Checkpoints: an optimizer state in one .npz file, written atomically.

    lrcore.save(state, "opt.npz")
    state = lrcore.load("opt.npz")      # a new state of the saved class, schedule included

The file holds the optimizer's class name, lr (a number or an lrcore schedule's config),
hyperparameters, step_count, array_steps, the bound arrays' dtypes and shapes (JSON, under
"lrcore"), and one array per buffer ("buffer:<name>:<i>"), so resuming is exact bit for bit.
save() writes a temporary file beside the target, flushes it to disk and renames it over the
target: a process killed mid-save leaves the previous checkpoint intact.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from lrcore import optimizers, schedules

FORMAT = "lrcore-checkpoint/1"
_CLASSES = {cls.__name__: cls for cls in (optimizers.SGD, optimizers.Adagrad,
                                          optimizers.RMSprop, optimizers.Adam,
                                          optimizers.AdamW)}


def save(state, path):
    """Write `state` to `path` (any name; .npz content), atomically."""
    if not isinstance(state, optimizers.Optimizer):
        raise TypeError(f"state must be an lrcore optimizer state, got {type(state).__name__}")
    sd = state.state_dict()
    lr = sd["lr"]
    if isinstance(lr, schedules.LearningRateSchedule):
        lr = {"schedule": schedules.serialize(lr)}
    elif callable(lr):
        raise TypeError("state.lr is a Python callable, which a checkpoint cannot hold; use a "
                        "number or an lrcore schedule")
    header = {"format": FORMAT, "optimizer": sd["optimizer"], "lr": lr,
              "hyperparameters": sd["hyperparameters"], "step_count": sd["step_count"],
              "skipped_steps": sd["skipped_steps"], "array_steps": sd["array_steps"],
              "arrays": sd["arrays"]}
    arrays = {"lrcore": np.array(json.dumps(header))}
    for name, buffers in sd["buffers"].items():
        for i, b in enumerate(buffers):
            arrays[f"buffer:{name}:{i}"] = b
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lrcore-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """A new optimizer state restored from a save()d file. A file that is not a readable
    lrcore checkpoint (truncated, corrupt, foreign) raises ValueError naming it."""
    path = os.fspath(path)
    header, buffers = _read(path)
    cls = _CLASSES.get(header.get("optimizer"))
    if cls is None:
        raise ValueError(f"{path} holds an unknown optimizer {header.get('optimizer')!r}")
    try:
        lr = header["lr"]
        if isinstance(lr, dict):
            lr = schedules.deserialize(lr["schedule"])
        state = cls(lr=lr, **header["hyperparameters"])
        state.load_state_dict({
            "optimizer": header["optimizer"], "lr": lr,
            "hyperparameters": state.state_dict()["hyperparameters"],
            "step_count": header["step_count"], "skipped_steps": header["skipped_steps"],
            "array_steps": header["array_steps"],
            "arrays": [tuple(a) for a in header["arrays"]],
            "buffers": {name: [arrays[i] for i in range(len(arrays))]
                        for name, arrays in buffers.items()},
        })
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a valid lrcore checkpoint ({exc})") from None
    return state


def _read(path):
    """(header, {buffer name: {index: array}}) of a checkpoint file."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            if "lrcore" not in data.files:
                raise ValueError("no lrcore header")
            header = json.loads(str(data["lrcore"]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"not the {FORMAT} format")
            buffers = {}
            for key in data.files:
                if key.startswith("buffer:"):
                    _, name, index = key.split(":")
                    buffers.setdefault(name, {})[int(index)] = data[key]
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable lrcore checkpoint ({exc})") from None
    return header, buffers
