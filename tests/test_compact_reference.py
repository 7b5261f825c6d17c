"""lrcore.compact, the numpy reference of the compact state formats (COMPACT_SPEC.md, issue 13),
against independent expectations:

- the dynamic maps: their closed form (10**(i-6) times the midpoints of 0.1 + 0.9*j/(k-1)),
  their symmetric structure, torch's linspace for every length used, and bitsandbytes' /
  torchao's create_dynamic_map bit for bit;
- quantize: a brute-force argmin of |n - map| in float64 (exact for float32 n) with ties to the
  lower index, on random data at many scales, constructed ties, special values and sizes;
  a closed-form error bound for dequantize(quantize(x)); the round trip of codes;
- bitsandbytes' CPU quantize_blockwise (an approximate lookup: agreement >= 97.5%, and ours
  is at least as near where they differ) and dequantize_blockwise (bit for bit);
- the stochastic rounding's hash against a pure-Python scalar implementation (ints masked to
  64 / 32 bits), its unbiasedness and its special values.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lrcore import compact

M64, M32 = (1 << 64) - 1, (1 << 32) - 1


def bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def f32(pattern):
    return np.array(pattern, dtype=np.uint32).view(np.float32)


# --------------------------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------------------------

def closed_form_positives(signed):
    """The map's positive values below 1 in exact arithmetic: for i = 0..6, k = 2**i + 1
    (signed) or 2**(i+1) + 1 (unsigned), 10**(i-6) * (0.1 + 0.9 * (j + 1/2) / (k - 1)),
    j = 0..k-2."""
    vals = []
    for i in range(7):
        k = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        j = np.arange(k - 1)
        vals.append(10.0 ** (i - 6) * (0.1 + 0.9 * (j + 0.5) / (k - 1)))
    return np.sort(np.concatenate(vals))


@pytest.mark.parametrize("signed", [True, False])
def test_map_structure_and_closed_form(signed):
    m = compact.dynamic_map(signed)
    assert m.dtype == np.float32 and m.shape == (256,)
    assert not m.flags.writeable
    assert compact.dynamic_map(signed) is m                  # cached
    assert np.all(np.diff(m) > 0)                            # 256 distinct, ascending
    z = compact.zero_code(signed)
    assert z == (127 if signed else 0)
    assert bits(m[z]) == 0                                   # +0.0, not -0.0
    assert m[255] == 1.0
    pos = m[z + 1:255]
    assert pos.size == (127 if signed else 254) and np.all(pos > 0)
    # The smallest positives: 10**-6 * means of linspace(0.1, 1, 2) / (, 3) for unsigned.
    assert pos[0] == (np.float32(5.5000004e-07) if signed else np.float32(3.2500003e-07))
    # Each float32 value is its exact closed form within a few float32 roundings
    # (linspace, the mean, the scale and the product: relative 2**-22 is ample).
    exact = closed_form_positives(signed)
    assert np.all(np.abs(pos.astype(np.float64) / exact - 1) < 2.0 ** -21)
    if signed:
        # 127 negatives mirror the 127 positives; there is no -1.0.
        assert np.array_equal(m[:127][::-1], -pos)
        assert m[0] == np.float32(-0.99296874)
        assert m[126] == -m[128] and m[128] == np.float32(5.5000004e-07)
    else:
        assert np.all(m >= 0)
    # Decades: values in [10**(i-7), 10**(i-6)) for i = 0..6, 2**i (signed) or 2**(i+1) each.
    for i in range(7):
        lo, hi = 10.0 ** (i - 7), 10.0 ** (i - 6)
        count = np.count_nonzero((pos >= lo) & (pos < hi))
        assert count == (2 ** i if signed else 2 ** (i + 1))


@pytest.mark.parametrize("signed", [True, False])
def test_thresholds_are_exact_midpoints(signed):
    from fractions import Fraction
    m = compact.dynamic_map(signed)
    t = compact.thresholds(signed)
    assert t.dtype == np.float64 and t.shape == (255,) and not t.flags.writeable
    for c in range(255):
        assert Fraction(float(t[c])) == (Fraction(float(m[c])) + Fraction(float(m[c + 1]))) / 2


def test_linspace_emulation_matches_torch():
    torch = pytest.importorskip("torch")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch runs its DEFAULT (unfused) kernels here; see test_default_capability")
    for k in list(range(2, 301)) + [513, 1000, 4097, 65537]:
        ours = compact._torch_linspace_f32(0.1, 1.0, k)
        theirs = torch.linspace(0.1, 1, k, dtype=torch.float32).numpy()
        assert np.array_equal(bits(ours), bits(theirs)), k


@pytest.mark.parametrize("signed", [True, False])
def test_map_equals_bitsandbytes(signed):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch's DEFAULT kernels give a different bitsandbytes map (one ulp in "
                    "some entries); see test_default_capability")
    theirs = F.create_dynamic_map(signed).numpy()
    assert theirs.dtype == np.float32
    assert np.array_equal(bits(compact.dynamic_map(signed)), bits(theirs))


@pytest.mark.parametrize("signed", [True, False])
def test_map_equals_torchao(signed):
    torch = pytest.importorskip("torch")
    Q = pytest.importorskip("torchao.optim.quant_utils")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch's DEFAULT kernels; see test_default_capability")
    theirs = np.array(Q.create_dynamic_map(signed), dtype=np.float32)     # Python floats
    assert np.array_equal(bits(compact.dynamic_map(signed)), bits(theirs))


_DEFAULT_CAPABILITY_SCRIPT = r"""
import numpy as np, torch
import bitsandbytes.functional as F
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
def unfused(k):
    s, e = np.float32(0.1), np.float32(1.0)
    step = (e - s) / np.float32(k - 1)
    i = np.arange(k).astype(np.float32)
    h = k // 2
    return np.concatenate([s + step * i[:h], e - step * (np.float32(k - 1) - i[h:])])
