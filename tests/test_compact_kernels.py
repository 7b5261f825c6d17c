"""The compact optimizer state's block primitives (src/compact.h) against COMPACT_SPEC.md.

Every expectation here is computed independently of lrcore, from the spec's rules:
- the two dynamic maps rebuilt with numpy from bitsandbytes' formula (and, when bitsandbytes is
  installed, compared with create_dynamic_map itself);
- the nearest code by brute force: the distance to each of the 256 map entries in float64,
  argmin (ties to the lower index), NaN to the zero code; a second, exact formulation (the number
  of thresholds below n, as Fractions) checks the brute force on the values that matter;
- stochastic rounding from splitmix64 / lowbias32 in pure Python for a few values and in numpy
  (uint64 / uint32 wrap-around) for many.
Each primitive runs at every vector level this CPU runs (_kernels.VECTOR_LEVELS through
set_vector_level, restored afterwards): all must give the same bits.
"""
import bisect
from fractions import Fraction

import numpy as np
import pytest

from lrcore import _backend
from conftest import LEVELS

kernels = _backend._kernels
pytestmark = pytest.mark.skipif(kernels is None, reason="compiled kernels not built")

BLOCK = 256
U64 = 2**64
M64 = U64 - 1


def f32(bits):
    """float32 values of uint32 patterns."""
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def u32(values):
    """uint32 patterns of float32 values."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


# ---- the maps ---------------------------------------------------------------------------------

def torch_linspace_float32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=torch.float32) as torch's vectorized CPU kernel
    computes it (its AVX2 / AVX-512 builds, which any AVX2 CPU runs): step = float32((end -
    start) / (steps - 1)); element i is start + step*i for i < steps // 2, else
    end - step*(steps - 1 - i), each rounded once (the compiler fuses it into an FMA). The
    float64 expression is exact here (at most 32 significant bits), so one cast rounds once."""
    start, end = np.float32(start), np.float32(end)
    step = (end - start) / np.float32(steps - 1)
    i = np.arange(steps, dtype=np.float64)
    first = np.float64(start) + np.float64(step) * i
    second = np.float64(end) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def dynamic_map(signed):
    """bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), in numpy:
    for exponent i = 0..6 the means of linspace(0.1, 1, 2**i + 1 (signed) or 2**(i+1) + 1)
    (float32 (b[:-1] + b[1:]) / 2) times float32(10**(i - 6)) (negated too when signed), plus 0
    and 1, sorted."""
    values = [np.float32(0), np.float32(1)]
    for i in range(7):
        k = 2**i + 1 if signed else 2 ** (i + 1) + 1
        b = torch_linspace_float32(0.1, 1.0, k)
        means = (b[:-1] + b[1:]) / np.float32(2)
        scale = np.float32(10.0 ** (i - 6))
        values += list(scale * means)
        if signed:
            values += list(-scale * means)
    out = np.sort(np.array(values, dtype=np.float32))
    assert out.shape == (256,)
    return out


MAPS = {False: dynamic_map(True), True: dynamic_map(False)}     # keyed by `unsigned`
ZERO = {False: 127, True: 0}
THRESHOLDS = {u: (m[:-1].astype(np.float64) + m[1:].astype(np.float64)) / 2 for u, m in MAPS.items()}


def test_maps_follow_the_formula():
    for unsigned in (False, True):
        got = kernels.q8_map(unsigned)
        assert got.dtype == np.float32 and got.shape == (256,)
        np.testing.assert_array_equal(u32(got), u32(MAPS[unsigned]))
        assert got[ZERO[unsigned]] == 0 and got[255] == 1.0
        assert np.all(np.diff(got.astype(np.float64)) > 0)
    signed = MAPS[False]
    # 127 negatives (the exact negations of the first 127 positives), 0, 127 positives, 1.0
    np.testing.assert_array_equal(u32(signed[:127]), u32(-signed[128:255][::-1]))
    assert signed[0] == np.float32(-0.99296874)
    # q8_map returns a copy
    m = kernels.q8_map(False)
    m[:] = 5
    np.testing.assert_array_equal(u32(kernels.q8_map(False)), u32(signed))


