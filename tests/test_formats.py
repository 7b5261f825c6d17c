"""Storage formats: the float16 and bfloat16 loads and stores (src/formats.h) and their numpy
twins (lrcore.reference.widen / narrow), against independent expectations.

The expectations are numpy's own float16 conversion (astype) and ml_dtypes' bfloat16
conversion, both round to nearest even, for every non-NaN value; NaNs follow formats.h's rule
written out here on the bit patterns: a NaN is stored quieted, its sign and its top payload
bits kept (float16: sign | 0x7e00 | bits 13..22 of the float32; bfloat16: the float32's top
half | 0x0040). The kernels are reached through steps whose arithmetic is exact or mirrored
here in numpy float32: a first momentum step stores b = g·1, an lr = 0 step stores p back, and
p − lr·(g·2**-k) with a chosen lr produces any float32 value on its way to the store.
"""
import ml_dtypes
import numpy as np
import pytest

import lrcore
from lrcore import _backend, _validate, reference
from conftest import LEVELS

BF16 = np.dtype(ml_dtypes.bfloat16)
BITS = _validate.BFLOAT16_BITS

ALL16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16)       # every 16-bit pattern
F16_NAN = ((ALL16 & 0x7C00) == 0x7C00) & ((ALL16 & 0x3FF) != 0)
BF16_NAN = ((ALL16 & 0x7F80) == 0x7F80) & ((ALL16 & 0x7F) != 0)


