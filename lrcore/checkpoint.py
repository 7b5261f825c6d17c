"""Checkpoints: an optimizer state in one .npz file, written atomically.

    lrcore.save(state, "opt.npz")
    state = lrcore.load("opt.npz")      # a new state of the saved class, schedule included

The file holds the optimizer's class name, lr (a number or an lrcore schedule's config),
hyperparameters, step_count, array_steps, the bound arrays' dtypes and shapes, the attached
ReduceLROnPlateau's settings and counters (JSON, under "lrcore"), and one array per buffer
("buffer:<name>:<i>"), so resuming is exact bit for bit.

save() writes a temporary file beside the target (".<name>.lrcore-<host>-<pid>-<random>.tmp"),
flushes it to disk, renames it over the target and flushes the directory: a process killed
mid-save leaves the previous checkpoint intact, and the next save of that target removes the
temporary files whose writing process is gone.

load() never trusts the sizes a file declares: it reads the archive member by member and
checks each .npy header (dtype, shape, shape × itemsize = the member's data size, members
stored uncompressed within the file) before reading any data, so memory stays bounded by the
file's real size.
"""
import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import zipfile
import zlib

import numpy as np

from lrcore import _validate, optimizers, schedules

FORMAT = "lrcore-checkpoint/1"
_CLASSES = {cls.__name__: cls for cls in (optimizers.SGD, optimizers.Adagrad,
                                          optimizers.RMSprop, optimizers.Adam,
                                          optimizers.AdamW)}
_HEADER_MEMBER = "lrcore.npy"
_BUFFER_MEMBER = re.compile(r"buffer:([A-Za-z_]+):(0|[1-9][0-9]{0,17})\.npy")
_HEADER_MAX_CHARS = 2 ** 24     # the JSON header; a checkpoint needs ~40 characters per array
_NPY_HEADER_MAX = 10_000        # numpy's own bound on a .npy header (its max_header_size)
_JSON_INT_MAX_DIGITS = 40       # counts fit int64 (19 digits); longer ints cost quadratic time
# What a corrupt or foreign file can make the reading raise (RecursionError: deeply nested
# JSON; NotImplementedError: an unsupported compression method; UnicodeDecodeError is a
# ValueError). MemoryError is not listed: nothing is allocated beyond the file's real size.
_CORRUPT = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError, EOFError, OSError, NotImplementedError, struct.error,
            zipfile.BadZipFile, zlib.error)


def save(state, path):
    """Write `state` to `path` (any name; .npz content), atomically.

    A symlink at `path` is kept and its target file replaced; an existing file keeps its
    permission bits, a new one gets 0o666 & ~umask as open() would give it."""
    if not isinstance(state, optimizers.Optimizer):
        raise TypeError(f"state must be an lrcore optimizer state, got {type(state).__name__}")
    path = _path_argument(path)
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
    if "plateau" in sd:     # a ReduceLROnPlateau's settings and counters (inf/NaN as JSON's)
        header["plateau"] = sd["plateau"]
    if "quantization_maps" in sd:   # 8-bit state: the maps its codes index, as float32 bits
        header["quantization_maps"] = {k: m.view(np.uint32).tolist()
                                       for k, m in sd["quantization_maps"].items()}
    arrays = {"lrcore": np.array(json.dumps(header))}
    for name, buffers in sd["buffers"].items():
        for i, b in enumerate(buffers):
            # bfloat16 as its bit patterns: .npy has no bfloat16 (the header says what it is)
            arrays[f"buffer:{name}:{i}"] = b.view(np.uint16) if b.dtype.itemsize == 2 \
                and _validate.format_of(b.dtype) == "bfloat16" else b
    target = os.path.realpath(path)         # through a symlink: the link stays a link
    directory, name = os.path.split(target)
    _remove_stale_temporaries(directory, name)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None                         # created with 0o666, which the umask reduces
    fd, tmp = _create_temporary(directory, name)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)             # makes the rename itself durable


def _path_argument(path):
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None


def _host_tag():
    """This machine's name reduced to [A-Za-z0-9_], so a temporary file's name parses back
    unambiguously (a pid means nothing on another host sharing the directory)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def _temporary_stem(name):
    """`name` as it appears in its temporary files' names: itself, or, past 128 bytes, its
    first 32 characters and a hash of it, so the temporary name stays within NAME_MAX (255)."""
    if len(os.fsencode(name)) <= 128:
        return name
    return f"{name[:32]}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"


def _temporary_pattern(name):
    """The names of `name`'s temporary files: .<stem>.lrcore-<host>-<pid>-<16 hex>.tmp."""
    return re.compile(re.escape(f".{_temporary_stem(name)}.lrcore-")
                      + r"([A-Za-z0-9_]+)-([0-9]{1,10})-[0-9a-f]{16}\.tmp")


