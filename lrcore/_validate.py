"""Input checks shared by both backends: the one place lrcore's error messages live.

The numpy backend runs these before every update. The compiled backend runs equivalent
boolean checks in C (src/_kernels.pyx) and, when one fails, calls check_step() here to raise,
so a user sees the same TypeError / ValueError whichever backend is active.
"""
import math
import numbers

import numpy as np

INT64_MAX = 2**63 - 1

# Storage formats, numbered as src/formats.h's lrc_format.
FORMATS = ("float32", "float64", "float16", "bfloat16")

# The dtype combinations a step takes (docs/reference.md), as src/kernels.h's LRC_COMBOS:
# (params, grads, buffers); the math runs in float64 for float64 params, else in float32.
COMBINATIONS = (
    ("float64", "float64", "float64"),
    ("float32", "float32", "float32"),
    ("float32", "float16", "float32"),
    ("float32", "bfloat16", "float32"),
    ("float16", "float16", "float16"),
    ("bfloat16", "bfloat16", "bfloat16"),
)

# Formats of optimizer state buffers (docs/reference.md, compact state): the storage formats, and "8bit",
# uint8 codes of bitsandbytes' block-wise dynamic quantization with a float32 absmax per block
# (lrcore/compact.py); numbered on as src/formats.h's lrc_format (LRC_CODES8 = 4).
BUFFER_FORMATS = FORMATS + ("8bit",)

# Per optimizer kind (src/_kernels.pyx's SGD, ADAGRAD, RMSPROP, ADAM), the buffer names in
# slot order: the kernels' lrc_array.buf[0..2], and the slot numbers of the stochastic
# rounding keys (the params are slot 3).
BUFFER_SLOTS = {
    0: ("momentum_buffer",),
    1: ("sum",),
    2: ("square_avg", "grad_avg", "momentum_buffer"),
    3: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
}
PARAM_SLOT = 3

# Buffers that are never negative: in 8-bit state they use the unsigned dynamic map (all 256
# codes for [0, 1]); the others the signed one. src/kernels.h's lrc_unsigned_slots agrees.
UNSIGNED_BUFFERS = frozenset(("sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"))

# The state_format keyword's values: None keeps buffers in the params' format.
STATE_FORMATS = (None, "float32", "bfloat16", "8bit")
PARAM_ROUNDINGS = ("nearest", "stochastic")

# bfloat16 memory without ml_dtypes (lrcore.torch passes torch.bfloat16 tensors this way): its
# uint16 bit patterns under a dtype tagged as bfloat16.
BFLOAT16_BITS = np.dtype(np.uint16, metadata={"lrcore.format": "bfloat16"})

# RuntimeError of a state used again by the thread that is stepping it (its lr callable): the
# state's lock is held, so waiting for it would never end.
REENTRANT_USE = ("this state is already in use by this thread: an lr callable (or code it "
                 "calls) cannot step, snapshot or load the state whose rate it computes")


def as_lists(params, grads):
    """Normalize `params` and `grads` to lists, checking they have the same structure.

    One ndarray pairs with one ndarray; a list/tuple with a list/tuple of the same length.
    """
    if isinstance(params, np.ndarray):
        if not isinstance(grads, np.ndarray):
            raise TypeError(f"grads must be a numpy.ndarray like params, got {_kind(grads)}")
        return [params], [grads]
    if not isinstance(params, (list, tuple)):
        raise TypeError(
            f"params must be a numpy.ndarray or a list/tuple of them, got {_kind(params)}")
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads must be a list/tuple like params, got {_kind(grads)}")
    if not params:
        raise ValueError("params must hold at least one array, got an empty sequence")
    if len(grads) != len(params):
        raise ValueError(
            f"grads must hold one array per param: expected {len(params)}, got {len(grads)}")
    return list(params), list(grads)