def u32(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def u16(a):
    return np.ascontiguousarray(a).view(np.uint16)


def f16_nan_store(bits32):
    """formats.h's NaN rule for float16, from float32 bit patterns."""
    bits32 = bits32.astype(np.uint32)
    return (((bits32 >> 16) & 0x8000) | 0x7E00 | ((bits32 >> 13) & 0x3FF)).astype(np.uint16)


def bf16_nan_store(bits32):
    return ((bits32.astype(np.uint32) >> 16) | 0x40).astype(np.uint16)


def expected_store(x, fmt):
    """The bit patterns float32 values `x` must be stored as in `fmt` ("float16" or
    "bfloat16"): numpy's / ml_dtypes' RNE conversion, NaNs by the rule above."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    nan = np.isnan(x)
    with np.errstate(all="ignore"):
        if fmt == "float16":
            out = u16(np.where(nan, 0, x).astype(np.float16))
            return np.where(nan, f16_nan_store(u32(x)), out)
        out = u16(np.where(nan, 0, x).astype(BF16))
        return np.where(nan, bf16_nan_store(u32(x)), out)


def expected_load(patterns, fmt):
    """The float32 bit patterns of `patterns` (uint16) loaded from `fmt` and then used in an
    arithmetic operation: non-NaN values as numpy / ml_dtypes widen them (exactly), NaNs as
    their exact bit widening, quieted (IEEE 754: an operation on a signalling NaN quiets it)."""
    p = patterns.astype(np.uint32)
    if fmt == "float16":
        nan = ((p & 0x7C00) == 0x7C00) & ((p & 0x3FF) != 0)
        widened = ((p & 0x8000) << 16) | 0x7F800000 | ((p & 0x3FF) << 13)
        values = u32(np.where(nan, 0, patterns).astype(np.uint16).view(np.float16).astype(np.float32))
    else:
        nan = ((p & 0x7F80) == 0x7F80) & ((p & 0x7F) != 0)
        widened = p << 16
        values = u32(np.where(nan, 0, patterns).astype(np.uint16).view(BF16).astype(np.float32))
    return np.where(nan, widened | 0x00400000, values)


def as_format(patterns, dtype):
    """uint16 patterns as an array of `dtype` (float16, ml_dtypes bfloat16 or BITS)."""
    return np.ascontiguousarray(patterns, dtype=np.uint16).view(dtype)


@pytest.fixture(params=[f"cython-{level}" for level in LEVELS] + ["numpy"])
def route(request):
    """Each version of the compiled conversions, and the numpy backend."""
    if request.param == "numpy":
        request.getfixturevalue("numpy_backend")
        yield request.param
        return
    request.getfixturevalue("compiled")
    _backend._kernels.set_vector_level(request.param.split("-", 1)[1])
    try:
        yield request.param
    finally:
        _backend._kernels.set_vector_level(None)


HALF = [("float16", np.dtype(np.float16)), ("bfloat16", BF16), ("bfloat16", BITS)]
HALF_IDS = ["float16", "bfloat16", "bfloat16-bits"]


def test_the_expectations_agree_with_the_bit_rules_they_replace():
    """Sanity of the expectations themselves: numpy's float16 conversion and ml_dtypes'
    bfloat16 conversion keep every non-NaN value exactly, so they are usable as references."""
    for fmt, nan, dtype in (("float16", F16_NAN, np.float16), ("bfloat16", BF16_NAN, BF16)):
        widened = expected_load(ALL16, fmt).view(np.float32)
        assert (expected_store(widened[~nan], fmt) == ALL16[~nan]).all()
        assert (expected_store(widened[nan], fmt) == (ALL16[nan] | (0x200 if fmt == "float16"
                                                                    else 0x40))).all()
    # RNE: ties to even at 1 + half an ulp, both formats
    assert u16(np.float32(1 + 2**-11).astype(np.float16)) == 0x3C00
    assert u16(np.float32(1 + 3 * 2**-11).astype(np.float16)) == 0x3C02
    assert u16(np.array([1 + 2**-8], np.float32).astype(BF16)) == 0x3F80
    assert u16(np.array([1 + 3 * 2**-8], np.float32).astype(BF16)) == 0x3F82


# -- the kernels' loads: a first momentum step stores b = g·1 in float32 ------------------

@pytest.mark.parametrize("fmt, dtype", HALF, ids=HALF_IDS)
def test_grad_loads_into_float32_are_exact_for_every_pattern(route, fmt, dtype):
    """float32 params with float16 / bfloat16 grads: the float32 momentum buffer of the first
    step is the widened gradient (times 1), for all 65536 patterns."""
    g = as_format(ALL16, dtype)
    p = np.zeros(ALL16.size, np.float32)
    state = lrcore.SGD(lr=0.0, momentum=0.9)
    with np.errstate(all="ignore"):
        lrcore.step(p, g, state)
    b = state.buffers["momentum_buffer"][0]
    assert b.dtype == np.float32
    np.testing.assert_array_equal(u32(b), expected_load(ALL16, fmt))


@pytest.mark.parametrize("fmt, dtype", HALF, ids=HALF_IDS)
def test_half_buffers_store_back_what_they_loaded(route, fmt, dtype):
    """Half-precision params and grads: the first momentum step stores b = g (load, ·1,
    store): every non-NaN pattern unchanged, every NaN quieted with sign and payload kept."""
    g = as_format(ALL16, dtype)
    p = np.zeros(ALL16.size, dtype=np.float32)
    p = as_format(expected_store(p, fmt), dtype)
    state = lrcore.SGD(lr=0.0, momentum=0.9)
    with np.errstate(all="ignore"):
        lrcore.step(p, g, state)
    b = state.buffers["momentum_buffer"][0]
    assert b.dtype == dtype
    np.testing.assert_array_equal(u16(b), expected_store(expected_load(ALL16, fmt).view(np.float32),
                                                         fmt))
    quiet = 0x200 if fmt == "float16" else 0x40
    nan = F16_NAN if fmt == "float16" else BF16_NAN
    np.testing.assert_array_equal(u16(b)[~nan], ALL16[~nan])
    np.testing.assert_array_equal(u16(b)[nan], ALL16[nan] | quiet)


@pytest.mark.parametrize("fmt, dtype", HALF, ids=HALF_IDS)
def test_half_params_survive_an_lr_0_step(route, fmt, dtype):
    """p ← store(load(p) − 0·0): every non-NaN param pattern unchanged (±0 included), NaNs
    quieted."""
    p = as_format(ALL16, dtype).copy()
    g = as_format(np.zeros(ALL16.size, np.uint16), dtype)
    with np.errstate(all="ignore"):
        lrcore.step(p, g, lrcore.SGD(lr=0.0))
    nan = F16_NAN if fmt == "float16" else BF16_NAN
    np.testing.assert_array_equal(u16(p)[~nan], ALL16[~nan])
    np.testing.assert_array_equal(u16(p)[nan], ALL16[nan] | (0x200 if fmt == "float16" else 0x40))


# -- the kernels' stores of arbitrary float32 values -------------------------------------

def mantissas():
    """float32 values in [1, 2) that land on every rounding case at some exponent: random
    ones, ties at every bit position (lowest set bit b, so a tie for float16 subnormals at
    exponent b − 25, for normals at b = 11, for bfloat16 at b = 8 and its subnormals), each
    ± one float32 ulp, and the carries at the top of the binade."""
    rng = np.random.default_rng(7)
    out = list(1 + rng.integers(0, 2**23, 160) * 2.0**-23)
    for b in range(1, 24):
        for n in (0, 1, 2**(b - 1) - 1 if b > 1 else 0, int(rng.integers(0, 2**(b - 1))) if b > 1 else 0):
            m = 1 + (2 * n + 1) * 2.0**-b
            out += [m, m - 2.0**-23, m + 2.0**-23]
    out += [1.0, 1 + 2**-23, 2 - 2**-23, 2 - 2**-10, 2 - 2**-11, 2 - 2**-8, 2 - 2**-9, 1.5]
    return sorted({float(np.float32(m)) for m in out if 1 <= m < 2})


MANTISSAS = mantissas()
# (format, exponent range of the grads' powers of two, grad_scale exponents k): x = M·2**(j − k)
# covers each format's whole rounding range and beyond (0 and inf), float32 subnormals and the
# float32 overflow of lr·g included.
STORE_RANGES = {"float16": (range(-24, 16), (-113, -2, 3, 120)),
                "bfloat16": (range(-133, 128), (-1, 0, 7))}


def store_inputs(fmt, dtype, rng):
    """(p, g) arrays of `dtype` whose step p − M·(g·2**-k) makes the float32 values to store."""
    js, _ = STORE_RANGES[fmt]
    powers = np.array([2.0**j for j in js])
    # p = 0 against ±2**j; signed zeros and infinities; random values (full float32 mantissas
    # after the arithmetic, with cancellation)
    p = [np.zeros(2 * powers.size), np.array([0.0, 0.0, -0.0, -0.0, np.inf, -np.inf, np.inf,
                                              -np.inf, 0.0, 0.0, 1.0, -1.0])]
    g = [np.concatenate([powers, -powers]), np.array([0.0, -0.0, 0.0, -0.0, np.inf, np.inf,
                                                      -np.inf, -np.inf, np.inf, -np.inf,
                                                      2.0**-30, -2.0**-30])]
    p.append(rng.standard_normal(512) * 2.0**rng.integers(-20, 14, 512))
    g.append(rng.standard_normal(512) * 2.0**rng.integers(-20, 14, 512))
    cast = (lambda a: np.asarray(a, np.float32).astype(np.float16)) if fmt == "float16" else \
        (lambda a: np.asarray(a, np.float32).astype(BF16))
    p, g = (u16(cast(np.concatenate(a))) for a in (p, g))
    return as_format(p, dtype), as_format(g, dtype)


@pytest.mark.parametrize("fmt, dtype", HALF, ids=HALF_IDS)
def test_params_store_float32_results_as_numpy_and_ml_dtypes_round(route, fmt, dtype):
    """SGD on half-precision params computes x = p − lr·(g·2**-k) in float32 and stores it:
    the stored bits equal numpy's float16 / ml_dtypes' bfloat16 rounding of the same float32
    computation (NaNs, e.g. inf − inf, by the NaN rule), for every mantissa and exponent."""
    rng = np.random.default_rng(11)
    p0, g = store_inputs(fmt, dtype, rng)
    widen = expected_load(u16(p0), fmt).view(np.float32), expected_load(u16(g), fmt).view(np.float32)
    _, ks = STORE_RANGES[fmt]
    p = p0.copy()
    state = lrcore.SGD(lr=1.0)
    checked = 0
    for k in ks:
        scale = np.float32(2.0**-k)
        for m in MANTISSAS:
            p[...] = p0
            state.lr = m
            with np.errstate(all="ignore"):
                lrcore.step(p, g, state, grad_scale=2.0**k)
                x = widen[0] - np.float32(m) * (widen[1] * scale)
            want = expected_store(x, fmt)
            if not np.array_equal(u16(p), want):
                bad = np.flatnonzero(u16(p) != want)[:5]
                raise AssertionError(f"{fmt}: lr={m!r}, grad_scale=2**{k}: float32 "
                                     f"{[hex(v) for v in u32(x)[bad]]} stored as "
                                     f"{[hex(v) for v in u16(p)[bad]]}, expected "
                                     f"{[hex(v) for v in want[bad]]}")
            checked += x.size
    assert checked > 100_000


@pytest.mark.parametrize("target, bits", [
    (65504.0, 0x7BFF), (65519.99609375, 0x7BFF), (65520.0, 0x7C00), (65536.0, 0x7C00),
    (2.0**-24, 0x0001), (2.0**-25, 0x0000), (2.0**-25 + 2.0**-48, 0x0001),
    (3 * 2.0**-25, 0x0002), (2.0**-14 - 2.0**-25, 0x0400), (1e-45, 0x0000), (3e38, 0x7C00),
])
def test_float16_boundaries(route, target, bits):
    """Named float16 boundaries through a step (p = 0 − lr·(∓1)) and through narrow."""
    p = np.zeros(40, np.float16)        # vector blocks and the scalar tail
    state = lrcore.SGD(lr=float(np.float32(target)))
    with np.errstate(over="ignore"):
        lrcore.step(p, np.array([-1.0, 1.0] * 20, np.float16), state)
    assert u16(p).tolist() == [bits, bits | 0x8000] * 20
    assert u16(reference.narrow(np.array([target, -target], np.float32),
                                np.dtype(np.float16))).tolist() \
        == [bits, bits | 0x8000]


# -- lrcore.reference.widen / narrow --------------------------------------------------------

@pytest.mark.parametrize("fmt, dtype", HALF, ids=HALF_IDS)
def test_reference_widen_is_exact_for_every_pattern(fmt, dtype):
    w = reference.widen(as_format(ALL16, dtype))
    assert w.dtype == np.float32
    nan = F16_NAN if fmt == "float16" else BF16_NAN
    want = expected_load(ALL16, fmt)
    np.testing.assert_array_equal(u32(w)[~nan], want[~nan])
    # NaNs widened bit for bit (a signalling NaN stays one until an operation quiets it)
    np.testing.assert_array_equal(u32(w)[nan], _raw_widen(fmt)[nan])


def _raw_widen(fmt):
    p = ALL16.astype(np.uint32)
    if fmt == "float16":
        exp = p & 0x7C00
        return np.where(exp == 0x7C00, ((p & 0x8000) << 16) | 0x7F800000 | ((p & 0x3FF) << 13), 0)
    return p << 16


def float32_sample():
    """A large set of float32 values: random bit patterns (NaNs with every payload among
    them), every float16 value and the midpoints between neighbours ± one float32 ulp, the
    same for bfloat16, and named boundaries."""
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)]
    for fmt in ("float16", "bfloat16"):
        nan = F16_NAN if fmt == "float16" else BF16_NAN
        values = expected_load(ALL16[~nan], fmt).view(np.float32).astype(np.float64)
        values = np.unique(values[np.isfinite(values)])
        mid = ((values[:-1] + values[1:]) / 2).astype(np.float32)    # exact: a few more bits
        parts += [u32(mid), u32(mid) + np.uint32(1), u32(mid) - np.uint32(1),
                  u32(values.astype(np.float32))]
    named = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99609375, 65520, 65536,
                      2.0**-24, 2.0**-25, 2.0**-26, 3 * 2.0**-25, 1e-45, -1e-45,
                      np.finfo(np.float32).max, np.finfo(np.float32).tiny], np.float32)
    parts.append(u32(named))
    return np.concatenate(parts).view(np.float32)


FLOAT32_SAMPLE = float32_sample()


def test_reference_narrow_float16_equals_numpy_and_the_nan_rule():
    x = FLOAT32_SAMPLE
    got = u16(reference.narrow(x, np.dtype(np.float16)))
    np.testing.assert_array_equal(got, expected_store(x, "float16"))
    nan = np.isnan(x)
    assert nan.sum() > 100
    np.testing.assert_array_equal(got[nan], f16_nan_store(u32(x)[nan]))


@pytest.mark.parametrize("dtype", [BF16, BITS], ids=["ml_dtypes", "bits"])
def test_reference_narrow_bfloat16_equals_ml_dtypes_and_the_nan_rule(dtype):
    x = FLOAT32_SAMPLE
    out = reference.narrow(x, dtype)
    assert out.dtype == dtype
    got = u16(out)
    np.testing.assert_array_equal(got, expected_store(x, "bfloat16"))
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[nan], bf16_nan_store(u32(x)[nan]))


@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (0,), (0, 4)])
@pytest.mark.parametrize("dtype", [np.dtype(np.float16), BF16, BITS, np.dtype(np.float32)],
                         ids=["float16", "bfloat16", "bfloat16-bits", "float32"])
def test_widen_and_narrow_keep_the_shape(shape, dtype):
    """Arrays in, arrays of the same shape out, 0-d included (the numpy backend writes the
    results back with param[...] = ...)."""
    a = np.full(shape, 0x3F80 if dtype.itemsize == 2 and dtype != np.float16 else 0,
                np.uint16 if dtype.itemsize == 2 else dtype).view(dtype)
    w = reference.widen(a)
    assert isinstance(w, np.ndarray) and w.shape == shape and w.dtype == np.float32
    n = reference.narrow(w, dtype)
    assert isinstance(n, np.ndarray) and n.shape == shape and n.dtype == dtype
    assert u16(n).tolist() == u16(a).tolist() if dtype.itemsize == 2 else np.array_equal(n, a)


# -- the tables the two sides share -------------------------------------------------------

def test_every_conversion_level_this_cpu_runs_is_tested(compiled):
    """The portable version always runs; the x86 ones where the CPU has them; the level in use
    shows in build_info() and comes back to the best after a test."""
    assert LEVELS[0] == "portable"
    assert set(LEVELS) <= set(_backend._kernels.VECTOR_LEVELS)
    best = lrcore.build_info()["vector_level"]
    assert best == LEVELS[-1]
    for level in LEVELS:
        _backend._kernels.set_vector_level(level)
        assert lrcore.build_info()["vector_level"] == level
    _backend._kernels.set_vector_level(None)
    assert lrcore.build_info()["vector_level"] == best
    with pytest.raises(ValueError, match="name must be one of"):
        _backend._kernels.set_vector_level("sse9")


def test_the_kernels_instantiate_exactly_the_python_combinations(compiled):
    got = _backend._kernels.combinations()
    assert len(got) == len(set(got))
    assert set(got) == set(_validate.COMBINATIONS)


def test_the_norm_order_constants_agree(compiled):
    assert (_backend._kernels.CHUNK, _backend._kernels.LANES) == (reference.CHUNK, reference.LANES)