def test_maps_equal_bitsandbytes():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("bitsandbytes.functional")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch's DEFAULT CPU kernels round linspace's start + step*i twice, which "
                    "gives bitsandbytes another map (BUGS.md); the kernels hold the AVX2 one")
    for unsigned in (False, True):
        expected = functional.create_dynamic_map(signed=not unsigned).numpy()
        np.testing.assert_array_equal(u32(kernels.q8_map(unsigned)), u32(expected))


# ---- the quantization rule, independently -------------------------------------------------

def ref_absmax(x):
    """Per block of 256: the float32 whose pattern is the largest (bits & 0x7fffffff)."""
    bits = u32(x.ravel()) & np.uint32(0x7FFFFFFF)
    nblocks = -(-bits.size // BLOCK)
    padded = np.zeros(nblocks * BLOCK, dtype=np.uint32)
    padded[:bits.size] = bits
    return f32(padded.reshape(nblocks, BLOCK).max(axis=1))


def ref_normalized(x, absmax):
    """n_i = x_i * (1.0f / absmax) in float32."""
    with np.errstate(all="ignore"):
        inv = np.float32(1) / absmax
        return x.ravel() * np.repeat(inv, BLOCK)[:x.size]


def ref_codes_of(n, unsigned):
    """The nearest map entry to each float32 n by brute force: |n - map[c]| for all 256 c in
    float64, argmin (the first minimum: ties to the lower index); NaN -> the zero code.

    n is clamped to [-1, 1] first (beyond, 1.0 / the lowest entry stay nearest), so every
    distance that can decide is exact in float64: the nearest two entries a <= n <= b are
    either 0 and a neighbour (n - 0 is exact; b - n can only tie n - 0 if n ~ b / 2) or within a
    factor 6 of n, so n - a and b - n need at most 27 significant bits."""
    m = MAPS[unsigned].astype(np.float64)
    n = np.asarray(n, dtype=np.float32).ravel()
    out = np.empty(n.size, dtype=np.uint8)
    v = np.clip(n.astype(np.float64), -1.0, 1.0)
    for s in range(0, n.size, 8192):
        chunk = v[s:s + 8192, None]
        out[s:s + 8192] = np.argmin(np.abs(chunk - m[None, :]), axis=1)
    out[np.isnan(n)] = ZERO[unsigned]
    return out


def ref_codes_counted(n, unsigned):
    """The spec's second formulation, #{c : t_c < n} (binary search on the float64 thresholds;
    NaN -> the zero code), for sweeps too large for the brute force (which it equals:
    test_reference_formulations_agree)."""
    n64 = np.asarray(n, dtype=np.float32).astype(np.float64).ravel()
    out = np.searchsorted(THRESHOLDS[unsigned], n64, side="left").astype(np.uint8)
    out[np.isnan(n64)] = ZERO[unsigned]
    return out


FRACTION_THRESHOLDS = {u: [Fraction(float(a)) / 2 + Fraction(float(b)) / 2 for a, b in zip(m[:-1], m[1:])]
                       for u, m in MAPS.items()}


def exact_code(value, unsigned):
    """The spec's other formulation, exactly: #{c : t_c < n} with Fractions."""
    value = float(value)
    if value != value:
        return ZERO[unsigned]
    if value in (float("inf"), float("-inf")):
        return 255 if value > 0 else 0
    return bisect.bisect_left(FRACTION_THRESHOLDS[unsigned], Fraction(value))


def ref_quantize(x, unsigned):
    absmax = ref_absmax(x)
    codes = ref_codes_of(ref_normalized(x, absmax), unsigned)
    return codes.reshape(x.shape), absmax


def ref_dequantize(codes, absmax, unsigned):
    with np.errstate(all="ignore"):
        scale = np.repeat(absmax, BLOCK)[:codes.size]
        return (MAPS[unsigned][codes.ravel()] * scale).reshape(codes.shape)


# ---- levels ---------------------------------------------------------------------------------

@pytest.fixture(params=LEVELS)
def level(request):
    """Run at vector level request.param (one of conftest's LEVELS), then the best again."""
    kernels.set_vector_level(request.param)
    yield request.param
    kernels.set_vector_level(None)


def test_every_level_is_listed_and_the_best_runs():
    assert LEVELS and LEVELS[0] == "portable"
    assert kernels.build_info()["vector_level"] == LEVELS[-1]


def check_quantize(x, unsigned, expected=None):
    """q8_quantize(x) equals the reference bit for bit, and q8_dequantize of its result too,
    both block by block and through the multi-block calls."""
    want_codes, want_absmax = expected if expected is not None else ref_quantize(x, unsigned)
    want_decoded = ref_dequantize(want_codes, want_absmax, unsigned)
    for blocks in (False, True):
        codes, absmax = kernels.q8_quantize(x, unsigned, blocks=blocks)
        assert codes.dtype == np.uint8 and codes.shape == x.shape
        assert absmax.dtype == np.float32 and absmax.shape == (-(-x.size // BLOCK),)
        np.testing.assert_array_equal(u32(absmax), u32(want_absmax))
        bad = np.flatnonzero(codes.ravel() != want_codes.ravel())
        assert bad.size == 0, (f"{bad.size} codes differ (blocks={blocks}), first at {bad[0]}: "
                               f"x={x.ravel()[bad[0]]!r} got {codes.ravel()[bad[0]]} "
                               f"want {want_codes.ravel()[bad[0]]}")
        decoded = kernels.q8_dequantize(codes, absmax, unsigned, blocks=blocks)
        assert decoded.dtype == np.float32 and decoded.shape == x.shape
        np.testing.assert_array_equal(u32(decoded), u32(want_decoded))
    return codes, absmax


# ---- quantization tests -----------------------------------------------------------------------

def test_reference_brute_force_equals_the_exact_threshold_count():
    """The float64 brute force and the exact Fraction count agree on the hard values (every
    threshold and its float32 neighbours, ±0, tiny and huge values)."""
    for unsigned in (False, True):
        n = np.concatenate([around_thresholds(unsigned, 1.0),
                            np.array([0.0, -0.0, 1e-45, -1e-45, 1e-30, 1.0, -1.0, 1.0000001, 2.0,
                                      -2.0, 1e30, -1e30, np.inf, -np.inf, np.nan], np.float32)])
        brute = ref_codes_of(n, unsigned)
        exact = np.array([exact_code(v, unsigned) for v in n])
        np.testing.assert_array_equal(brute, exact)


def test_reference_formulations_agree():
    rng = np.random.default_rng(12)
    n = np.concatenate([(10.0 ** rng.uniform(-8, 0.01, 200_000) * rng.choice([-1, 1], 200_000)),
                        rng.uniform(-1, 1, 50_000)]).astype(np.float32)
    n = np.concatenate([n, around_thresholds(False, 1.0), around_thresholds(True, 1.0)])
    for unsigned in (False, True):
        np.testing.assert_array_equal(ref_codes_of(n, unsigned), ref_codes_counted(n, unsigned))


def keys_to_floats(keys):
    """float32 values of ordered keys (key = bits for +, -1 - (bits & 0x7fffffff) for -)."""
    keys = np.asarray(keys, dtype=np.int64)
    bits = np.where(keys >= 0, keys, (-1 - keys) | 0x80000000).astype(np.uint32)
    return f32(bits)


def floats_to_keys(values):
    bits = u32(values).astype(np.int64)
    return np.where(bits >= 2**31, -1 - (bits & 0x7FFFFFFF), bits)


def blocks_with_absmax_one(values):
    """values (|v| <= 1) in blocks of 255 plus a 1.0 (or -1.0): every block's absmax is 1.0, so
    n = x exactly."""
    per = BLOCK - 1
    pad = -values.size % per
    v = np.concatenate([values, np.zeros(pad, np.float32)]).reshape(-1, per)
    ones = np.where(np.arange(v.shape[0]) % 2, 1.0, -1.0).astype(np.float32)[:, None]
    return np.ascontiguousarray(np.concatenate([v, ones], axis=1).ravel())


def around_thresholds(unsigned, scale):
    """Every threshold's float32 neighbours: the largest float32 <= t_c and the smallest > t_c
    (t_c itself when it is a float32), and one more step each way; times scale."""
    t = THRESHOLDS[unsigned]
    near = t.astype(np.float32)
    below = np.where(near.astype(np.float64) > t, np.nextafter(near, np.float32(-np.inf)), near)
    above = np.nextafter(below, np.float32(np.inf))
    down = np.nextafter(below, np.float32(-np.inf))
    up = np.nextafter(above, np.float32(np.inf))
    vals = np.concatenate([down, below, above, up])
    if unsigned:
        vals = np.concatenate([vals, -vals])
    return (vals.astype(np.float64) * scale).astype(np.float32)


@pytest.mark.parametrize("unsigned", [False, True])
def test_random_data_at_many_scales(level, unsigned):
    rng = np.random.default_rng(1 + unsigned)
    parts = []
    for exponent in range(-45, 39, 3):
        x = rng.standard_normal(2 * BLOCK + 37).astype(np.float64) * 10.0**exponent
        if unsigned:
            x = x * x if exponent < 19 else np.abs(x)
        parts.append(x.astype(np.float32))
    # log-uniform magnitudes across the whole float32 range inside each block
    mags = 2.0 ** rng.uniform(-149, 127, 20 * BLOCK)
    parts.append((mags * rng.choice([-1.0, 1.0], mags.size)).astype(np.float32))
    # blocks whose values span the map's range: |n| from 1e-8 to 1
    parts.append((10.0 ** rng.uniform(-8, 0, 40 * BLOCK) * rng.choice([-1.0, 1.0], 40 * BLOCK)
                  ).astype(np.float32))
    for x in parts:
        check_quantize(x, unsigned)


@pytest.mark.parametrize("unsigned", [False, True])
def test_sizes_0_to_1000(level, unsigned):
    rng = np.random.default_rng(7)
    data = (rng.standard_normal(1001) * 10.0 ** rng.uniform(-3, 3, 1001)).astype(np.float32)
    if unsigned:
        data = np.abs(data)
    for n in range(1001):
        x = data[:n].copy()
        expected = ref_quantize(x, unsigned)
        check_quantize(x, unsigned, expected)


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0**-20, 2.0**40, 3.7, 1e-30])
def test_ties_and_values_around_every_threshold(level, unsigned, scale):
    """n exactly on a threshold (where t_c is a float32: the tie goes to the lower code) and
    the float32 neighbours of every threshold. With a power-of-two scale the block's absmax is
    that scale (a +-1.0 element is present), so n is exactly the value; with 3.7 and 1e-30 the
    product's rounding moves n, and the reference follows the same float32 operations."""
    vals = around_thresholds(unsigned, 1.0)
    t = THRESHOLDS[unsigned]
    exact_ties = t[t.astype(np.float32).astype(np.float64) == t].astype(np.float32)
    assert exact_ties.size > 100        # 148 signed, 164 unsigned
    vals = np.concatenate([exact_ties, vals])
    rng = np.random.default_rng(3)
    vals = vals[rng.permutation(vals.size)]
    # blocks of 255 values plus 1.0 (the block's absmax before scaling)
    per = BLOCK - 1
    blocks = []
    for s in range(0, vals.size, per):
        chunk = vals[s:s + per]
        blocks.append(np.concatenate([chunk, np.float32([1.0 if s % 2 else -1.0])]))
    x = (np.concatenate(blocks).astype(np.float64) * scale).astype(np.float32)
    codes, absmax = check_quantize(x, unsigned)
    if scale in (1.0, 2.0**-20, 2.0**40):
        np.testing.assert_array_equal(absmax, np.float32(scale))
        # the ties: n == t_c exactly, code c (the lower one)
        want = np.array([exact_code(v, unsigned) for v in (x / np.float32(scale))])
        np.testing.assert_array_equal(codes, want)


@pytest.mark.parametrize("unsigned", [False, True])
def test_power_of_two_ulps_around_every_threshold(level, unsigned):
    """The floats 2**k ulps (k = 0..17) below and above every threshold: inside and outside the
    vector levels' ambiguous band (a few dozen ulps wide) and at its edges."""
    F = floats_to_keys(around_thresholds(unsigned, 1.0)[2 * 255:3 * 255])  # smallest float > t_c
    offsets = np.concatenate([-(2 ** np.arange(18)), 2 ** np.arange(18) - 1])
    keys = (F[:, None] + offsets[None, :]).ravel()
    values = keys_to_floats(keys)
    values = values[np.abs(values.astype(np.float64)) <= 1.0]
    if unsigned:
        values = np.concatenate([values, -values])
    x = blocks_with_absmax_one(values)
    codes, absmax = kernels.q8_quantize(x, unsigned)
    assert np.all(np.abs(absmax) == 1)
    np.testing.assert_array_equal(codes, ref_codes_counted(x, unsigned))


@pytest.mark.parametrize("unsigned", [False, True])
def test_dense_sweep_of_magnitudes(level, unsigned):
    """Every 61st float32 pattern from 2**-31 to 1.0 (2.9M values: every region and binade of the
    vector levels, through thousands of patterns per threshold interval), with both signs."""
    values = f32(np.arange(0x30000000, 0x3F800001, 61, dtype=np.uint32))
    x = blocks_with_absmax_one(np.concatenate([values, -values]))
    codes, absmax = kernels.q8_quantize(x, unsigned, blocks=True)
    np.testing.assert_array_equal(codes, ref_codes_counted(x, unsigned))


@pytest.mark.parametrize("unsigned", [False, True])
def test_every_code_round_trips(level, unsigned):
    """A block holding the map itself (absmax 1, or a power of two) quantizes to 0..255 and
    decodes back exactly; codes 0..255 decode to map * absmax."""
    m = MAPS[unsigned]
    for scale in (1.0, 2.0**-60, 2.0**60):
        x = (m.astype(np.float64) * scale).astype(np.float32)
        codes, absmax = check_quantize(x, unsigned)
        np.testing.assert_array_equal(codes, np.arange(256))
        np.testing.assert_array_equal(absmax, [np.float32(scale)])
        np.testing.assert_array_equal(u32(kernels.q8_dequantize(codes, absmax, unsigned)), u32(x))
    codes = np.tile(np.arange(256, dtype=np.uint8), 3)[:700]
    absmax = np.float32([0.5, 3.0, -2.0])
    want = ref_dequantize(codes, absmax, unsigned)
    np.testing.assert_array_equal(u32(kernels.q8_dequantize(codes, absmax, unsigned)), u32(want))


@pytest.mark.parametrize("unsigned", [False, True])
def test_zero_nan_and_inf_blocks(level, unsigned):
    zero = ZERO[unsigned]
    # all-zero blocks (either sign of zero): zero codes, absmax +0, decodes to 0
    for x in (np.zeros(300, np.float32), -np.zeros(300, np.float32),
              np.float32([0.0, -0.0] * 150)):
        codes, absmax = check_quantize(x, unsigned)
        assert np.all(codes == zero) and np.all(u32(absmax) == 0)
        decoded = kernels.q8_dequantize(codes, absmax, unsigned)
        assert np.all(decoded == 0)
    # a NaN: absmax is the largest NaN pattern (payload kept), the block decodes to NaN, the
    # other blocks are untouched
    x = np.linspace(-3, 3, 3 * BLOCK).astype(np.float32)
    xb = u32(x).copy()
    xb[10], xb[200] = 0x7FC00001, 0xFFC12345        # the second is larger as |bits|
    xb[BLOCK + 5] = 0x7F800001                      # a signalling NaN pattern
    x = f32(xb)
    codes, absmax = check_quantize(x, unsigned)
    assert u32(absmax)[0] == 0x7FC12345 and u32(absmax)[1] == 0x7F800001
    assert np.all(codes[:2 * BLOCK] == zero)
    decoded = kernels.q8_dequantize(codes, absmax, unsigned)
    assert np.all(np.isnan(decoded[:2 * BLOCK])) and not np.any(np.isnan(decoded[2 * BLOCK:]))
    # an inf (no NaN): absmax inf; finite elements give n = ±0, the inf gives NaN: zero codes;
    # the block decodes to NaN (0 * inf)
    x = np.linspace(-3, 3, BLOCK + 20).astype(np.float32)
    x[3] = -np.inf
    x[BLOCK + 2] = np.inf
    codes, absmax = check_quantize(x, unsigned)
    assert np.all(absmax == np.inf) and np.all(codes == zero)
    assert np.all(np.isnan(kernels.q8_dequantize(codes, absmax, unsigned)))
    # subnormal absmax: 1 / absmax overflows to inf for the smallest ones (n = ±inf or NaN)
    tiny = f32(np.arange(1, 2 * BLOCK + 1, dtype=np.uint32) % 7)
    tiny = np.where(np.arange(tiny.size) % 3 == 0, -tiny, tiny).astype(np.float32)
    check_quantize(tiny, unsigned)
    check_quantize(f32([0x00000001, 0x80000001, 0, 0x80000000] * 70), unsigned)
    # every kind of block in a row (the multi-block call takes each block's absmax one block
    # ahead): normal, NaN, zero, inf, subnormal, normal, partial
    rng = np.random.default_rng(4)
    kinds = [rng.standard_normal(BLOCK), np.full(BLOCK, np.nan), np.zeros(BLOCK),
             np.where(np.arange(BLOCK) == 7, np.inf, 1.0), f32(np.arange(BLOCK) % 5),
             rng.standard_normal(BLOCK) * 1e-20, rng.standard_normal(100)]
    x = np.concatenate([np.asarray(k).astype(np.float32) for k in kinds])
    check_quantize(x, unsigned)


@pytest.mark.parametrize("unsigned", [False, True])
def test_shapes_and_partial_blocks(level, unsigned):
    rng = np.random.default_rng(11)
    for shape in [(0,), (1,), (255,), (257,), (3, 100), (2, 3, 50), (1000,), (4, 256)]:
        x = rng.standard_normal(shape).astype(np.float32)
        if unsigned:
            x = x * x
        check_quantize(x, unsigned)


def test_levels_agree_on_random_bit_patterns():
    """Arbitrary float32 patterns (NaNs, infs, subnormals included), every level the same as
    the reference."""
    rng = np.random.default_rng(5)
    x = f32(rng.integers(0, 2**32, 64 * BLOCK + 100, dtype=np.uint64).astype(np.uint32))
    # make most blocks NaN-free so that codes are exercised
    xb = u32(x).copy()
    nan = (xb & 0x7FFFFFFF) > 0x7F800000
    xb[nan & (np.arange(xb.size) // BLOCK % 4 != 0)] &= 0xBF7FFFFF
    x = f32(xb)
    for unsigned in (False, True):
        expected = ref_quantize(x, unsigned)
        for name in LEVELS:
            kernels.set_vector_level(name)
            try:
                check_quantize(x, unsigned, expected)
            finally:
                kernels.set_vector_level(None)


def test_q8_argument_errors():
    x = np.ones(10, np.float32)
    with pytest.raises(TypeError, match="x must"):
        kernels.q8_quantize([1.0, 2.0], False)
    with pytest.raises(TypeError, match="x must"):
        kernels.q8_quantize(np.ones(10, np.float64), False)
    with pytest.raises(TypeError, match="x must"):
        kernels.q8_quantize(np.ones((4, 4), np.float32)[:, ::2], False)
    with pytest.raises(TypeError, match="x must"):
        kernels.q8_quantize(np.ones(4, ">f4"), False)
    codes, absmax = kernels.q8_quantize(x, False)
    with pytest.raises(TypeError, match="codes must"):
        kernels.q8_dequantize(codes.astype(np.int8), absmax, False)
    with pytest.raises(TypeError, match="absmax must"):
        kernels.q8_dequantize(codes, absmax.astype(np.float64), False)
    with pytest.raises(ValueError, match="absmax must have shape"):
        kernels.q8_dequantize(codes, np.ones(2, np.float32), False)
    with pytest.raises(ValueError, match="absmax must have shape"):
        kernels.q8_dequantize(codes, np.ones((1, 1), np.float32), False)
    for bad in ("yes", 2, None, 1.0):
        with pytest.raises(TypeError, match="unsigned must be a bool"):
            kernels.q8_quantize(x, bad)
        with pytest.raises(TypeError, match="unsigned must be a bool"):
            kernels.q8_dequantize(codes, absmax, bad)
        with pytest.raises(TypeError, match="unsigned must be a bool"):
            kernels.q8_map(bad)
    np.testing.assert_array_equal(kernels.q8_quantize(x, np.True_)[0], kernels.q8_quantize(x, 1)[0])


# ---- stochastic rounding ------------------------------------------------------------------------

def splitmix64_py(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def lowbias32_py(x):
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    x ^= x >> 15
    return x


def key_py(seed, step, array, slot):
    return splitmix64_py(splitmix64_py(splitmix64_py(splitmix64_py(seed) ^ step) ^ array) ^ slot)


def round_py(value_bits, key, e):
    """One element by the spec, in Python ints."""
    r = lowbias32_py((e & 0xFFFFFFFF) ^ (splitmix64_py(key ^ (e >> 32)) & 0xFFFFFFFF)) >> 16
    if (value_bits & 0x7FFFFFFF) > 0x7F800000:
        return (value_bits >> 16) | 0x40
    return ((value_bits + r) & 0xFFFFFFFF) >> 16


def splitmix64_np(x):
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def round_np(x, key, start):
    """The spec's rounding of float32 x, element i being e = start + i, vectorized."""
    bits = u32(x.ravel()).astype(np.uint32)
    e = np.uint64(start) + np.arange(bits.size, dtype=np.uint64)
    k2 = (splitmix64_np(np.uint64(key) ^ (e >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    h = (e & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ k2
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x21F0AAAD)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x735A2D97)
        h ^= h >> np.uint32(15)
        rounded = (bits + (h >> np.uint32(16))) >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x40), rounded)
    return out.astype(np.uint16).reshape(x.shape)


def test_splitmix64_known_values():
    """splitmix64 as Vigna's reference: the first outputs of the generator seeded with 0
    (state += golden gamma before each output) are these."""
    assert splitmix64_py(0) == 0xE220A8397B1DCDAF
    assert splitmix64_py(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    np.testing.assert_array_equal(splitmix64_np(np.array([0, 0x9E3779B97F4A7C15], np.uint64)),
                                  np.array([0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4], np.uint64))


def test_rounding_key():
    cases = [(0, 0, 0, 0), (1, 2, 3, 4), (M64, M64, M64, 3), (2**63, 7, 0, 1),
             (123456789, 10**12, 5, 2)]
    for args in cases:
        assert kernels.rounding_key(*args) == key_py(*args)
    assert kernels.rounding_key(np.uint64(5), np.int64(1), True, 0) == key_py(5, 1, 1, 0)
    for i, name in enumerate(["seed", "step", "array", "slot"]):
        args = [0, 0, 0, 0]
        args[i] = -1
        with pytest.raises(ValueError, match=name):
            kernels.rounding_key(*args)
        args[i] = 2**64
        with pytest.raises(ValueError, match=name):
            kernels.rounding_key(*args)
        args[i] = 1.0
        with pytest.raises(TypeError, match=name):
            kernels.rounding_key(*args)


SPECIAL_BITS = [0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x3F800000, 0x3F80FFFF,
                0x3F808000, 0xBF80FFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                0x7F800001, 0xFF800001, 0x7FC00000, 0xFFFFFFFF, 0x7FBFFFFF, 0x0000FFFF]


def test_round_bf16_stochastic_pure_python(level):
    key = key_py(42, 3, 1, 0)
    bits = np.array(SPECIAL_BITS, dtype=np.uint32)
    for start in (0, 5, 2**32 - 7, 2**40 + 3, 2**63 - 1 - bits.size):
        got = kernels.round_bf16_stochastic(f32(bits), key, start)
        want = [round_py(int(b), key, start + i) for i, b in enumerate(bits)]
        np.testing.assert_array_equal(got, np.array(want, dtype=np.uint16))


def test_round_bf16_stochastic_vectorized(level):
    rng = np.random.default_rng(9)
    patterns = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    patterns[:len(SPECIAL_BITS)] = SPECIAL_BITS
    x_all = f32(patterns)
    normal = rng.standard_normal(3000).astype(np.float32)
    for key in (0, 1, M64, kernels.rounding_key(7, 11, 2, 3)):
        # sizes around the vector widths and the 512-element blocks, and starts that cross or
        # sit near a multiple of 2**32 (where e >> 32 changes the per-run key)
        for n in list(range(0, 70)) + [255, 256, 511, 512, 513, 1000, 1024, 3000]:
            for start in (0, 17, 512 * 3, 2**32 - 33, 2**32 - n // 2, 3 * 2**32 - 1):
                for x in (x_all[:n], normal[:n]):
                    got = kernels.round_bf16_stochastic(x, key, start)
                    assert got.dtype == np.uint16 and got.shape == x.shape
                    np.testing.assert_array_equal(got, round_np(x, key, start))
    x = rng.standard_normal((3, 7, 11)).astype(np.float32)
    np.testing.assert_array_equal(kernels.round_bf16_stochastic(x, 5, 9), round_np(x, 5, 9))


def test_round_bf16_stochastic_is_unbiased_and_brackets():
    """Each result is one of the two bfloat16 neighbours (truncated or one up in magnitude),
    and rounds up with probability (truncated low 16 bits) / 65536."""
    n = 200_000
    for low in (0x4000, 0x8000, 0xC000, 0x0001):
        x = f32(np.full(n, 0x3F810000 | low, dtype=np.uint32))
        got = kernels.round_bf16_stochastic(x, 1234, 0).astype(np.uint32)
        assert set(np.unique(got)) <= {0x3F81, 0x3F82}
        frac = np.mean(got == 0x3F82)
        p = low / 65536
        assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-5
        neg = kernels.round_bf16_stochastic(-x, 1234, 0).astype(np.uint32)
        np.testing.assert_array_equal(neg, got | 0x8000)    # same bits: |value| rounds alike


def test_round_bf16_stochastic_argument_errors():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="x must"):
        kernels.round_bf16_stochastic(np.ones(4), 0)
    with pytest.raises(TypeError, match="x must"):
        kernels.round_bf16_stochastic(np.ones(8, np.float32)[::2], 0)
    with pytest.raises(ValueError, match="key"):
        kernels.round_bf16_stochastic(x, -1)
    with pytest.raises(TypeError, match="key"):
        kernels.round_bf16_stochastic(x, 1.5)
    with pytest.raises(ValueError, match="start"):
        kernels.round_bf16_stochastic(x, 0, -1)
    with pytest.raises(ValueError, match="start"):
        kernels.round_bf16_stochastic(x, 0, 2**63 - 4)
    with pytest.raises(TypeError, match="start"):
        kernels.round_bf16_stochastic(x, 0, 2.0)
    assert kernels.round_bf16_stochastic(x, 0, 2**63 - 5).shape == (4,)