def check_step(params, grads, signature, buffers, layout=None):
    """Raise TypeError / ValueError for anything a step cannot take; return None if all is well.

    params, grads: lists (see as_lists). signature: what the state's first step recorded
    (see signature_of()), or None before it. buffers: the state's {name: [array per param]};
    layout: what they must be, {name: [(stored format, shape) per param]} (Optimizer.layout),
    or None for buffers stored as their params (COMBINATIONS).
    """
    for i, (p, g) in enumerate(zip(params, grads)):
        _check_array(p, f"params[{i}]", writeable=True)
        if g is None:          # a frozen parameter, left alone by this step
            continue
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads[{i}] must be a numpy.ndarray, got {_kind(g)}")
        grad_formats = [c[1] for c in COMBINATIONS if c[0] == format_of(p.dtype)]
        if format_of(g.dtype) not in grad_formats:
            allowed = " or ".join([", ".join(grad_formats[:-1])] * (len(grad_formats) > 1)
                                  + grad_formats[-1:])
            raise TypeError(f"grads[{i}] must have dtype {allowed} to match "
                            f"params[{i}] of dtype {format_of(p.dtype)}, got {dtype_name(g.dtype)}")
        if g.shape != p.shape:
            raise ValueError(f"grads[{i}] must have the shape of params[{i}], {p.shape}, "
                             f"got {g.shape}")
        _check_array(g, f"grads[{i}]", writeable=False)
    if signature is not None:
        bound = describe(signature)
        if len(bound) != len(params):
            raise ValueError(
                f"params must hold {len(bound)} arrays, as at this state's first step, "
                f"got {len(params)}")
        for i, (p, (fmt, shape)) in enumerate(zip(params, bound)):
            if format_of(p.dtype) != fmt or p.shape != shape:
                raise ValueError(
                    f"params[{i}] must have shape {shape} and dtype {fmt}, as at this "
                    f"state's first step, got shape {p.shape} and dtype {dtype_name(p.dtype)}")
    for name, arrays in buffers.items():
        for i, (p, b) in enumerate(zip(params, arrays)):
            fmt, shape = (buffer_format(p.dtype), p.shape) if layout is None \
                else layout[name][i]
            size = math.prod(shape)
            if not (isinstance(b, np.ndarray) and stored_format(b.dtype) == fmt
                    and b.dtype.isnative and b.size == size
                    and b.flags.c_contiguous and b.flags.aligned and b.flags.writeable):
                raise ValueError(
                    f"state buffer {name}[{i}] no longer matches params[{i}]: expected a "
                    f"writeable C-contiguous {fmt} array of {size} elements; "
                    f"restore the state with load_state_dict()")
    _check_overlaps(params, grads, buffers)


def refused_subclass(a):
    """Whether ndarray `a` is of a subclass whose arithmetic is not ndarray's element-wise
    arithmetic (numpy.matrix: * is a matrix product; masked arrays: a mask the update would
    have to honour), so an update written for ndarrays would compute something else."""
    return isinstance(a, (np.matrix, np.ma.MaskedArray))


def _check_array(a, name, writeable):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {_kind(a)}")
    if refused_subclass(a):
        raise TypeError(f"{name} must be a numpy.ndarray with element-wise arithmetic, got "
                        f"{type(a).__module__}.{_kind(a)}; pass its data as a plain ndarray "
                        f"(np.asarray)")
    if format_of(a.dtype) is None:
        raise TypeError(f"{name} must have dtype float32, float64, float16 or bfloat16, got "
                        f"{dtype_name(a.dtype)}")
    if not a.dtype.isnative:
        raise TypeError(f"{name} must be in native byte order, got dtype {a.dtype.str}; "
                        f"lrcore updates in place and never converts")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous, got a strided view; lrcore updates "
                         f"in place and never copies (np.ascontiguousarray makes a copy)")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its {a.dtype.itemsize}-byte dtype, "
                         f"got an unaligned buffer")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable, got a read-only array")


def _check_overlaps(params, grads, buffers):
    """Written arrays (params, buffers) must not share memory with any other array."""
    spans = []
    for i, p in enumerate(params):
        spans.append((p, f"params[{i}]", True))
    for i, g in enumerate(grads):
        if g is not None:
            spans.append((g, f"grads[{i}]", False))
    for name, arrays in buffers.items():
        for i, b in enumerate(arrays):
            spans.append((b, f"state buffer {name}[{i}]", True))
    # Sorted by start address, a span overlaps an earlier one iff it starts before the
    # largest end seen so far among the spans it may not overlap.
    bounds = []
    for a, name, written in spans:
        if a.nbytes:
            start = a.__array_interface__["data"][0]
            bounds.append((start, start + a.nbytes, name, written))
    bounds.sort(key=lambda s: s[0])
    last_any = last_written = (0, None)
    for start, end, name, written in bounds:
        end_seen, other = last_any if written else last_written
        if start < end_seen:
            if written and other.startswith("grads"):
                name, other = other, name
            raise ValueError(f"{name} shares memory with {other}; arrays lrcore writes "
                             f"must not overlap any other array of the step")
        if end > last_any[0]:
            last_any = (end, name)
        if written and end > last_written[0]:
            last_written = (end, name)


