"""The error matrix: every bad input raises the documented exception and changes nothing.

Each case runs on both backends: the compiled path's checks defer to lrcore._validate for the
message, so the two must raise the same error for the same input.
"""
import math
import warnings

import ml_dtypes
import numpy as np
import pytest

import lrcore
from lrcore._validate import BFLOAT16_BITS


def f32(*shape):
    return np.arange(1, 1 + math.prod(shape), dtype=np.float32).reshape(shape)


def bf16(*shape):
    return f32(*shape).astype(ml_dtypes.bfloat16)


def bf16_bits(*shape):
    """bfloat16 as lrcore.torch passes it: uint16 bit patterns under BFLOAT16_BITS."""
    return bf16(*shape).view(np.uint16).view(BFLOAT16_BITS)


def readonly(a):
    a.flags.writeable = False
    return a


def unaligned_f32(n):
    raw = np.zeros(4 * n + 1, np.uint8)
    a = raw[1:].view(np.float32)
    assert not a.flags.aligned
    return a


# One state of each kernel kind, with every buffer its kind can have.
STATES = {
    "SGD": lambda: lrcore.SGD(lr=0.1, momentum=0.9),
    "Adagrad": lambda: lrcore.Adagrad(lr=0.1),
    "RMSprop": lambda: lrcore.RMSprop(lr=0.1, centered=True, momentum=0.9),
    "AdamW": lambda: lrcore.AdamW(lr=0.1, amsgrad=True),
}


def bound_state(*shapes, dtype=np.float32, make=STATES["SGD"]):
    """A state already stepped once on arrays of `shapes`."""
    state = make()
    lrcore.step([np.ones(s, dtype) for s in shapes], [np.ones(s, dtype) for s in shapes], state)
    return state