def _create_temporary(directory, name):
    """(fd, path) of a new temporary file for target `name` in `directory`. Created with
    0o666 so the umask applies, as for a file open() creates (mkstemp would give 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{_temporary_stem(name)}.lrcore-{_host_tag()}-"
                                      f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _remove_stale_temporaries(directory, name):
    """Remove the temporary files of earlier saves of `name` whose process is gone (killed
    mid-save). Files of a live process (a concurrent save) or another host are kept. POSIX
    only: elsewhere there is no harmless way to ask whether a pid is alive."""
    if os.name != "posix":
        return
    pattern, host = _temporary_pattern(name), _host_tag()
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and match[1] == host and not _process_alive(int(match[2])):
            with contextlib.suppress(OSError):     # another save may have removed it first
                os.unlink(os.path.join(directory, entry))


def _process_alive(pid):
    if pid <= 0:                    # os.kill(0, ...) would address this process group
        return False
    try:
        os.kill(pid, 0)             # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):     # gone; a pid no process can have
        return False
    except PermissionError:         # it exists, owned by another user
        pass
    return True


def _fsync_directory(directory):
    """fsync `directory` so the rename survives a power cut; skipped where a directory cannot
    be opened or fsync'd (Windows, some file systems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def load(path):
    """A new optimizer state restored from a save()d file. A file that is not a readable
    lrcore checkpoint (truncated, corrupt, foreign, a directory) raises ValueError naming it;
    a missing one FileNotFoundError."""
    path = _path_argument(path)
    header, buffers = _read(path)
    cls = _CLASSES.get(header.get("optimizer"))
    if cls is None:
        raise ValueError(f"{path} holds an unknown optimizer {header.get('optimizer')!r}")
    try:
        lr = header["lr"]
        if isinstance(lr, dict):
            lr = schedules.deserialize(lr["schedule"])
        state = cls(lr=lr, **header["hyperparameters"])
        maps = header.get("quantization_maps")
        state.load_state_dict({
            "optimizer": header["optimizer"], "lr": lr,
            "hyperparameters": state.state_dict()["hyperparameters"],
            "step_count": header["step_count"], "skipped_steps": header["skipped_steps"],
            "array_steps": header["array_steps"],
            "arrays": [tuple(a) for a in header["arrays"]],
            "buffers": buffers,
            **({} if maps is None else {"quantization_maps": {
                k: np.array(v, dtype=np.uint32).view(np.float32) for k, v in maps.items()}}),
            **({"plateau": header["plateau"]} if "plateau" in header else {}),
        })
    except _CORRUPT as exc:
        raise ValueError(f"{path} is not a valid lrcore checkpoint ({exc})") from None
    return state