def check_counts(step_count, skipped_steps, array_steps, grads, counts_skips):
    """ValueError when this step could not be counted: step_count, the count of an array it
    updates (a non-None gradient), or with nonfinite="skip" skipped_steps, at 2**63 − 1, the
    largest count the state holds. Raised before anything is written."""
    if step_count >= INT64_MAX:
        raise ValueError(f"state.step_count is {step_count}, the largest count a state holds; "
                         f"no further step can be taken")
    if counts_skips and skipped_steps >= INT64_MAX:
        raise ValueError(f"state.skipped_steps is {skipped_steps}, the largest count a state "
                         f"holds; no further step can be taken with nonfinite='skip'")
    for i, (steps, g) in enumerate(zip(array_steps, grads)):
        if g is not None and steps >= INT64_MAX:
            raise ValueError(f"state.array_steps[{i}] is {steps}, the largest count a state "
                             f"holds; params[{i}] cannot be updated again")


def _finite(g):
    """Whether every element of array g is finite; a bfloat16 array (which may be bare
    uint16 bits, BFLOAT16_BITS) by its exponent bits."""
    if format_of(g.dtype) == "bfloat16":
        return bool(((g.view(np.uint16) & 0x7F80) != 0x7F80).all())
    return bool(np.isfinite(g).all())


def all_finite(grads):
    """Whether every element of every (non-None) gradient is finite."""
    return all(g is None or _finite(g) for g in grads)


def nonfinite_error(grads):
    """The FloatingPointError of nonfinite="raise", naming the first offending gradient."""
    index = next(i for i, g in enumerate(grads) if g is not None and not _finite(g))
    return FloatingPointError(f"grads[{index}] holds NaN or infinite values; with "
                              f"nonfinite='raise' nothing was updated")


def format_of(dtype):
    """The storage format name of a dtype ("float32", "float64", "float16", "bfloat16"), or
    None for any other. bfloat16 is recognized without importing ml_dtypes: its dtype (a
    2-byte numpy extension type named bfloat16), or BFLOAT16_BITS."""
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8) and dtype.type in (
            np.float16, np.float32, np.float64):
        return FORMATS[(4, 8, 2).index(dtype.itemsize)]
    if dtype.itemsize == 2 and (
            (dtype.kind == "V" and dtype.type.__name__ == "bfloat16" and dtype.fields is None)
            or (dtype.kind == "u" and (dtype.metadata or {}).get("lrcore.format") == "bfloat16")):
        return "bfloat16"
    return None


def buffer_format(dtype):
    """The format of the state buffers a param of this dtype gets (COMBINATIONS)."""
    fmt = format_of(dtype)
    return next(c[2] for c in COMBINATIONS if c[0] == fmt)


def stored_format(dtype):
    """The buffer format (BUFFER_FORMATS) arrays of `dtype` hold: format_of(dtype), or "8bit"
    for plain uint8 (codes), else None."""
    if dtype == np.uint8 and dtype.metadata is None:
        return "8bit"
    return format_of(dtype)


def state_format_of(param_format, size, state_format, min_8bit_size):
    """The format of the buffers of a param array of `param_format` and `size` elements under
    the state options: None -> as COMBINATIONS; "float32" / "bfloat16" -> that;
    "8bit" -> "8bit" from min_8bit_size elements on, below it "float32" (as bitsandbytes).
    float64 params keep float64 buffers (ValueError for a compact format)."""
    if state_format is None:
        return next(c[2] for c in COMBINATIONS if c[0] == param_format)
    if param_format == "float64":
        raise ValueError(f"state_format={state_format!r} is for float32, float16 and bfloat16 "
                         f"params; float64 params keep float64 buffers (state_format=None)")
    if state_format == "8bit" and size < min_8bit_size:
        return "float32"
    return state_format


