"""numpy reference of the compact optimizer-state formats.

Two formats, each defined bit for bit so that the compiled kernels can be tested against this
module for exact equality:

8-bit block-wise dynamic quantization (bitsandbytes' blockwise 8-bit optimizer state)
    An array of n float32 values, flattened in C order, is cut into blocks of BLOCK = 256
    elements counted from element 0 (the last block may be partial). Each block b stores one
    float32 ``absmax[b]`` and each element one uint8 code into a 256-entry map (`dynamic_map`):

        absmax  = float32 with bit pattern  max_i (bits(x_i) & 0x7FFFFFFF)       (uint32 max)
        inv     = 1.0f / absmax                                                  (float32)
        n_i     = x_i * inv                                                      (float32)
        code_i  = #{c : t_c < n_i},  t_c = (map[c] + map[c+1]) / 2 exact   (NaN n_i: zero code)
        decoded = map[code_i] * absmax                                           (float32)

    so code_i is the index of the map value nearest to n_i in exact arithmetic, ties to the
    smaller index.

Reproducible stochastic rounding float32 -> bfloat16
    The 16 random bits of element e of an array come from a counter-based hash of
    (seed, step, array, slot, e) (`rounding_key`, `random_bits`); the bfloat16 bit pattern is
    ``(bits(x) + r) >> 16``, so |x| rounds away from zero with probability
    (low 16 bits of x) / 65536 and the result is unbiased.

Only numpy is imported here; the tests compare against torch / bitsandbytes / torchao when
they are installed.
"""
import functools

import numpy as np

BLOCK = 256
"""Elements per quantization block (bitsandbytes' blocksize for its 8-bit optimizers)."""

# Elements handled per pass by quantize / dequantize / random_bits: a multiple of BLOCK that
# keeps the float64 / uint64 temporaries of one pass at a few MiB (32M-element arrays then run
# in seconds without allocating gigabytes).
_CHUNK = BLOCK * 4096

_M64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# The dynamic maps
# --------------------------------------------------------------------------------------------

def _torch_linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=torch.float32) on the CPU, bit for bit.

    torch's CPU kernel (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, linspace_kernel)
    computes in float32, with s = float32(start), e = float32(end):

        step = (e - s) / (steps - 1)                        (float32 subtract, float32 divide)
        out[i] = s + step * i              for i <  steps // 2
        out[i] = e - step * (steps - i - 1) for i >= steps // 2

    and the shipped x86 builds dispatch to their AVX2 / AVX512 compilation of that loop, where
    the compiler contracts `s + step * i` into one fused multiply-add: the product is exact and
    only the sum is rounded. (torch's "DEFAULT" capability, ATEN_CPU_CAPABILITY=default, rounds
    the product first and gives different last bits for steps >= 9: bitsandbytes' map then
    differs from the one here in 42 signed / 31 unsigned entries by one or two ulps.)

    Here, in float64: step * i is exact (a 24-bit step times an integer below 2**20), and so
    is s + step * i for the map's 0.1 and 1.0 (every term a multiple of min(2**-27, ulp(step))
    >= 2**-44 and below 2, so 45 bits suffice), hence one rounding of the float64 result to
    float32 is the fused multiply-add. Checked against torch for every length up to 300.
    """
    if not (1 <= steps < 1 << 20 and 0.1 <= start <= 1 and 0.1 <= end <= 1):
        raise ValueError("the exact emulation covers start, end in [0.1, 1], steps < 2**20")
    s, e = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([s], np.float32)
    step = (e - s) / np.float32(steps - 1)
    i = np.arange(steps, dtype=np.int64)
    half = steps // 2
    out = np.empty(steps, np.float32)
    out[:half] = np.float64(s) + np.float64(step) * i[:half].astype(np.float64)
    out[half:] = np.float64(e) - np.float64(step) * (steps - i[half:] - 1).astype(np.float64)
    return out


@functools.lru_cache(maxsize=None)
def _dynamic_map_cached(signed):
    parts = [np.array([0.0, 1.0], np.float32)]
    for i in range(7):      # max_exponent_bits = 7; total_bits = 8 leaves no additional items
        k = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        b = _torch_linspace_f32(0.1, 1.0, k)
        means = (b[:-1] + b[1:]) / np.float32(2.0)      # float32 add; halving is exact
        # torch multiplies a float32 tensor by the Python scalar 10**(-6+i) after rounding the
        # scalar to float32 (checked against torch: the float64 product rounded once differs
        # in 15 of the 127 signed positives), so: a float32 scale and a float32 multiply.
        scale = np.float32(10.0 ** (-6 + i))
        pos = means * scale
        parts.append(pos)
        if signed:
            parts.append(-pos)      # float32(-c) * m == -(float32(c) * m) exactly
    m = np.sort(np.concatenate(parts))
    assert m.shape == (256,) and np.all(np.diff(m) > 0)
    m.flags.writeable = False
    return m


def dynamic_map(signed):
    """The 256 float32 values of bitsandbytes' ``create_dynamic_map(signed, 7, 8)``, sorted
    ascending, as a read-only (cached) array.

    For i = 0..6: b = torch.linspace(0.1, 1, k_i) in float32 (k_i = 2**i + 1 signed,
    2**(i+1) + 1 unsigned; see `_torch_linspace_f32`), means = (b[:-1] + b[1:]) / 2 in float32,
    values float32(10**(-6+i)) * means (float32 multiply) and, signed, their negatives; plus 0
    and 1.0. Signed: 127 negatives (-0.99296874 .. -5.5e-7), 0 at index 127, 127 positives,
    1.0 at index 255. Unsigned: 0 at index 0, 254 positives, 1.0 at index 255.
    """
    return _dynamic_map_cached(bool(signed))


def zero_code(signed):
    """Index of 0.0 in `dynamic_map(signed)`: 127 signed, 0 unsigned (the code of NaN n_i)."""
    return 127 if signed else 0


@functools.lru_cache(maxsize=None)
def _thresholds_cached(signed):
    m = dynamic_map(signed).astype(np.float64)
    # Exact: the sum of two float32 values whose magnitudes are within 2**29 of each other (or
    # one of them 0) fits in 53 bits (adjacent map values are within a factor 3), and halving
    # a float64 is exact.
    t = (m[:-1] + m[1:]) / 2.0
    t.flags.writeable = False
    return t


def thresholds(signed):
    """The 255 float64 midpoints t_c = (map[c] + map[c+1]) / 2 of `dynamic_map(signed)`,
    exact, read-only. code(n) = #{c : t_c < n} = np.searchsorted(t, n, side="left")."""
    return _thresholds_cached(bool(signed))