def matrix(a):
    """np.asmatrix without its PendingDeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(a)


p = f32(6)
shared = f32(8)

# (id, params, grads, state factory or None for each of STATES, exception, message regex)
CASES = [
    ("float64 grads for float32 params", f32(3), f32(3).astype(np.float64), None, TypeError,
     r"grads\[0\] must have dtype float32, float16 or bfloat16 to match params\[0\] of "
     r"dtype float32, got float64"),
    ("float16 grads for float64 params", f32(3).astype(np.float64), f32(3).astype(np.float16),
     None, TypeError, r"grads\[0\] must have dtype float64 to match params\[0\] of dtype "
     r"float64, got float16"),
    ("float32 grads for float16 params", f32(3).astype(np.float16), f32(3), None, TypeError,
     r"grads\[0\] must have dtype float16 to match params\[0\] of dtype float16, got float32"),
    ("bfloat16 grads for float16 params", f32(3).astype(np.float16), bf16(3), None, TypeError,
     r"grads\[0\] must have dtype float16 to match params\[0\] of dtype float16, got bfloat16"),
    ("float16 grads for bfloat16 params", bf16(3), f32(3).astype(np.float16), None, TypeError,
     r"grads\[0\] must have dtype bfloat16 to match params\[0\] of dtype bfloat16, got float16"),
    ("float32 grads for bfloat16 params", bf16(3), f32(3), None, TypeError,
     r"grads\[0\] must have dtype bfloat16 to match params\[0\] of dtype bfloat16, got float32"),
    ("bfloat16-bits params with float32 grads", bf16_bits(3), f32(3), None, TypeError,
     r"grads\[0\] must have dtype bfloat16 to match params\[0\] of dtype bfloat16, got float32"),
    ("float16 grads for bfloat16-bits params", bf16_bits(3), f32(3).astype(np.float16), None,
     TypeError, r"grads\[0\] must have dtype bfloat16 to match params\[0\] of dtype bfloat16, "
     r"got float16"),
    ("bfloat16 grads for float64 params", f32(3).astype(np.float64), bf16_bits(3), None,
     TypeError, r"grads\[0\] must have dtype float64 to match params\[0\] of dtype float64, "
     r"got bfloat16"),
    ("float64 grads for float16 params", f32(3).astype(np.float16), f32(3).astype(np.float64),
     None, TypeError, r"grads\[0\] must have dtype float16 to match params\[0\] of dtype "
     r"float16, got float64"),
    ("untagged uint16 grads for float32 params", f32(3), bf16(3).view(np.uint16), None,
     TypeError, r"grads\[0\] must have dtype float32, float16 or bfloat16 to match "
     r"params\[0\] of dtype float32, got uint16"),
    ("untagged uint16 params", bf16(3).view(np.uint16), bf16(3).view(np.uint16), None,
     TypeError, r"params\[0\] must have dtype float32, float64, float16 or bfloat16, got uint16"),
    ("float32 grads for the second, bfloat16 array", [f32(3), bf16(4)], [bf16(3), f32(4)], None,
     TypeError, r"grads\[1\] must have dtype bfloat16 to match params\[1\] of dtype bfloat16, "
     r"got float32"),
    ("unaligned bfloat16 params", np.zeros(7, np.uint8)[1:].view(BFLOAT16_BITS), bf16_bits(3),
     None, ValueError, r"params\[0\] must be aligned to its 2-byte dtype"),
    ("integer params", np.arange(3), np.arange(3), None, TypeError,
     r"params\[0\] must have dtype float32, float64, float16 or bfloat16, got int64"),
    ("complex params", f32(3).astype(np.complex64), f32(3).astype(np.complex64), None,
     TypeError, r"params\[0\] must have dtype float32, float64, float16 or bfloat16, got "
     r"complex64"),
    ("big-endian params", f32(3).astype(">f4"), f32(3).astype(">f4"), None, TypeError,
     r"params\[0\] must be in native byte order, got dtype >f4"),
    ("big-endian float16 params", f32(3).astype(">f2"), f32(3).astype(">f2"), None, TypeError,
     r"params\[0\] must be in native byte order, got dtype >f2"),
    ("big-endian grads", f32(3), f32(3).astype(">f4"), None, TypeError,
     r"grads\[0\] must be in native byte order, got dtype >f4"),
    ("params not an array", [1.0, 2.0], [1.0, 2.0], None, TypeError,
     r"params\[0\] must be a numpy.ndarray, got float"),
    ("params a scalar", 1.0, 1.0, None, TypeError,
     r"params must be a numpy.ndarray or a list/tuple of them, got float"),
    ("grads list for one array", f32(3), [f32(3)], None, TypeError,
     r"grads must be a numpy.ndarray like params, got list"),
    ("grads array for a list", [f32(3)], f32(3), None, TypeError,
     r"grads must be a list/tuple like params, got ndarray"),
    ("grads element not an array", [f32(3)], [[1.0, 2.0, 3.0]], None, TypeError,
     r"grads\[0\] must be a numpy.ndarray, got list"),
    ("shape mismatch", f32(2, 3), f32(3, 2), None, ValueError,
     r"grads\[0\] must have the shape of params\[0\], \(2, 3\), got \(3, 2\)"),
    ("count mismatch", [f32(3), f32(2)], [f32(3)], None, ValueError,
     r"grads must hold one array per param: expected 2, got 1"),
    ("empty params", [], [], None, ValueError,
     r"params must hold at least one array, got an empty sequence"),
    ("strided params", f32(8)[::2], f32(4), None, ValueError,
     r"params\[0\] must be C-contiguous, got a strided view"),
    ("Fortran-ordered params", np.asfortranarray(f32(3, 4)), np.asfortranarray(f32(3, 4)),
     None, ValueError, r"params\[0\] must be C-contiguous"),
    ("strided grads", f32(4), f32(8)[::2], None, ValueError,
     r"grads\[0\] must be C-contiguous, got a strided view"),
    ("read-only params", readonly(f32(3)), f32(3), None, ValueError,
     r"params\[0\] must be writeable, got a read-only array"),
    ("unaligned params", unaligned_f32(5), f32(5), None, ValueError,
     r"params\[0\] must be aligned to its 4-byte dtype, got an unaligned buffer"),
    ("unaligned grads", f32(5), unaligned_f32(5), None, ValueError,
     r"grads\[0\] must be aligned to its 4-byte dtype"),
    ("grads is params", p, p, None, ValueError,
     r"grads\[0\] shares memory with params\[0\]; arrays lrcore writes must not overlap"),
    ("grads overlap params", shared[:6], shared[2:], None, ValueError,
     r"grads\[0\] shares memory with params\[0\]"),
    ("grads overlap another param", [shared[:4], f32(4)], [f32(4), shared[3:7]], None,
     ValueError, r"grads\[1\] shares memory with params\[0\]"),
    ("same param twice", [p, p], [f32(6), f32(6)], None, ValueError,
     r"params\[1\] shares memory with params\[0\]"),
    ("state bound to another shape", f32(4), f32(4), lambda: bound_state((3,)), ValueError,
     r"params\[0\] must have shape \(3,\) and dtype float32, as at this state's first step, "
     r"got shape \(4,\) and dtype float32"),
    ("state bound to another dtype", f32(3).astype(np.float64), f32(3).astype(np.float64),
     lambda: bound_state((3,)), ValueError, r"params\[0\] must have shape \(3,\) and dtype float32"),
    ("state bound to more arrays", f32(3), f32(3), lambda: bound_state((3,), (2,)), ValueError,
     r"params must hold 2 arrays, as at this state's first step, got 1"),
    ("lr callable returns NaN", f32(3), f32(3), lambda: lrcore.SGD(lr=lambda k: float("nan")),
     ValueError, r"lr\(0\) must be a finite number >= 0, got nan \(returned by the lr callable\)"),
    ("lr callable returns negative", f32(3), f32(3), lambda: lrcore.SGD(lr=lambda k: -1),
     ValueError, r"lr\(0\) must be a finite number >= 0, got -1.0"),
    ("lr callable returns a string", f32(3), f32(3), lambda: lrcore.SGD(lr=lambda k: "0.1"),
     TypeError, r"lr\(0\) must be a real number, got str"),
    ("lr callable returns a huge int", f32(3), f32(3), lambda: lrcore.SGD(lr=lambda k: 10**400),
     ValueError, r"lr\(0\) must be a finite number >= 0, got an int too large for a float"),
    # subclasses whose arithmetic is not element-wise ndarray arithmetic
    ("numpy.matrix params", matrix(f32(2, 2)), matrix(f32(2, 2)), None, TypeError,
     r"params\[0\] must be a numpy.ndarray with element-wise arithmetic, got "
     r"numpy.matrix"),
    ("masked grads", f32(3), np.ma.masked_array(f32(3), mask=[0, 1, 0]), None, TypeError,
     r"grads\[0\] must be a numpy.ndarray with element-wise arithmetic, got "
     r"numpy.ma.MaskedArray"),
    ("masked params", [f32(3), np.ma.masked_array(f32(3))], [f32(3), f32(3)], None, TypeError,
     r"params\[1\] must be a numpy.ndarray with element-wise arithmetic"),
]


def snapshot(params, state):
    arrays = params if isinstance(params, (list, tuple)) else [params]
    copies = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
    return copies, state.state_dict()


def assert_unchanged(params, state, before):
    arrays = params if isinstance(params, (list, tuple)) else [params]
    copies, state_dict = before
    for a, c in zip(arrays, copies):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, c)
    after = state.state_dict()
    assert after.keys() == state_dict.keys()
    for key in ("step_count", "array_steps", "arrays", "hyperparameters"):
        assert after[key] == state_dict[key], key
    for name, arrays in state_dict["buffers"].items():
        for got, want in zip(after["buffers"][name], arrays):
            np.testing.assert_array_equal(got, want)


def bound_like(params, make):
    """A state bound by a good step to float32 arrays shaped like `params`, so the next step
    goes through the compiled checks (a fresh state is checked in Python before binding)."""
    arrays = params if isinstance(params, (list, tuple)) else [params]
    if not arrays:
        return make()
    return bound_state(*[a.shape if isinstance(a, np.ndarray) else (3,) for a in arrays],
                       make=make)


ARRAY_CASES = [c for c in CASES if c[3] is None]
STATE_CASES = [c for c in CASES if c[3] is not None]


def check_raises_and_changes_nothing(params, grads, state, exc, message):
    before = snapshot(params, state)
    with pytest.raises(exc, match=message):
        lrcore.step(params, grads, state)
    assert_unchanged(params, state, before)


@pytest.mark.parametrize("optimizer", list(STATES))
@pytest.mark.parametrize("bound", [False, True], ids=["first-step", "bound-state"])
@pytest.mark.parametrize("case", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_bad_input_raises_and_changes_nothing(backend, case, bound, optimizer):
    _, params, grads, _, exc, message = case
    make = STATES[optimizer]
    state = bound_like(params, make) if bound else make()
    check_raises_and_changes_nothing(params, grads, state, exc, message)


@pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_bad_input_for_the_state_raises_and_changes_nothing(backend, case):
    _, params, grads, make_state, exc, message = case
    check_raises_and_changes_nothing(params, grads, make_state(), exc, message)


def test_a_bad_array_late_in_the_list_leaves_the_earlier_ones_untouched(backend):
    params = [f32(4), f32(3), f32(5)]
    grads = [f32(4), f32(3), f32(5).astype(np.float64)]
    state = bound_state((4,), (3,), (5,), make=STATES["AdamW"])
    check_raises_and_changes_nothing(params, grads, state, TypeError,
                                     r"grads\[2\] must have dtype float32")


def test_read_only_and_shared_grads_are_accepted(backend):
    g = readonly(np.full(4, 2.0, np.float32))
    params = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    lrcore.step(params, [g, g], lrcore.SGD(lr=0.5))     # one gradient read twice is fine
    np.testing.assert_array_equal(params[1], [-1.0] * 4)


def test_disjoint_views_of_one_buffer_are_accepted(backend):
    """A flat parameter buffer split into views, as frameworks lay weights out."""
    flat = np.zeros(10, np.float32)
    params = [flat[:4], flat[4:]]
    lrcore.step(params, [np.ones(4, np.float32), np.ones(6, np.float32)], lrcore.SGD(lr=1.0))
    np.testing.assert_array_equal(flat, -np.ones(10))


# (optimizer, keywords, exception, message regex)
BAD_HYPERPARAMETERS = [
    (lrcore.SGD, dict(lr=-0.1), ValueError, r"lr must be a finite number >= 0, got -0.1"),
    (lrcore.SGD, dict(lr=float("nan")), ValueError, r"lr must be a finite number >= 0, got nan"),
    (lrcore.SGD, dict(lr=float("inf")), ValueError, r"lr must be a finite number >= 0, got inf"),
    (lrcore.SGD, dict(lr="0.1"), TypeError, r"lr must be a real number, got str"),
    (lrcore.SGD, dict(lr=None), TypeError, r"lr must be a real number, got NoneType"),
    (lrcore.SGD, dict(momentum=-0.5), ValueError, r"momentum must be a finite number >= 0, got -0.5"),
    (lrcore.SGD, dict(momentum=float("nan")), ValueError, r"momentum must be a finite number >= 0"),
    (lrcore.SGD, dict(dampening=1.5), ValueError, r"dampening must be a finite number >= 0 and <= 1, got 1.5"),
    (lrcore.SGD, dict(weight_decay=-1e-4), ValueError, r"weight_decay must be a finite number >= 0"),
    (lrcore.SGD, dict(nesterov=True), ValueError,
     r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.0"),
    (lrcore.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
     r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.1"),
    (lrcore.SGD, dict(nesterov="yes", momentum=0.9), TypeError, r"nesterov must be a bool, got str"),
    (lrcore.SGD, dict(maximize=1), TypeError, r"maximize must be a bool, got int"),
    (lrcore.Adam, dict(betas=(1.0, 0.999)), ValueError,
     r"betas\[0\] must be a finite number >= 0 and < 1, got 1.0"),
    (lrcore.AdamW, dict(betas=(0.9, -0.1)), ValueError,
     r"betas\[1\] must be a finite number >= 0 and < 1, got -0.1"),
    (lrcore.Adam, dict(betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\), got 0.9"),
    (lrcore.Adam, dict(eps=-1e-8), ValueError, r"eps must be a finite number >= 0, got -1e-08"),
    (lrcore.AdamW, dict(weight_decay=float("nan")), ValueError, r"weight_decay must be a finite number >= 0"),
    (lrcore.Adam, dict(amsgrad=1), TypeError, r"amsgrad must be a bool, got int"),
    (lrcore.RMSprop, dict(alpha=-0.1), ValueError, r"alpha must be a finite number >= 0, got -0.1"),
    (lrcore.RMSprop, dict(momentum=-1.0), ValueError, r"momentum must be a finite number >= 0"),
    (lrcore.RMSprop, dict(centered="no"), TypeError, r"centered must be a bool, got str"),
    (lrcore.RMSprop, dict(eps=float("inf")), ValueError, r"eps must be a finite number >= 0, got inf"),
    (lrcore.Adagrad, dict(lr_decay=-0.1), ValueError, r"lr_decay must be a finite number >= 0"),
    (lrcore.Adagrad, dict(initial_accumulator_value=-1.0), ValueError,
     r"initial_accumulator_value must be a finite number >= 0"),
    (lrcore.Adagrad, dict(lr=float("nan")), ValueError, r"lr must be a finite number >= 0, got nan"),
    (lrcore.Adagrad, dict(maximize="true"), TypeError, r"maximize must be a bool, got str"),
] + [   # Python ints beyond float range: a ValueError naming the argument, not OverflowError
    (cls, {name: sign * 10**400}, ValueError,
     rf"{name} must be a finite number >= 0.*, got an int too large for a float")
    for cls, names in ((lrcore.SGD, ("lr", "momentum", "dampening", "weight_decay")),
                       (lrcore.Adagrad, ("lr_decay", "initial_accumulator_value", "eps")),
                       (lrcore.RMSprop, ("alpha", "eps", "weight_decay", "momentum")),
                       (lrcore.AdamW, ("lr", "eps", "weight_decay")))
    for name in names for sign in (1, -1)
] + [(lrcore.Adam, dict(betas=(0.9, 10**400)), ValueError,
      r"betas\[1\] must be a finite number >= 0 and < 1, got an int too large for a float")
] + [   # max_grad_norm: a finite number > 0 (or None), keyword-only, in every optimizer
    (cls, dict(max_grad_norm=value), exc, message)
    for cls in (lrcore.SGD, lrcore.Adagrad, lrcore.RMSprop, lrcore.Adam, lrcore.AdamW)
    for value, exc, message in (
        (0, ValueError, r"max_grad_norm must be a finite number > 0, got 0.0"),
        (-1, ValueError, r"max_grad_norm must be a finite number > 0, got -1.0"),
        (float("nan"), ValueError, r"max_grad_norm must be a finite number, got nan"),
        (float("inf"), ValueError, r"max_grad_norm must be a finite number, got inf"),
        (-float("inf"), ValueError, r"max_grad_norm must be a finite number, got -inf"),
        (10**400, ValueError, r"max_grad_norm must be a finite number, got an int too large"),
        ("x", TypeError, r"max_grad_norm must be a real number, got str"),
        (True, TypeError, r"max_grad_norm must be a real number, got bool"),
        ([1.0], TypeError, r"max_grad_norm must be a real number, got list"))
]


@pytest.mark.parametrize("cls, kwargs, exc, message", BAD_HYPERPARAMETERS,
                         ids=[f"{c[0].__name__}-{c[1]}" for c in BAD_HYPERPARAMETERS])
def test_invalid_hyperparameters_are_rejected(cls, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        cls(**kwargs)


def test_setting_an_invalid_lr_keeps_the_old_one():
    state = lrcore.SGD(lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        state.lr = -1
    assert state.lr == 0.1


def test_max_grad_norm_is_keyword_only():
    with pytest.raises(TypeError):
        lrcore.SGD(0.1, 0.0, 0.0, False, 0.0, False, 1.0)      # one positional too many


# grad_scale of lrcore.step: a finite real number > 0 (None: 1)
BAD_GRAD_SCALES = [
    (0, ValueError, r"grad_scale must be a finite number > 0, got 0.0"),
    (0.0, ValueError, r"grad_scale must be a finite number > 0, got 0.0"),
    (-1, ValueError, r"grad_scale must be a finite number > 0, got -1.0"),
    (-0.0, ValueError, r"grad_scale must be a finite number > 0, got -0.0"),
    (float("nan"), ValueError, r"grad_scale must be a finite number, got nan"),
    (float("inf"), ValueError, r"grad_scale must be a finite number, got inf"),
    (np.float32("inf"), ValueError, r"grad_scale must be a finite number, got inf"),
    (10**400, ValueError, r"grad_scale must be a finite number, got an int too large"),
    ("2", TypeError, r"grad_scale must be a real number, got str"),
    (True, TypeError, r"grad_scale must be a real number, got bool"),
    (np.array(2.0), TypeError, r"grad_scale must be a real number, got ndarray"),
    (1j, TypeError, r"grad_scale must be a real number, got complex"),
]


@pytest.mark.parametrize("optimizer", list(STATES))
@pytest.mark.parametrize("bound", [False, True], ids=["first-step", "bound-state"])
@pytest.mark.parametrize("value, exc, message", BAD_GRAD_SCALES,
                         ids=[repr(c[0])[:20] for c in BAD_GRAD_SCALES])
def test_a_bad_grad_scale_raises_and_changes_nothing(backend, value, exc, message, bound,
                                                     optimizer):
    params = [f32(5), bf16(3)]
    grads = [bf16(5), bf16(3)]
    state = STATES[optimizer]()
    if bound:
        lrcore.step([p.copy() for p in params], grads, state)
    before = snapshot(params, state)
    with pytest.raises(exc, match=message):
        lrcore.step(params, grads, state, grad_scale=value)
    assert_unchanged(params, state, before)
    assert state.skipped_steps == 0 and state.last_grad_norm is None


def test_grad_scale_is_keyword_only(backend):
    with pytest.raises(TypeError):
        lrcore.step(f32(3), f32(3), lrcore.SGD(lr=0.1), 2.0)