def compact_options(state_format, param_rounding, seed, min_8bit_size):
    """The compact-state keywords of an optimizer, checked: (state_format, param_rounding,
    seed, min_8bit_size)."""
    if state_format not in STATE_FORMATS:
        raise ValueError(f"state_format must be one of {', '.join(map(repr, STATE_FORMATS))}, "
                         f"got {state_format!r}")
    if param_rounding not in PARAM_ROUNDINGS:
        raise ValueError(f"param_rounding must be one of "
                         f"{', '.join(map(repr, PARAM_ROUNDINGS))}, got {param_rounding!r}")
    for name, value, high in (("seed", seed, 2**64 - 1), ("min_8bit_size", min_8bit_size, INT64_MAX)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {_kind(value)}")
        if not 0 <= value <= high:
            raise ValueError(f"{name} must be an int in [0, {'2**64 - 1' if high > INT64_MAX else '2**63 - 1'}], "
                             f"got {'an int outside that range' if abs(value) > 2**64 else value}")
    return state_format, param_rounding, int(seed), int(min_8bit_size)


def dtype_name(dtype):
    """How messages name a dtype: its storage format if it has one, else numpy's name."""
    return format_of(dtype) or str(dtype)


def dtype_of(fmt):
    """A numpy dtype for arrays of format `fmt`: numpy's own (uint8 for "8bit" codes), or
    for bfloat16 ml_dtypes' when it is loaded (a user holding bfloat16 arrays has loaded it),
    else BFLOAT16_BITS."""
    if fmt == "8bit":
        return np.dtype(np.uint8)
    if fmt != "bfloat16":
        return np.dtype(fmt)
    try:
        dtype = np.dtype("bfloat16")
    except TypeError:
        return BFLOAT16_BITS
    return dtype if format_of(dtype) == "bfloat16" else BFLOAT16_BITS


def signature_of(arrays):
    """The int64 record of the arrays a state is bound to, from (dtype, shape) pairs:
    format number (FORMATS), ndim, dims... per array; the compiled checks read it directly."""
    record = []
    for dtype, shape in arrays:
        record += [FORMATS.index(format_of(dtype)), len(shape), *shape]
    return np.array(record, dtype=np.int64)


def describe(signature):
    """Decode signature_of() back into [(format name, shape), ...]."""
    out, pos, record = [], 0, signature.tolist()
    while pos < len(record):
        fmt, ndim = record[pos], record[pos + 1]
        out.append((FORMATS[fmt], tuple(record[pos + 2:pos + 2 + ndim])))
        pos += 2 + ndim
    return out


def positive(value, name):
    """Return `value` as a float if it is a finite real number > 0 (grad_scale,
    max_grad_norm); TypeError / ValueError naming `name` otherwise."""
    value = real(value, name, low=-math.inf)
    if not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def optional_positive(value, name):
    """None, or positive(value, name)."""
    return None if value is None else positive(value, name)


def real(value, name, *, low=0.0, high=math.inf, high_open=False):
    """Return `value` as a float if it is a real number in [low, high] (or [low, high)).

    NaN and infinities are rejected whatever the bounds, with a ValueError naming `name`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_kind(value)}")
    shown = value
    try:
        value = float(value)
    except OverflowError:       # an int beyond float range, e.g. 10**400
        value, shown = (math.inf if value > 0 else -math.inf), "an int too large for a float"
    in_range = low <= value < high if high_open else low <= value <= high
    if not (math.isfinite(value) and in_range):
        lower = "" if low == -math.inf else f" >= {low:g}"
        upper = "" if high == math.inf else f" and {'<' if high_open else '<='} {high:g}"
        shown = shown if isinstance(shown, str) else repr(value)
        raise ValueError(f"{name} must be a finite number{lower}{upper}, got {shown}")
    return value


def flag(value, name):
    """Return `value` as a bool if it is one (numpy bools included); TypeError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_kind(value)}")
    return bool(value)


def betas(value):
    """Return Adam's (beta1, beta2) as floats, each in [0, 1)."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}")
    return tuple(real(b, f"betas[{i}]", high=1.0, high_open=True) for i, b in enumerate(value))


def _kind(obj):
    return type(obj).__name__