# --------------------------------------------------------------------------------------------
# 8-bit block-wise quantization
# --------------------------------------------------------------------------------------------

def _flat_float32(x, name):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}")
    return np.ascontiguousarray(x).reshape(-1)


def _block_absmax(u):
    """absmax of each block of the uint32 bit patterns u (flat): the float32 whose pattern is
    the block's max of (u & 0x7FFFFFFF). An empty u gives an empty array."""
    nb = -(-u.size // BLOCK)
    if nb == 0:
        return np.empty(0, np.float32)
    mag = u & np.uint32(0x7FFFFFFF)
    return np.maximum.reduceat(mag, np.arange(0, u.size, BLOCK)).view(np.float32)


def quantize(x, signed):
    """Block-wise dynamic 8-bit quantization of float32 `x` (any shape, C order).

    Returns (codes, absmax): codes uint8 of x's shape, absmax float32 of shape
    (ceil(x.size / 256),). Per block of 256 elements:

        absmax = float32 from bits  max_i (bits(x_i) & 0x7FFFFFFF)
        inv    = 1.0f / absmax                  (0 -> +inf, NaN -> NaN)
        n_i    = x_i * inv                      (float32)
        code_i = #{c : t_c < n_i}  (t = thresholds(signed); nearest map value, ties to the
                 smaller index); n_i NaN -> zero_code(signed)

    Hence an all-zero block gives zero codes and absmax 0 (0 * inf is NaN); a NaN anywhere in
    a block makes absmax NaN and every code the zero code; an inf (no NaN) makes absmax inf,
    finite x_i give n_i = 0 and the inf itself NaN.
    """
    shape = np.shape(x)
    flat = _flat_float32(x, "x")
    u = flat.view(np.uint32)
    absmax = _block_absmax(u)
    codes = np.empty(flat.size, np.uint8)
    t = thresholds(signed)
    zc = np.uint8(zero_code(signed))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.float32(1.0) / absmax          # absmax 0 -> inf, subnormal may overflow to inf
        for lo in range(0, flat.size, _CHUNK):
            hi = min(lo + _CHUNK, flat.size)
            xs = flat[lo:hi]
            scale = np.repeat(inv[lo // BLOCK: -(-hi // BLOCK)], BLOCK)[: hi - lo]
            n = xs * scale                                       # float32 multiply
            # searchsorted compares in float64: exact for float32 n against exact midpoints.
            c = np.searchsorted(t, n.astype(np.float64), side="left").astype(np.uint8)
            c[np.isnan(n)] = zc
            codes[lo:hi] = c
    return codes.reshape(shape), absmax


def dequantize(codes, absmax, signed):
    """float32 values of `codes` (uint8, any shape, C order) with block scales `absmax`
    (float32, ceil(codes.size / 256) entries): x_i = map[code_i] * absmax[i // 256], a float32
    multiply."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    absmax = np.asarray(absmax)
    if absmax.dtype != np.float32:
        raise TypeError(f"absmax must be float32, got {absmax.dtype}")
    absmax = absmax.reshape(-1)
    shape = codes.shape
    flat = np.ascontiguousarray(codes).reshape(-1)
    if absmax.size != -(-flat.size // BLOCK):
        raise ValueError(f"absmax has {absmax.size} entries; {flat.size} codes need "
                         f"{-(-flat.size // BLOCK)}")
    m = dynamic_map(signed)
    out = np.empty(flat.size, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):      # 0 * inf is NaN by design
        for lo in range(0, flat.size, _CHUNK):
            hi = min(lo + _CHUNK, flat.size)
            scale = np.repeat(absmax[lo // BLOCK: -(-hi // BLOCK)], BLOCK)[: hi - lo]
            np.multiply(m[flat[lo:hi]], scale, out=out[lo:hi])
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------
# Reproducible stochastic rounding float32 -> bfloat16
# --------------------------------------------------------------------------------------------

def splitmix64(x):
    """splitmix64's output function (uint64 wrap-around), elementwise:

        x += 0x9E3779B97F4A7C15
        z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    x: a Python int in [0, 2**64) (returns an int) or an array of uint64 (returns uint64)."""
    if not isinstance(x, np.ndarray):
        x = int(x)
        if not 0 <= x <= _M64:
            raise ValueError("splitmix64 takes values in [0, 2**64)")
        return int(splitmix64(np.array([x], np.uint64))[0])
    if x.dtype != np.uint64:
        raise TypeError(f"splitmix64 takes uint64 arrays, got {x.dtype}")
    a = x.copy()            # the arithmetic below is in place
    a += np.uint64(0x9E3779B97F4A7C15)
    a ^= a >> np.uint64(30)
    a *= np.uint64(0xBF58476D1CE4E5B9)
    a ^= a >> np.uint64(27)
    a *= np.uint64(0x94D049BB133111EB)
    a ^= a >> np.uint64(31)
    return a


def rounding_key(seed, step, array, slot):
    """The key of one stored array at one update, a Python int in [0, 2**64):

        key = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ step) ^ array) ^ slot)

    seed: [0, 2**64); step: the state's step_count before the update; array: the array's
    position in the call; slot: the buffer slot (0, 1, 2) or 3 for the params."""
    for name, v in (("seed", seed), ("step", step), ("array", array), ("slot", slot)):
        if not 0 <= int(v) <= _M64:
            raise ValueError(f"{name} must be in [0, 2**64), got {v}")
    k = splitmix64(int(seed))
    k = splitmix64(k ^ int(step))
    k = splitmix64(k ^ int(array))
    return splitmix64(k ^ int(slot))


def _lowbias32(x):
    """In place on uint32 x: x ^= x >> 16; x *= 0x21f0aaad; x ^= x >> 15; x *= 0x735a2d97;
    x ^= x >> 15 (uint32 wrap-around)."""
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x21F0AAAD)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x735A2D97)
    x ^= x >> np.uint32(15)
    return x


def random_bits(key, start, n):
    """The 16 random bits (uint16, shape (n,)) of elements e = start .. start + n - 1 of an
    array whose key is `key`:

        k2 = splitmix64(key ^ (e >> 32));  x = uint32(e) ^ uint32(k2)
        x  = lowbias32(x);                 r = x >> 16

    e is an int64 index, so start + n <= 2**63."""
    key, start, n = int(key), int(start), int(n)
    if not 0 <= key <= _M64:
        raise ValueError("key must be in [0, 2**64)")
    if start < 0 or n < 0 or start + n > 1 << 63:
        raise ValueError("element indices must lie in [0, 2**63)")
    out = np.empty(n, np.uint16)
    # e >> 32 is constant over runs of 2**32 indices: one splitmix64 per run, then the low
    # 32 bits of e (uint32 arithmetic) for the elements, pass by pass.
    pos = 0
    while pos < n:
        e0 = start + pos
        hi = e0 >> 32
        run_end = min(n, ((hi + 1) << 32) - start)
        k2lo = splitmix64(key ^ hi) & 0xFFFFFFFF
        for lo in range(pos, run_end, _CHUNK):
            m = min(lo + _CHUNK, run_end)
            # uint32(e) = first + j: the run split keeps first + (m - lo) <= 2**32, no wrap
            first = (start + lo) & 0xFFFFFFFF
            x = np.arange(m - lo, dtype=np.uint32)
            x += np.uint32(first)
            x ^= np.uint32(k2lo)
            _lowbias32(x)
            out[lo:m] = x >> np.uint32(16)
        pos = run_end
    return out


def round_bf16_stochastic(x, key, start=0):
    """bfloat16 bit patterns (uint16, x's shape) of float32 `x` rounded stochastically, the
    element with flat (C order) index i using random_bits(key, start + i):

        u = bits(x_i);  NaN -> (u >> 16) | 0x40 (the quieted top half, as nearest rounding)
                        else -> (u + r) >> 16     (uint32)

    so |x_i| rounds away from zero with probability (u & 0xFFFF) / 65536: E[result] = x_i
    exactly for finite results; the largest finite values may round to inf."""
    shape = np.shape(x)
    flat = _flat_float32(x, "x")
    u = flat.view(np.uint32)
    r = random_bits(key, start, flat.size)
    out = np.empty(flat.size, np.uint16)
    for lo in range(0, flat.size, _CHUNK):
        hi = min(lo + _CHUNK, flat.size)
        us = u[lo:hi]
        s = us + r[lo:hi].astype(np.uint32)     # no wrap: non-NaN patterns are <= 0xFF800000
        s >>= np.uint32(16)
        nan = (us & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        s[nan] = (us[nan] >> np.uint32(16)) | np.uint32(0x40)
        out[lo:hi] = s
    return out.reshape(shape)