def _read(path):
    """(header, {buffer name: [array per param]}) of a checkpoint file, checked as the module
    docstring says; ValueError naming the file for anything unreadable."""
    try:
        with open(path, "rb") as f:
            try:
                archive = zipfile.ZipFile(f)
            except zipfile.BadZipFile as exc:
                raise ValueError(f"not an .npz archive: {exc}") from None
            with archive:
                return _read_archive(archive, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise
    except _CORRUPT as exc:
        raise ValueError(f"{path} is not a readable lrcore checkpoint ({exc})") from None


def _read_archive(archive, file_size):
    members = archive.infolist()
    names = [m.filename for m in members]
    if _HEADER_MEMBER not in names:
        raise ValueError("no lrcore header")
    if len(set(names)) != len(names):
        raise ValueError("a member name appears twice")
    for m in members:
        if m.filename != _HEADER_MEMBER and not _BUFFER_MEMBER.fullmatch(m.filename):
            raise ValueError(f"unexpected member {m.filename!r}")
        if m.flag_bits & 0x1:
            raise ValueError(f"member {m.filename!r} is encrypted")
        if m.compress_type != zipfile.ZIP_STORED or m.compress_size != m.file_size:
            raise ValueError(f"member {m.filename!r} is compressed (method "
                             f"{m.compress_type}); lrcore writes members uncompressed")
        if not 0 <= m.header_offset <= file_size - m.compress_size:
            raise ValueError(f"member {m.filename!r} declares {m.file_size} bytes, beyond "
                             f"the end of the file")

    def is_text(dtype, shape):
        return dtype.kind == "U" and shape == () and dtype.itemsize <= 4 * _HEADER_MAX_CHARS
    text = _read_member(archive, archive.getinfo(_HEADER_MEMBER), is_text,
                        f"a str of at most {_HEADER_MAX_CHARS} characters")
    header = json.loads(text, parse_int=_json_int)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"not the {FORMAT} format")
    arrays = header.get("arrays")
    if not isinstance(arrays, list):
        raise ValueError("the header's 'arrays' is not a list")
    for index, want in enumerate(arrays):
        if not (isinstance(want, list) and len(want) == 2 and want[0] in _validate.FORMATS
                and isinstance(want[1], list) and all(isinstance(n, int) for n in want[1])):
            raise ValueError(f"the header's arrays[{index}] is not a "
                             f"({' / '.join(_validate.FORMATS)}, shape) pair")
    # what each buffer must be: the layout the saved options give the saved arrays; without
    # one (an unknown optimizer, options it refuses) load() reports the header itself
    cls = _CLASSES.get(header.get("optimizer"))
    try:
        layout = cls(**header["hyperparameters"]).layout(
            [(fmt, tuple(shape)) for fmt, shape in arrays])
    except _CORRUPT:
        return header, {}

    found = {}
    for m in members:
        match = _BUFFER_MEMBER.fullmatch(m.filename)
        if not match:
            continue
        name, index = match[1], int(match[2])
        if index >= len(arrays):
            raise ValueError(f"member {m.filename!r} has no entry in the header's 'arrays'")
        if name not in layout:
            raise ValueError(f"member {m.filename!r} is not a buffer of these options "
                             f"({', '.join(layout) or 'none'})")
        fmt, want = layout[name][index]
        stored = (np.dtype("<u2") if fmt == "bfloat16" else
                  _validate.dtype_of(fmt).newbyteorder("<"))

        def is_expected(dtype, shape, want=want, stored=stored):
            return dtype == stored and tuple(shape) == want
        data = _read_member(archive, m, is_expected, f"a {stored} array of shape "
                            f"{want}{' (bfloat16 bits)' if fmt == 'bfloat16' else ''}")
        found.setdefault(name, {})[index] = data.astype(data.dtype.newbyteorder("="), copy=False) \
            .view(_validate.dtype_of(fmt))
    buffers = {}
    for name, by_index in found.items():
        if len(by_index) != len(arrays):
            absent = min(set(range(len(arrays))) - set(by_index))
            raise ValueError(f"member 'buffer:{name}:{absent}.npy' is missing")
        buffers[name] = [by_index[i] for i in range(len(arrays))]
    return header, buffers


def _read_member(archive, member, expected, description):
    """The array stored in `member` (a .npy), after checking its header: `expected(dtype,
    shape)` must hold, dims be >= 0, and shape × itemsize equal the member's data size; only
    then is the data read."""
    with archive.open(member) as stream:
        head = io.BytesIO(stream.read(12 + _NPY_HEADER_MAX))     # magic, length, header
        version = np.lib.format.read_magic(head)
        read_header, length_format = {
            (1, 0): (np.lib.format.read_array_header_1_0, "<H"),
            (2, 0): (np.lib.format.read_array_header_2_0, "<I")}.get(version, (None, None))
        if read_header is None:
            raise ValueError(f"member {member.filename!r} has .npy version {version}")
        (length,) = struct.unpack_from(length_format, head.getbuffer(), head.tell())
        if length > _NPY_HEADER_MAX:
            raise ValueError(f"member {member.filename!r} has a .npy header of {length} "
                             f"bytes, beyond numpy's bound of {_NPY_HEADER_MAX}")
        shape, fortran_order, dtype = read_header(head, max_header_size=_NPY_HEADER_MAX)
        if any(n < 0 for n in shape):
            raise ValueError(f"member {member.filename!r} declares a negative dimension: "
                             f"{shape}")
        if fortran_order or not expected(dtype, shape):
            raise ValueError(f"member {member.filename!r} holds {dtype} {shape}"
                             f"{' in Fortran order' if fortran_order else ''}; expected "
                             f"{description}")
        data_size = member.file_size - head.tell()
        if math.prod(shape) * dtype.itemsize != data_size:
            raise ValueError(f"member {member.filename!r} declares {dtype} {shape} but holds "
                             f"{data_size} bytes of data")
        stream.seek(head.tell())
        data = stream.read(data_size)
        if len(data) != data_size:
            raise ValueError(f"member {member.filename!r} is truncated")
        if stream.read(1):
            raise ValueError(f"member {member.filename!r} is longer than declared")
    if dtype.kind == "U":       # numpy's own conversion raises SystemError for bad code points
        return data.decode("utf-32-be" if dtype.str[0] == ">" else "utf-32-le").rstrip("\0")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _json_int(digits):
    if len(digits.lstrip("-")) > _JSON_INT_MAX_DIGITS:
        raise ValueError(f"the header holds an int of {len(digits)} digits")
    return int(digits)