for k in (2, 3, 5, 9, 17, 33, 65, 129):
    t = torch.linspace(0.1, 1, k, dtype=torch.float32).numpy()
    assert np.array_equal(t.view(np.uint32), unfused(k).view(np.uint32)), k
for s in (True, False):
    np.save("map_%d.npy" % s, F.create_dynamic_map(s).numpy())
"""


def test_default_capability(tmp_path):
    """Why the maps are pinned to the fused multiply-add: under ATEN_CPU_CAPABILITY=default
    torch's linspace rounds step*i before adding (the product and the sum rounded separately),
    and bitsandbytes' map then differs from the shipped AVX2 / AVX512 one in some last bits."""
    pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    r = subprocess.run([sys.executable, "-c", _DEFAULT_CAPABILITY_SCRIPT], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for s, expected in ((True, 42), (False, 31)):
        theirs = np.load(tmp_path / f"map_{int(s)}.npy")
        ours = compact.dynamic_map(s)
        differ = bits(theirs) != bits(ours)
        assert np.count_nonzero(differ) == expected
        # one or two float32 ulps apart where they differ
        ulps = np.abs(bits(theirs)[differ].astype(np.int64) - bits(ours)[differ].astype(np.int64))
        assert np.all((ulps >= 1) & (ulps <= 2))


# --------------------------------------------------------------------------------------------
# quantize / dequantize
# --------------------------------------------------------------------------------------------

def brute_absmax(block):
    """Python ints: the float32 whose pattern is the block's max of |bits| (sign cleared)."""
    return f32(max((int(b) & 0x7FFFFFFF) for b in bits(block)))


def brute_quantize(x, signed):
    """Per block: absmax as above (np.max(|x|) when the block has no NaN, checked equal),
    n = x * (1/absmax) in float32, code = argmin_c |n - map[c]| in float64 (np.argmin takes
    the first minimum: ties to the lower index; an infinite n is clipped to +-2 first, whose
    nearest code is the end of the map), NaN n -> the zero code."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    m = compact.dynamic_map(signed).astype(np.float64)
    codes = np.empty(flat.size, np.uint8)
    nb = -(-flat.size // 256)
    absmax = np.empty(nb, np.float32)
    with np.errstate(all="ignore"):
        for b in range(nb):
            blk = flat[b * 256:(b + 1) * 256]
            if np.isnan(blk).any():
                a = brute_absmax(blk)
            else:
                a = np.max(np.abs(blk))
                assert bits(a) == bits(brute_absmax(blk))
            absmax[b] = a
            n = blk * (np.float32(1) / a)
            d = np.abs(np.clip(n.astype(np.float64), -2, 2)[:, None] - m[None, :])
            c = np.argmin(d, axis=1)
            c[np.isnan(n)] = compact.zero_code(signed)
            codes[b * 256:(b + 1) * 256] = c
    return codes.reshape(np.shape(x)), absmax


def check_quantize(x, signed):
    codes, absmax = compact.quantize(x, signed)
    ec, ea = brute_quantize(x, signed)
    assert codes.dtype == np.uint8 and codes.shape == np.shape(x)
    assert absmax.dtype == np.float32 and absmax.shape == (-(-np.size(x) // 256),)
    assert np.array_equal(bits(absmax), bits(ea))
    assert np.array_equal(codes, ec)
    return codes, absmax


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_random_many_scales(signed):
    rng = np.random.default_rng(1 + signed)
    for scale in (1e-30, 1e-12, 1e-6, 1e-3, 0.5, 1.0, 3.0, 1e3, 1e9, 1e30):
        x = (rng.standard_normal(256 * 40 + 17) * scale).astype(np.float32)
        if not signed:
            x = np.abs(x)
        check_quantize(x, signed)
        # log-uniform magnitudes exercise the small codes of the map
        y = (np.exp(rng.uniform(-30, 0, 256 * 20)) * scale).astype(np.float32)
        y *= rng.choice(np.float32([-1, 1]), y.size) if signed else np.float32(1)
        check_quantize(y, signed)


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_exact_ties_go_to_lower_index(signed):
    """Midpoints that are float32 values, scaled by absmax = 1 (n = x exactly) and by
    absmax = 2**-20 (n = x * 2**20 exactly): the code is the lower of the two."""
    m = compact.dynamic_map(signed)
    t = compact.thresholds(signed)
    tie = np.nonzero(t.astype(np.float32).astype(np.float64) == t)[0]
    assert tie.size > 100           # most midpoints are float32 values
    for scale in (1.0, 2.0 ** -20):
        vals = (t[tie].astype(np.float32) * np.float32(scale))
        blocks = []
        for lo in range(0, vals.size, 255):
            blocks.append(np.concatenate([np.float32([scale]), vals[lo:lo + 255]]))
            blocks.append(np.zeros(256 - blocks[-1].size, np.float32))
        x = np.concatenate(blocks)
        codes, absmax = check_quantize(x, signed)
        # and directly: every tie maps to c, not c + 1
        got = codes[np.isin(x, vals) & (x != np.float32(scale))]
        n = x[np.isin(x, vals) & (x != np.float32(scale))] / np.float32(scale)
        assert np.array_equal(got, np.searchsorted(t, n.astype(np.float64), side="left"))
        assert np.all(m[got].astype(np.float64) < n)             # the lower neighbour
    # the value one ulp above a tie goes up
    up = np.nextafter(t[tie].astype(np.float32), np.float32(2))
    x = np.concatenate([np.float32([1.0]), up[:255]])
    codes, _ = check_quantize(x, signed)
    assert np.array_equal(codes[1:].astype(np.int64), tie[:255] + 1)


def test_quantize_values_above_one_after_scaling():
    """A finite n never exceeds 1: in binary round-to-nearest, RN(a * RN(1/a)) is 1 or its
    predecessor 1 - 2**-24 (checked here on 10**6 random a), so the absmax element takes code
    255 (positive) or the lowest code (negative). n > 1 arises only as +inf, when 1/absmax
    overflows (absmax subnormal below 2**-128): n = +-inf -> 255 / 0, and 0 * inf = NaN -> the
    zero code. The lookup rule itself sends any n > 1 to 255."""
    rng = np.random.default_rng(2)
    a = np.exp(rng.uniform(-80, 80, 10 ** 6)).astype(np.float32)
    n = a * (np.float32(1) / a)
    assert np.all((n == 1) | (n == np.float32(1 - 2.0 ** -24)))
    for signed in (True, False):
        t = compact.thresholds(signed)
        assert np.all(np.searchsorted(t, [1.0, 1.0 + 2.0 ** -23, 1.5, np.inf]) == 255)
        x = np.float32([3.0, -3.0, 1.5, 0.0, -0.0])
        codes, absmax = check_quantize(x, signed)
        assert codes[0] == 255 and absmax[0] == 3
        assert codes[1] == 0
        x = np.float32([-41.0, 41.0])               # 41 * RN(1/41) = 1 - 2**-24
        assert x[1] * (np.float32(1) / x[1]) < 1
        codes, _ = check_quantize(x, signed)
        assert list(codes) == [0, 255]
        for tiny in (f32(1), f32(0x00200000)):     # 1.4e-45, 2**-129: 1 / tiny = inf
            codes, absmax = check_quantize(np.array([tiny, -tiny, 0.0], np.float32), signed)
            assert bits(absmax[0]) == bits(tiny)
            assert list(codes) == [255, 0, compact.zero_code(signed)]


def test_quantize_negatives_with_unsigned_map():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000).astype(np.float32)
    codes, _ = check_quantize(x, False)
    assert np.all(codes[x < 0] == 0)
    assert np.all(codes[x > 0] > 0)


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_zero_nan_inf_blocks(signed):
    z = compact.zero_code(signed)
    rng = np.random.default_rng(4)
    zeros = np.zeros(256, np.float32)
    zeros[::3] = -0.0
    nan = rng.standard_normal(256).astype(np.float32)
    nan[17] = np.nan
    nan_payloads = rng.standard_normal(256).astype(np.float32)
    nan_payloads[[3, 9]] = f32([0x7FC00000, 0xFFC00005])     # the largest pattern wins
    inf = rng.standard_normal(256).astype(np.float32)
    inf[200] = -np.inf
    tail = rng.standard_normal(100).astype(np.float32)
    x = np.concatenate([zeros, nan, nan_payloads, inf, tail])
    codes, absmax = check_quantize(x, signed)
    assert bits(absmax[0]) == 0 and np.all(codes[:256] == z)
    assert np.isnan(absmax[1]) and np.all(codes[256:512] == z)
    assert bits(absmax[2]) == 0x7FC00005 and np.all(codes[512:768] == z)
    assert absmax[3] == np.inf
    # finite x * 0 = +-0 -> zero code; the inf itself: -inf * 0 = NaN -> zero code
    assert np.all(codes[768:1024] == z)
    dq = compact.dequantize(codes, absmax, signed)
    assert np.all(dq[:256] == 0)
    assert np.all(np.isnan(dq[256:1024]))              # NaN * anything, and 0 * inf
    assert np.all(np.isfinite(dq[1024:]))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(0,), (1,), (255,), (256,), (257,), (1000,), (), (3, 5, 7),
                                   (2, 0, 3), (4, 300)])
def test_quantize_sizes_and_shapes(signed, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    codes, absmax = check_quantize(x, signed)
    assert codes.shape == x.shape
    out = compact.dequantize(codes, absmax, signed)
    assert out.shape == x.shape and out.dtype == np.float32
    # a non-contiguous view is quantized in its C order
    if x.ndim == 2 and x.shape[1] > 1:
        v = x[:, ::2]
        c2, a2 = compact.quantize(v, signed)
        c3, a3 = compact.quantize(np.ascontiguousarray(v), signed)
        assert np.array_equal(c2, c3) and np.array_equal(bits(a2), bits(a3))


def test_argument_checks():
    with pytest.raises(TypeError):
        compact.quantize(np.zeros(3), True)                          # float64
    with pytest.raises(TypeError):
        compact.dequantize(np.zeros(3, np.int32), np.zeros(1, np.float32), True)
    with pytest.raises(TypeError):
        compact.dequantize(np.zeros(3, np.uint8), np.zeros(1), True)
    with pytest.raises(ValueError):
        compact.dequantize(np.zeros(257, np.uint8), np.zeros(1, np.float32), True)
    with pytest.raises(ValueError):
        compact.rounding_key(-1, 0, 0, 0)
    with pytest.raises(ValueError):
        compact.random_bits(1, 2 ** 63 - 1, 2)


@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_is_map_times_absmax(signed):
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 256, 1000).astype(np.uint8)
    absmax = rng.uniform(0.1, 10, 4).astype(np.float32)
    out = compact.dequantize(codes, absmax, signed)
    m = compact.dynamic_map(signed)
    for i in range(1000):
        assert bits(out[i]) == bits(m[codes[i]] * absmax[i // 256])


def radius(signed):
    """For each code c, the largest |n - map[c]| of any n that quantizes to c: up to the
    thresholds on either side, and at the ends up to the extreme n (n in [-1 - 2**-23,
    1 + 2**-23] for a finite nonzero absmax; unsigned data is non-negative here)."""
    m = compact.dynamic_map(signed).astype(np.float64)
    t = compact.thresholds(signed)
    lo = np.concatenate([[-(1 + 2.0 ** -23) if signed else 0.0], t])
    hi = np.concatenate([t, [1 + 2.0 ** -23]])
    return np.maximum(m - lo, hi - m)


@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_error_bound(signed):
    """|dq - x| <= radius[c] * absmax + (|x| + |dq|) * 2**-22: half the local code spacing (the
    distance to the threshold) plus the float32 roundings of 1/absmax, x*inv and map*absmax
    (each a relative 2**-24). The bound is tight: some element comes within 1% of it."""
    rng = np.random.default_rng(7)
    r = radius(signed)
    worst = 0.0
    for scale in (1e-20, 1e-3, 1.0, 1e7, 1e20):
        x = (rng.standard_normal(256 * 64) * scale).astype(np.float32)
        y = (np.exp(rng.uniform(-25, 0, 256 * 64)) * scale).astype(np.float32)
        if signed:
            y *= rng.choice(np.float32([-1, 1]), y.size)
        x = np.concatenate([x, y])
        if not signed:
            x = np.abs(x)
        codes, absmax = compact.quantize(x, signed)
        dq = compact.dequantize(codes, absmax, signed).astype(np.float64)
        a = np.repeat(absmax.astype(np.float64), 256)[:x.size]
        x64 = x.astype(np.float64)
        bound = r[codes] * a + (np.abs(x64) + np.abs(dq)) * 2.0 ** -22
        err = np.abs(dq - x64)
        assert np.all(err <= bound)
        worst = max(worst, float(np.max(err / bound)))
    assert worst > 0.99


@pytest.mark.parametrize("signed", [True, False])
def test_code_round_trip(signed):
    """quantize(dequantize(c, a)) == (c, a) exactly when the block holds code 255 (map 1.0, so
    the new absmax is 1.0 * a = a): every code then comes back, at every normal scale tried.
    Without code 255 it is not an identity: the new absmax is max|map[c_i]| * a < a and the
    codes are rescaled. quantize itself produces such blocks: a signed block whose largest
    magnitude is negative has n = -1 there, which takes code 0 (-0.99296874, the map has no
    -1.0), and no 255 unless another element is near +absmax."""
    m = compact.dynamic_map(signed)
    all_codes = np.arange(256, dtype=np.uint8)
    rng = np.random.default_rng(8)
    for a in [1.0, 2.0 ** -20, 3.0, 1e-30, 1e30, 1.17549435e-38 * 2 ** 24,
              *rng.uniform(1e-3, 1e3, 20)]:
        absmax = np.float32([a])
        c = rng.permutation(all_codes)
        c2, a2 = compact.quantize(compact.dequantize(c, absmax, signed), signed)
        assert np.array_equal(bits(a2), bits(absmax)) and np.array_equal(c2, c), a
    # blocks without 255: the absmax shrinks to the largest |map| present
    c = np.full(256, 200, np.uint8)
    c2, a2 = compact.quantize(compact.dequantize(c, np.float32([1.0]), signed), signed)
    assert a2[0] == m[200] and np.all(c2 == 255)
    if signed:
        x = np.random.default_rng(9).standard_normal(256 * 200).astype(np.float32)
        codes, absmax = compact.quantize(x, True)
        back, absmax2 = compact.quantize(compact.dequantize(codes, absmax, True), True)
        xb, cb = x.reshape(200, 256), codes.reshape(200, 256)
        blocks_neg = xb[np.arange(200), np.argmax(np.abs(xb), axis=1)] < 0
        has255 = (cb == 255).any(axis=1)
        same = (bits(absmax) == bits(absmax2)) & (back.reshape(200, 256) == cb).all(axis=1)
        assert np.array_equal(same, has255)
        assert np.all(has255[~blocks_neg])          # a positive absmax element takes 255
        assert 0.3 < np.mean(~has255) < 0.7         # about half the blocks: negative absmax


def test_quantize_large_array_chunks():
    """2**24 + 100 elements (16 passes of the chunked loop and a partial block): spot-check
    blocks at every pass boundary against the brute force, and the time stays in seconds."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal(2 ** 24 + 100).astype(np.float32)
    t0 = time.perf_counter()
    codes, absmax = compact.quantize(x, True)
    dq = compact.dequantize(codes, absmax, True)
    r = compact.round_bf16_stochastic(x, 12345)
    assert time.perf_counter() - t0 < 120
    chunk = compact._CHUNK
    for lo in list(range(chunk - 512, x.size, chunk)) + [x.size - 356]:
        ec, ea = brute_quantize(x[lo:lo + 1024], True)
        assert np.array_equal(codes[lo:lo + 1024], ec)
        assert np.array_equal(bits(absmax[lo // 256: lo // 256 + 4]), bits(ea))
        assert np.array_equal(bits(dq[lo:lo + 1024]),
                              bits(compact.dequantize(ec, ea, True)))
        assert np.array_equal(r[lo:lo + 1024],
                              compact.round_bf16_stochastic(x[lo:lo + 1024], 12345, lo))


# --------------------------------------------------------------------------------------------
# against bitsandbytes / torchao
# --------------------------------------------------------------------------------------------

def _scaled(x, absmax):
    with np.errstate(all="ignore"):
        return (x * np.repeat(np.float32(1) / absmax, 256)[:x.size]).astype(np.float64)


@pytest.mark.parametrize("signed", [True, False])
def test_against_bitsandbytes_cpu(signed):
    """bitsandbytes' CPU quantize_blockwise looks codes up approximately (0.15% of signed,
    0.3% of unsigned codes differ at 1M normal values, some by several codes among the map's
    tiny values): ours agrees on >= 97.5%, and where they differ ours is at least as near.
    Its absmax and its dequantize_blockwise (of our codes) equal ours bit for bit."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    rng = np.random.default_rng(11)
    x = rng.standard_normal(2 ** 20 + 100).astype(np.float32)
    if not signed:
        x = np.abs(x)
    code = torch.from_numpy(compact.dynamic_map(signed).copy())
    qb, ab = torch.ops.bitsandbytes.quantize_blockwise(torch.from_numpy(x), code, 256)
    qb, ab = qb.numpy(), ab.numpy()
    codes, absmax = compact.quantize(x, signed)
    assert np.array_equal(bits(ab), bits(absmax))
    same = np.mean(codes == qb)
    assert same >= 0.975
    n = _scaled(x, absmax)
    m = compact.dynamic_map(signed).astype(np.float64)
    assert np.all(np.abs(n - m[codes]) <= np.abs(n - m[qb]))
    # dequantize: our codes and absmax through bitsandbytes, with special blocks added
    specials = np.float32([0.0, np.nan, np.inf, 1e-45])
    c = np.concatenate([codes, rng.integers(0, 256, 4 * 256).astype(np.uint8)])
    a = np.concatenate([absmax, specials])
    db = torch.ops.bitsandbytes.dequantize_blockwise(torch.from_numpy(c), torch.from_numpy(a),
                                                     code, 256, torch.float32).numpy()
    assert np.array_equal(bits(db), bits(compact.dequantize(c, a, signed)))


@pytest.mark.parametrize("signed", [True, False])
def test_against_torchao_lookup(signed):
    """torchao's 8-bit optimizer state (torchao.optim.quant_utils) uses the same maps; its
    lookup (branchless binary search, then up when n - map[c] >= (map[c+1] - map[c]) * 0.5 in
    float32) sends ties up and rounds the comparison: on our n it agrees except at
    near-midpoints, and ours is at least as near wherever they differ."""
    torch = pytest.importorskip("torch")
    Q = pytest.importorskip("torchao.optim.quant_utils")
    rng = np.random.default_rng(12)
    x = rng.standard_normal(2 ** 18).astype(np.float32)
    if not signed:
        x = np.abs(x)
    codes, absmax = compact.quantize(x, signed)
    n32 = (x * np.repeat(np.float32(1) / absmax, 256)).astype(np.float32)
    qmap = torch.from_numpy(compact.dynamic_map(signed).copy())
    theirs = Q.quantize_8bit_with_qmap(torch.from_numpy(n32), qmap).numpy()
    n = n32.astype(np.float64)
    m = compact.dynamic_map(signed).astype(np.float64)
    assert np.mean(codes == theirs) > 0.999
    assert np.all(np.abs(n - m[codes]) <= np.abs(n - m[theirs]))
    # exact ties: torchao goes up, we go down
    t = compact.thresholds(signed)
    tie = np.nonzero(t.astype(np.float32).astype(np.float64) == t)[0][:50]
    tc = Q.quantize_8bit_with_qmap(torch.from_numpy(t[tie].astype(np.float32)), qmap).numpy()
    assert np.array_equal(tc, tie + 1)
    ours = compact.quantize(np.concatenate([np.float32([1.0]), t[tie].astype(np.float32)]), signed)
    assert np.array_equal(ours[0][1:], tie)


# --------------------------------------------------------------------------------------------
# stochastic rounding
# --------------------------------------------------------------------------------------------

def py_splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_key(seed, step, array, slot):
    return py_splitmix64(py_splitmix64(py_splitmix64(py_splitmix64(seed) ^ step) ^ array) ^ slot)


def py_bits(key, e):
    k2 = py_splitmix64(key ^ (e >> 32))
    x = (e ^ k2) & M32
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0x735A2D97) & M32
    x ^= x >> 15
    return x >> 16


def py_round(u, key, e):
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 0x40
    return ((u + py_bits(key, e)) & M32) >> 16


def test_splitmix64_known_value_and_python():
    # splitmix64 seeded with 0: its first output is 0xE220A8397B1DCDAF (the generator's
    # published sequence), which is splitmix64(0) here.
    assert compact.splitmix64(0) == 0xE220A8397B1DCDAF == py_splitmix64(0)
    rng = np.random.default_rng(13)
    xs = rng.integers(0, 2 ** 64 - 1, 1000, dtype=np.uint64, endpoint=True)
    xs[:3] = [0, M64, 1 << 63]
    got = compact.splitmix64(xs)
    assert got.dtype == np.uint64 and got.shape == xs.shape
    assert [int(v) for v in got] == [py_splitmix64(int(v)) for v in xs]
    assert compact.splitmix64(M64) == py_splitmix64(M64)
    assert compact.splitmix64(np.uint64(5)) == py_splitmix64(5)


def test_rounding_key_and_random_bits_against_python():
    keys = [(0, 0, 0, 0), (0, 1, 0, 3), (M64, 2 ** 40, 7, 2), (12345, 999, 3, 1),
            (2 ** 63, 0, 1, 0)]
    for args in keys:
        key = compact.rounding_key(*args)
        assert key == py_key(*args)
        for start, n in ((0, 70), (2 ** 32 - 30, 60), (2 ** 33 + 5, 40), (2 ** 40 - 1, 3),
                         (2 ** 63 - 20, 20), (5 * 2 ** 32 - 7, 14)):
            got = compact.random_bits(key, start, n)
            assert got.dtype == np.uint16 and got.shape == (n,)
            assert [int(v) for v in got] == [py_bits(key, e) for e in range(start, start + n)]
    assert compact.random_bits(5, 10, 0).shape == (0,)


def test_random_bits_across_a_2_32_boundary_in_one_call():
    """A call spanning e = 2**32 switches k2 mid-array: spot-check around the switch and
    beyond one full chunk."""
    key = compact.rounding_key(7, 8, 9, 1)
    start = 2 ** 32 - 3 * compact._CHUNK // 2
    r = compact.random_bits(key, start, 3 * compact._CHUNK)
    mid = 3 * compact._CHUNK // 2                   # the index of e = 2**32
    for i in [*range(20), *range(mid - 10, mid + 10),
              compact._CHUNK - 1, compact._CHUNK, 3 * compact._CHUNK - 1]:
        assert int(r[i]) == py_bits(key, start + i)


def test_random_bits_uniform():
    r = compact.random_bits(compact.rounding_key(1, 2, 3, 0), 0, 2 ** 20).astype(np.int64)
    n = r.size
    assert abs(r.mean() - 32767.5) < 5 * 65536 / np.sqrt(12 * n)
    for b in range(16):
        p = np.mean((r >> b) & 1)
        assert abs(p - 0.5) < 5 * 0.5 / np.sqrt(n)


def test_round_against_python_and_neighbours():
    rng = np.random.default_rng(14)
    u = rng.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32)
    special = np.uint32([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF,
                         0x7F800001, 0xFF812345, 0x7FC00000, 0xFFFFFFFF, 0x00000001, 0x00010000,
                         0x3F800000, 0x3F80FFFF, 0x007FFFFF])
    u[:special.size] = special
    x = u.view(np.float32)
    for key, start in ((compact.rounding_key(0, 0, 0, 3), 0), (py_key(5, 6, 7, 0), 2 ** 32 - 100),
                       (M64, 2 ** 45)):
        got = compact.round_bf16_stochastic(x, key, start)
        assert got.dtype == np.uint16 and got.shape == x.shape
        exp = [py_round(int(v), key, start + i) for i, v in enumerate(u)]
        assert [int(v) for v in got] == exp
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        g = got.astype(np.uint32)
        trunc = u >> 16
        # non-NaN: the truncation or one bfloat16 ulp up in magnitude; exact values stay
        assert np.all(((g == trunc) | (g == trunc + 1))[~nan])
        assert np.all((g == trunc)[~nan & ((u & 0xFFFF) == 0)])
        assert np.all(g[nan] == (trunc[nan] | 0x40))
    got = compact.round_bf16_stochastic(f32(special[:10]), 99)
    assert list(got[:4]) == [0x0000, 0x8000, 0x7F80, 0xFF80]          # +-0, +-inf kept
    assert list(got[6:10]) == [0x7FC0, 0xFFC1, 0x7FC0, 0xFFFF]        # NaNs quieted


def test_round_largest_finite_goes_to_inf_almost_always():
    """0x7F7FFFFF has low bits 0xFFFF: it stays 0x7F7F only when r == 0 (probability 2**-16),
    otherwise it carries into the exponent: inf (as round-to-nearest gives too)."""
    n = 2 ** 20
    key = compact.rounding_key(3, 1, 4, 1)
    r = compact.random_bits(key, 0, n)
    for sign in (0, 0x80000000):
        x = np.full(n, f32(0x7F7FFFFF | sign))
        got = compact.round_bf16_stochastic(x, key)
        s16 = sign >> 16
        assert np.array_equal(got == (0x7F7F | s16), r == 0)
        assert np.all((got == (0x7F7F | s16)) | (got == (0x7F80 | s16)))
        assert 1 <= np.count_nonzero(r == 0) <= 40          # about 16 expected


def test_round_is_unbiased():
    """For each x, the mean of the rounded values over 4000 keys (and over 2**16 element
    indices) is within 5 standard errors of x: each rounds up with probability
    p = (low 16 bits) / 65536, so the mean's standard error is ulp * sqrt(p (1 - p) / K)."""
    rng = np.random.default_rng(15)
    x = np.concatenate([rng.standard_normal(40), np.exp(rng.uniform(-80, 80, 40)) *
                        rng.choice([-1, 1], 40)]).astype(np.float32)
    u = x.view(np.uint32)
    u[:4] = [0x3F800001, 0x3F80FFFF, 0x3F808000, 0xBF807FFF]     # p tiny, near 1, 1/2
    p = (u & 0xFFFF).astype(np.float64) / 65536
    lo = (u & 0xFFFF0000).view(np.float32).astype(np.float64)
    ulp = ((u & 0xFFFF0000) + 0x10000).view(np.float32).astype(np.float64) - lo
    K = 4000
    total = np.zeros(x.size)
    for k in range(K):
        total += (compact.round_bf16_stochastic(x, compact.rounding_key(2024, k, 0, 0))
                  .astype(np.uint32) << 16).view(np.float32)
    se = np.abs(ulp) * np.sqrt(p * (1 - p) / K)
    assert np.all(np.abs(total / K - x) <= 5 * se)
    # over element indices: x repeated, one key, starting beyond 2**32
    E = 2 ** 16
    rep = np.repeat(x[:20], E)
    got = compact.round_bf16_stochastic(rep, 77, 2 ** 32 - E).astype(np.uint32) << 16
    got = got.view(np.float32)
    means = got.reshape(20, E).astype(np.float64).mean(axis=1)
    se = np.abs(ulp[:20]) * np.sqrt(p[:20] * (1 - p[:20]) / E)
    assert np.all(np.abs(means - x[:20]) <= 5 * se + 0.0)


def test_round_shape_and_offset():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((7, 300)).astype(np.float32)
    key = compact.rounding_key(1, 1, 1, 1)
    full = compact.round_bf16_stochastic(x, key)
    assert full.shape == (7, 300)
    flat = full.reshape(-1)
    assert np.array_equal(flat[500:], compact.round_bf16_stochastic(x.reshape(-1)[500:], key, 500))
    # a view is rounded in its own C order: element indices are the view's, not the base's
    v = x[:, ::3]
    assert np.array_equal(compact.round_bf16_stochastic(v, key),
                          compact.round_bf16_stochastic(np.ascontiguousarray(v), key))
    assert compact.round_bf16_stochastic(np.zeros(0, np.float32), key).shape == (0,)
    with pytest.raises(TypeError):
        compact.round_bf16_stochastic(np.zeros(3), key)
