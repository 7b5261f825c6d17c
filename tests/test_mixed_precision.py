"""Mixed precision (API.md "Mixed precision"): every dtype combination of the table, grad_scale
and max_grad_norm, against expectations built outside the state machinery and the kernels.

- Parity: the compiled step equals an expectation computed here with the lrcore.reference
  functions (widen to the compute type, g·factor, the update, narrow back), bit for bit, for
  every combination × every optimizer option × with and without grad_scale / max_grad_norm, over
  arrays of sizes around every vector width, NaN / inf / subnormal / huge values included.
- Half-precision semantics without lrcore's own rounding: numpy / ml_dtypes round the float32
  reference update.
- grad_scale = 2**k is exact; other scales multiply by (1 / scale) computed in float64.
- max_grad_norm: the norm against math.fsum, the same for every thread count and backend, and
  the clipping and non-finite rules in closed form.
- Every version of the loops and half conversions (portable, AVX2, AVX-512) the CPU runs,
  every thread count, and two different NaNs meeting in one element.
"""
import functools
import math

import ml_dtypes
import numpy as np
import pytest

import lrcore
from lrcore import _backend, _validate, reference
from lrcore.optimizers import clip_coefficient, grad_norm

from conftest import run_python
from conftest import LEVELS
from test_optimizers import CASE_IDS, CASES, OPTIMIZERS, buffer_names

BF16 = np.dtype(ml_dtypes.bfloat16)
BITS = _validate.BFLOAT16_BITS
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)

# API.md's table, bfloat16 both as ml_dtypes arrays and as BFLOAT16_BITS: id -> (params, grads)
COMBOS = {
    "f64": (F64, F64),
    "f32": (F32, F32),
    "f32-gf16": (F32, F16),
    "f32-gbf16": (F32, BF16),
    "f32-gbf16bits": (F32, BITS),
    "f16": (F16, F16),
    "bf16": (BF16, BF16),
    "bf16bits": (BITS, BITS),
}
HALF_PARAMS = ["f16", "bf16", "bf16bits"]
REFERENCE = {cls: ref for cls, ref, _, _ in OPTIMIZERS}


@pytest.fixture
def restore_threads():
    previous = lrcore.get_num_threads()
    yield
    lrcore.set_num_threads(previous)


# -- values in each format ---------------------------------------------------------------

def fmt(dtype):
    return _validate.format_of(np.dtype(dtype))


def uint_view(a):
    """The bit patterns of `a` as unsigned integers (a view of its memory when `a` is
    C-contiguous with at least one dimension; a 0-d array gives a copy of shape (1,))."""
    return np.ascontiguousarray(a).view(f"u{np.dtype(a.dtype).itemsize}")


def stored(values, dtype):
    """float64 `values` as an array of `dtype`, rounded to nearest (bfloat16 through
    float32: these are test data, not expectations)."""
    dtype = np.dtype(dtype)
    values = np.asarray(values, np.float64)
    with np.errstate(all="ignore"):
        if fmt(dtype) == "bfloat16":
            return values.astype(np.float32).astype(BF16).view(np.uint16).view(dtype)
        return values.astype(dtype)


def compute_dtype(dtype):
    return F64 if fmt(dtype) == "float64" else F32


def concat(arrays):
    """The arrays' elements end to end, in their dtype (bit patterns kept, BITS included)."""
    dtype = arrays[0].dtype
    return np.concatenate(arrays, axis=None, dtype=dtype)


def split_into(flat, targets):
    """Copy consecutive pieces of `flat` into `targets`, bit for bit."""
    pos = 0
    for t in targets:
        np.copyto(t.reshape(-1).view(uint_view(flat).dtype), uint_view(flat)[pos:pos + t.size])
        pos += t.size


def nan_blind(a):
    """`a`'s bit patterns with every NaN replaced by one marker: where two NaNs meet in one
    operation, IEEE 754 leaves open which comes out (and C fixes no operand order for a
    commutative operation), so the backends agree on where NaNs are, not on their bits."""
    bits = uint_view(a).astype(np.uint64)
    wide = reference.widen(np.asarray(a)).astype(np.float64).reshape(bits.shape)
    return np.where(np.isnan(wide), np.uint64(2**64 - 1), bits)


def same_float(a, b):
    """Equal floats or None, NaN equal to NaN."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


# -- the expectation -------------------------------------------------------------------

class Expected:
    """What a state of `cls(**options)` holds after each step, computed with the
    lrcore.reference functions on widened copies, outside the state machinery: the norm of
    the call by reference.grad_sumsq and torch's clipping formula, the factor (1 / grad_scale)
    · coef in float64, g·factor in the compute type, the update, each written value narrowed to
    its storage. Arrays of one (params, grads) dtype pair and update count are updated as one
    concatenated array (every operation is element-wise)."""

    def __init__(self, cls, options, params, max_grad_norm=None, nonfinite="propagate"):
        self.ref = REFERENCE[cls]
        self.nan_meets = False
        self.options = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
        start = options.get("initial_accumulator_value", 0.0)
        # one flat array per kind when all params share a dtype, the arrays views of it
        self.flat = len({p.dtype for p in params}) == 1
        self.params, self.flat_params = self._arrays([p.copy() for p in params])
        self.buffers, self.flat_buffers = {}, {}
        for name in buffer_names(cls, options):
            value = start if name == "sum" else 0.0
            if self.flat:
                dtype = params[0].dtype
                flat = reference.narrow(np.full(self.flat_params.size, value,
                                                compute_dtype(dtype)), dtype)
                self.buffers[name], self.flat_buffers[name] = self._split(flat, params), flat
            else:
                self.buffers[name], self.flat_buffers[name] = [
                    reference.narrow(np.full(p.shape, value, compute_dtype(p.dtype)), p.dtype)
                    for p in params], None
        self.array_steps = [0] * len(params)
        self.step_count = self.skipped_steps = 0
        self.last_grad_norm = None
        self.max_grad_norm, self.nonfinite = max_grad_norm, nonfinite

    @staticmethod
    def _split(flat, like):
        views, pos = [], 0
        for a in like:
            views.append(flat[pos:pos + a.size].reshape(a.shape))
            pos += a.size
        return views

    def _arrays(self, arrays):
        if not self.flat:
            return arrays, None
        flat = concat(arrays)
        return self._split(flat, arrays), flat

    def step(self, grads, lr, grad_scale=None, sumsq=None):
        """One step; returns False when skipped, raises FloatingPointError under "raise".
        sumsq: reference.grad_sumsq(grads), if the caller has it."""
        scale = 1.0 if grad_scale is None else float(grad_scale)
        coef, norm = 1.0, None
        if self.max_grad_norm is not None:
            sumsq, finite = sumsq or reference.grad_sumsq(grads)
            norm = math.sqrt(sumsq) / scale
            coef = self.max_grad_norm / (norm + 1e-6)
            coef = 1.0 if coef > 1.0 else coef      # NaN stays NaN, as torch's clamp
        else:
            finite = all(g is None or np.isfinite(reference.widen(g)).all() for g in grads)
        if not finite and self.nonfinite == "raise":
            raise FloatingPointError("non-finite gradient")
        if not finite and self.nonfinite == "skip":
            self.skipped_steps += 1
            if norm is not None:
                self.last_grad_norm = norm
            return False
        factor = (1.0 / scale) * coef
        # A NaN factor makes every gradient NaN, so a NaN param or buffer meets another NaN in
        # the update (weight decay, the moment sums); IEEE 754 leaves open which one comes out
        # and C compilers order such operands freely (GCC's SSE2 and AVX code differ), so from
        # here on a NaN is compared as NaN, not bit for bit (the README's one exception).
        self.nan_meets = self.nan_meets or math.isnan(factor)
        groups = {}
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is not None:
                groups.setdefault((p.dtype, g.dtype, self.array_steps[i]), []).append(i)
        whole = self.flat and len(groups) == 1 and sum(map(len, groups.values())) == len(grads)
        for (dtype, _, step), members in groups.items():
            if whole:
                p, bufs = self.flat_params, self.flat_buffers
            else:
                p = concat([self.params[i] for i in members])
                bufs = {name: concat([arrays[i] for i in members])
                        for name, arrays in self.buffers.items()}
            wp = reference.widen(p)
            g = reference.widen(concat([grads[i] for i in members]))
            g = g * g.dtype.type(factor)
            wb = {name: reference.widen(b) for name, b in bufs.items()}
            with np.errstate(all="ignore"):
                self.ref(wp, g, step=step, lr=lr, **wb, **self.options)
            if whole:
                np.copyto(uint_view(p), uint_view(reference.narrow(wp, dtype)))
                for name, b in wb.items():
                    np.copyto(uint_view(bufs[name]), uint_view(reference.narrow(b, dtype)))
            else:
                split_into(reference.narrow(wp, dtype), [self.params[i] for i in members])
                for name, b in wb.items():
                    split_into(reference.narrow(b, dtype),
                               [self.buffers[name][i] for i in members])
            for i in members:
                self.array_steps[i] += 1
        self.step_count += 1
        if norm is not None:
            self.last_grad_norm = norm
        return True

    def assert_matches(self, state, params, where=""):
        assert [p.dtype for p in params] == [p.dtype for p in self.params]
        assert sorted(state.buffers) == sorted(self.buffers)
        pairs = [("params", params, self.params)] + [
            (name, state.buffers[name], arrays) for name, arrays in self.buffers.items()]
        for name, got, want in pairs:
            if self.flat:
                if np.array_equal(uint_view(concat(got)), uint_view(concat(want))):
                    continue
            for i, (a, b) in enumerate(zip(got, want)):
                assert fmt(a.dtype) == fmt(b.dtype), (name, i)
                if self.nan_meets:
                    a, b = (np.where(np.isnan(reference.widen(x)), np.nan, x) for x in (a, b))
                if not np.array_equal(uint_view(a), uint_view(b)):
                    bad = np.flatnonzero(uint_view(a).ravel() != uint_view(b).ravel())
                    raise AssertionError(
                        f"{where}{name}[{i}] differs at {bad[:8].tolist()} ({bad.size} of "
                        f"{a.size}): got {reference.widen(a).ravel()[bad[:4]]}, want "
                        f"{reference.widen(b).ravel()[bad[:4]]}")
        assert state.step_count == self.step_count
        assert state.array_steps == self.array_steps
        assert state.skipped_steps == self.skipped_steps
        assert same_float(state.last_grad_norm, self.last_grad_norm), \
            (where, state.last_grad_norm, self.last_grad_norm)


# -- parity over every combination, option, grad_scale and max_grad_norm ----------------

# Around every vector width and tail (4, 8, 16 floats; 2, 4, 8 doubles; unrolled loops) and
# the half-precision path's blocks of 512 (src/kernels.h LRC_BLOCK)
SIZES = tuple(range(1, 71)) + (127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025)
# grad_scale, max_grad_norm and maximize change a scalar (a factor, a sign mask) of the call,
# not the loop that runs: every loop (each combination × wd / momentum mode / centered /
# amsgrad ...) runs on SIZES with both grad_scale and max_grad_norm, the rest on fewer sizes
SMALL_SIZES = (1, 7, 8, 9, 15, 16, 17, 33, 1025)
STEP_SCALES = [1.0, 0.1, 3.0, 0.01]      # the last step also holds the special values
# (grad_scale, max_grad_norm): the steps' norms (≈ 82·scale over SIZES, 35·scale over
# SMALL_SIZES, over grad_scale) are clipped in some steps and not in others
VARIANTS = {"both": (0.25, 20.0), "plain": (None, None), "grad_scale": (3.0, None),
            "max_grad_norm": (None, 5.0)}

SPECIAL_PARAMS = {"float64": [np.nan, np.inf, -np.inf, 1e-310, 1e300, -0.0, -1e-320],
                  "float32": [np.nan, np.inf, -np.inf, 1e-40, 3e38, -0.0, -1e-44],
                  "float16": [np.nan, np.inf, -np.inf, 2.0**-20, 60000.0, -0.0, -2.0**-24],
                  "bfloat16": [np.nan, np.inf, -np.inf, 1e-40, 3e38, -0.0, -1e-39]}
SPECIAL_GRADS = SPECIAL_PARAMS


@functools.lru_cache(maxsize=None)
def parity_data(combo, sizes=SIZES, steps=len(STEP_SCALES), seed=5):
    """(params as one flat array, [flat grads per step], [(sumsq, finite) per step]) for
    `combo`: random values, special ones in the last array and in the last step's grads.
    Cached: read-only."""
    pdtype, gdtype = COMBOS[combo]
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    params = rng.standard_normal(n)
    params[n - sizes[-1]:n - sizes[-1] + 7] = SPECIAL_PARAMS[fmt(pdtype)]
    params[-3] = SPECIAL_PARAMS[fmt(pdtype)][3]
    grads = []
    for k, scale in enumerate(STEP_SCALES[:steps]):
        g = rng.standard_normal(n) * scale
        if k == steps - 1:
            g[n - sizes[-1] + 10:n - sizes[-1] + 17] = SPECIAL_GRADS[fmt(gdtype)]
            g[min(40, n - 1)] = SPECIAL_GRADS[fmt(gdtype)][4]
        g = stored(g, gdtype)
        g.flags.writeable = False
        grads.append(g)
    p = stored(params, pdtype)
    p.flags.writeable = False
    return p, grads, [reference.grad_sumsq(split(g, sizes)) for g in grads]


def split(flat, sizes):
    """Views of consecutive pieces of `flat`, one per size (disjoint, as a framework lays
    weights out)."""
    out, pos = [], 0
    for n in sizes:
        out.append(flat[pos:pos + n])
        pos += n
    return out


def run_parity(cls, lr, options, combo, grad_scale, max_grad_norm, sizes=SIZES):
    flat, grads, sums = parity_data(combo, sizes)
    flat = flat.copy()
    params = split(flat, sizes)
    expected = Expected(cls, options, params, max_grad_norm)
    state = cls(lr=lr, max_grad_norm=max_grad_norm, **options)
    for k, (g, sumsq) in enumerate(zip(grads, sums)):
        g = split(g, sizes)
        with np.errstate(all="ignore"):
            assert lrcore.step(params, g, state, grad_scale=grad_scale) == lr
        expected.step(g, lr, grad_scale, sumsq)
        expected.assert_matches(state, params, f"step {k}: ")
    return state


@pytest.mark.parametrize("variants", [["both"], ["plain", "grad_scale", "max_grad_norm"]],
                         ids=["both", "plain-grad_scale-max_grad_norm"])
@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_compiled_equals_the_reference_for_every_combination(compiled, cls, ref, lr, options,
                                                             combo, variants):
    for variant in variants:
        grad_scale, max_grad_norm = VARIANTS[variant]
        every_width = variant == "both" and not options.get("maximize")
        run_parity(cls, lr, options, combo, grad_scale, max_grad_norm,
                   SIZES if every_width else SMALL_SIZES)


@pytest.mark.parametrize("variant", ["plain", "both"])
@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("cls, ref, lr, options", CASES[::5], ids=CASE_IDS[::5])
def test_the_numpy_backend_equals_the_reference_for_every_combination(
        numpy_backend, cls, ref, lr, options, combo, variant):
    run_parity(cls, lr, options, combo, *VARIANTS[variant], sizes=SMALL_SIZES)


# the richest options of each optimizer, with every buffer it can have
RICHEST = [(cls, lr, options[-1] if cls is not lrcore.RMSprop else dict(centered=True,
                                                                       momentum=0.9,
                                                                       weight_decay=0.01))
           for cls, _, lr, options in OPTIMIZERS]
BIG = (2 * 32768 + 5, 1, 40001, 17)        # > 2 * CHUNK elements: the pool runs


@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("cls, lr, options", RICHEST, ids=[c.__name__ for c, _, _ in RICHEST])
def test_every_thread_count_gives_the_reference_bits(compiled, restore_threads, cls, lr, options,
                                                     combo):
    """A call of > 2·CHUNK elements runs on the pool: threads 1, 2, 3, 4 all equal the
    reference (params, buffers and the clipping norm), with grad_scale and max_grad_norm."""
    flat0, grads, sums = parity_data(combo, BIG, 4)
    expected = Expected(cls, options, split(flat0, BIG), max_grad_norm=50.0)
    runs = []
    for threads in (1, 2, 3, 4):
        flat = flat0.copy()
        runs.append((threads, split(flat, BIG), cls(lr=lr, max_grad_norm=50.0, **options)))
    for k, (g, sumsq) in enumerate(zip(grads, sums)):
        g = split(g, BIG)
        for threads, params, state in runs:
            lrcore.set_num_threads(threads)
            with np.errstate(all="ignore"):
                lrcore.step(params, g, state, grad_scale=0.5)
        expected.step(g, lr, 0.5, sumsq)
        for threads, params, state in runs:
            expected.assert_matches(state, params, f"step {k}, {threads} threads: ")


@pytest.mark.parametrize("vector_level", LEVELS, indirect=True)
@pytest.mark.parametrize("variant", ["plain", "both"])
@pytest.mark.parametrize("combo", [c for c in COMBOS if c != "f64"])
@pytest.mark.parametrize("cls, lr, options", RICHEST, ids=[c.__name__ for c, _, _ in RICHEST])
def test_every_loop_version_gives_the_reference_bits(compiled, cls, lr, options, combo, variant,
                                                     vector_level):
    """The portable, AVX2 (F16C) and AVX-512 versions (those this CPU runs) of the block
    conversions and of the loops, with a gradient factor of 1 ("plain": the loops that skip
    the multiply, src/kernels_impl.h LRC_SCALED) and without, over every size of SIZES
    (vector tails, blocks of 512), subnormal and other special gradients included."""
    run_parity(cls, lr, options, combo, *VARIANTS[variant])


def test_one_call_over_every_combination_at_once(backend):
    """Mixed structure: float32 params with bfloat16 grads beside float64, float16, bfloat16
    (both kinds, and one kind of params with the other kind of grads) and float32-with-float16
    params, one call, with grad_scale and clipping."""
    rng = np.random.default_rng(9)
    combos = dict(COMBOS, **{"bf16-gbits": (BF16, BITS), "bits-gbf16": (BITS, BF16)})
    order = ["f32-gbf16", "f64", "f16", "bf16", "f32-gf16", "bf16bits", "f32", "f32-gbf16bits",
             "bf16-gbits", "bits-gbf16"]
    shapes = [(33,), (5, 7), (129,), (2, 3, 4), (1,), (17,), (), (64,), (31,), (9,)]
    params = [stored(rng.standard_normal(s), combos[c][0]) for c, s in zip(order, shapes)]
    for cls, lr, options in RICHEST:
        ps = [p.copy() for p in params]
        expected = Expected(cls, options, ps, max_grad_norm=3.0)
        state = cls(lr=lr, max_grad_norm=3.0, **options)
        for k in range(4):
            grads = [stored(rng.standard_normal(s) * 2.0**-k, combos[c][1])
                     for c, s in zip(order, shapes)]
            if k == 2:
                grads[3] = None     # a frozen array: its count falls behind
            lrcore.step(ps, grads, state, grad_scale=2.0)
            expected.step(grads, lr, 2.0)
            expected.assert_matches(state, ps, f"{cls.__name__} step {k}: ")
        assert [p.dtype for p in ps] == [p.dtype for p in params]
        assert state.array_steps == [4, 4, 4, 3, 4, 4, 4, 4, 4, 4]


def test_the_grads_dtype_may_change_between_steps(backend):
    """The state binds the params' dtypes; float32 params may take float32, float16 or
    bfloat16 grads from one step to the next."""
    rng = np.random.default_rng(4)
    p = stored(rng.standard_normal(50), F32)
    expected = Expected(lrcore.Adam, {}, [p])
    state = lrcore.Adam(lr=0.01)
    for gdtype in (F32, F16, BF16, BITS, F32):
        g = stored(rng.standard_normal(50), gdtype)
        lrcore.step(p, g, state)
        expected.step([g], 0.01)
        expected.assert_matches(state, [p])


# -- half precision: the float32 update, rounded by numpy / ml_dtypes --------------------

def to_float32(a):
    """Half-precision storage widened by numpy / ml_dtypes (exact)."""
    if fmt(a.dtype) == "bfloat16":
        return a.view(np.uint16).view(BF16).astype(np.float32)
    return a.astype(np.float32)


def round_to(x, dtype):
    """float32 x rounded to nearest even in `dtype` by numpy / ml_dtypes; NaNs by the rule
    of src/formats.h (quieted, sign and top payload kept), written out on the bits."""
    x = np.ascontiguousarray(x, np.float32)
    bits = x.view(np.uint32)
    nan = np.isnan(x)
    with np.errstate(all="ignore"):
        if fmt(dtype) == "float16":
            out = np.where(nan, 0, x).astype(np.float16).view(np.uint16)
            rule = ((bits >> 16) & 0x8000) | 0x7E00 | ((bits >> 13) & 0x3FF)
        else:
            out = np.where(nan, 0, x).astype(BF16).view(np.uint16)
            rule = (bits >> 16) | 0x40
    return np.where(nan, rule, out).astype(np.uint16).view(dtype)


@pytest.mark.parametrize("combo", HALF_PARAMS)
@pytest.mark.parametrize("cls, ref, lr, options", CASES, ids=CASE_IDS)
def test_half_params_step_is_the_float32_step_rounded(backend, cls, ref, lr, options, combo):
    """Each step = widen params, grads and buffers to float32 (numpy / ml_dtypes), run the
    float32 reference function, round every written value to nearest even (numpy /
    ml_dtypes), with no lrcore conversion in the expectation."""
    dtype = COMBOS[combo][0]
    rng = np.random.default_rng(13)
    p = stored(rng.standard_normal(67), dtype)
    start = options.get("initial_accumulator_value", 0.0)
    update = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    want_p = p.copy()
    want_b = {n: round_to(np.full(67, start if n == "sum" else 0.0, np.float32), dtype)
              for n in buffer_names(cls, options)}
    state = cls(lr=lr, **options)
    for k in range(3):
        g = stored(rng.standard_normal(67) * 10.0**-k, dtype)
        lrcore.step(p, g, state)
        p32, g32 = to_float32(want_p), to_float32(g)
        b32 = {n: to_float32(b) for n, b in want_b.items()}
        ref(p32, g32, step=k, lr=lr, **b32, **update)
        want_p = round_to(p32, dtype)
        want_b = {n: round_to(b, dtype) for n, b in b32.items()}
        assert p.dtype == dtype
        np.testing.assert_array_equal(uint_view(p), uint_view(want_p))
        for n, b in want_b.items():
            assert state.buffers[n][0].dtype == dtype
            np.testing.assert_array_equal(uint_view(state.buffers[n][0]), uint_view(b), err_msg=n)


@pytest.mark.parametrize("combo", HALF_PARAMS + ["f32-gf16", "f32-gbf16"])
def test_half_precision_with_grad_scale_and_clipping_is_the_float32_step(backend, combo):
    """Adam with grad_scale and max_grad_norm: g·float32((1 / scale)·coef) first, coef from
    the float64 norm of the widened grads, then as above."""
    pdtype, gdtype = COMBOS[combo]
    rng = np.random.default_rng(14)
    p = stored(rng.standard_normal(300), pdtype)
    want_p = to_float32(p) if pdtype != F32 else p.copy()
    m = np.zeros(300, np.float32)
    v = np.zeros(300, np.float32)
    state = lrcore.Adam(lr=0.01, max_grad_norm=1.0, amsgrad=False)
    for k in range(3):
        g = stored(rng.standard_normal(300) * 8, gdtype)
        lrcore.step(p, g, state, grad_scale=8.0)
        g32 = to_float32(g)
        norm = math.sqrt(math.fsum((g32.astype(np.float64) ** 2).tolist())) / 8.0
        assert state.last_grad_norm == pytest.approx(norm, rel=1e-12)
        coef = min(1.0, 1.0 / (state.last_grad_norm + 1e-6))
        g32 = g32 * np.float32((1 / 8.0) * coef)
        p32 = to_float32(want_p) if pdtype != F32 else want_p
        reference.adam(p32, g32, m, v, step=k, lr=0.01)
        if pdtype != F32:
            want_p = round_to(p32, pdtype)
            m, v = to_float32(round_to(m, pdtype)), to_float32(round_to(v, pdtype))
            np.testing.assert_array_equal(uint_view(state.buffers["exp_avg"][0]),
                                          uint_view(round_to(m, pdtype)))
        else:
            want_p = p32
        np.testing.assert_array_equal(uint_view(p), uint_view(want_p))


# -- grad_scale -------------------------------------------------------------------------

EMIN_EMAX = {"float64": (-1022, 1023), "float32": (-126, 127), "float16": (-14, 15),
             "bfloat16": (-126, 127)}


def scalable_grads(rng, gdtype, k, n):
    """Grads G (normal values of gdtype, random signs and mantissas, exponents within
    [-12, 12]) with G·2**k exactly representable in gdtype too (no overflow, no subnormal)."""
    lo, hi = EMIN_EMAX[fmt(gdtype)]
    top = 6 if fmt(gdtype) == "float16" else 12     # float16 second moments stay finite
    lo, hi = max(lo, lo - k, -12), min(hi - 1, hi - 1 - k, top)
    e = rng.integers(lo, hi + 1, n)
    values = rng.uniform(1, 2, n) * np.exp2(e) * rng.choice([-1, 1], n)
    return stored(values, gdtype)


def scaled(g, k):
    """g·2**k in g's dtype (exact for scalable_grads)."""
    wide = reference.widen(g).astype(np.float64) * 2.0**k
    out = stored(wide, g.dtype)
    assert np.array_equal(reference.widen(out).astype(np.float64), wide)    # exact
    return out


@pytest.mark.parametrize("combo", list(COMBOS))
def test_grad_scale_powers_of_two_are_exact(backend, combo):
    """Grads multiplied by 2**k with grad_scale = 2**k, k in -10..20: params, buffers and
    last_grad_norm bit-identical to the unscaled grads, every optimizer."""
    pdtype, gdtype = COMBOS[combo]
    rng = np.random.default_rng(21)
    ks = range(-10, 21) if _backend.active == "cython" else range(-10, 21, 3)
    for k in ks:
        for cls, lr, options in RICHEST:
            mgn = 0.5 if k % 2 else None
            start = stored(rng.standard_normal(40), pdtype)
            grads = [scalable_grads(rng, gdtype, k, 40) for _ in range(3)]
            runs = []
            for factor, scale in ((0, None), (k, 2.0**k)):
                p = start.copy()
                state = cls(lr=lr, max_grad_norm=mgn, **options)
                for g in grads:
                    lrcore.step(p, scaled(g, factor), state, grad_scale=scale)
                runs.append((p, state))
            (p0, s0), (p1, s1) = runs
            assert np.isfinite(reference.widen(p0)).all(), (k, cls.__name__)   # not vacuous
            assert np.array_equal(uint_view(p0), uint_view(p1)), (k, cls.__name__)
            for name in s0.buffers:
                assert np.array_equal(uint_view(s0.buffers[name][0]),
                                      uint_view(s1.buffers[name][0])), (k, cls.__name__, name)
            assert same_float(s0.last_grad_norm, s1.last_grad_norm)
            assert (s0.last_grad_norm is None) == (mgn is None)


@pytest.mark.parametrize("scale", [3.0, 0.3, 7e-3, 1e3 / 3])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_grad_scale_multiplies_by_the_float64_reciprocal(backend, combo, scale):
    """SGD without momentum in closed form: p ← p − lr·(g·c), c = 1 / scale computed in
    float64 and cast to the compute type (a multiplication, not a division by scale)."""
    pdtype, gdtype = COMBOS[combo]
    rng = np.random.default_rng(22)
    p = stored(rng.standard_normal(200), pdtype)
    g = stored(rng.standard_normal(200) * scale, gdtype)
    real = compute_dtype(pdtype).type
    p_wide = to_float32(p) if fmt(pdtype) in ("float16", "bfloat16") else p.copy()
    g_wide = to_float32(g) if fmt(gdtype) in ("float16", "bfloat16") else g.astype(real)
    want = p_wide - real(0.1) * (g_wide * real(1.0 / scale))
    want = round_to(want, pdtype) if fmt(pdtype) in ("float16", "bfloat16") else want
    lrcore.step(p, g, lrcore.SGD(lr=0.1), grad_scale=scale)
    np.testing.assert_array_equal(uint_view(p), uint_view(want))


@pytest.mark.parametrize("scale", [3.0, np.float32(3.0), np.float64(0.5), 2, 10**30])
def test_grad_scale_accepts_any_real_number_type(backend, scale):
    p, q = np.ones(3), np.ones(2, np.float32)
    state = lrcore.SGD(lr=1.0)
    for _ in range(2):      # the first (binding) step and a bound one; a tuple takes Python's path
        lrcore.step((p, q), (np.full(3, 6.0), np.full(2, 6.0, np.float16)), state, grad_scale=scale)
        lrcore.step([p, q], [np.full(3, 6.0), np.full(2, 6.0, np.float16)], state, grad_scale=scale)
    np.testing.assert_array_equal(p, 1 - 4 * (6.0 * (1.0 / float(scale))))


def test_grad_scale_works_without_the_compiled_extension():
    """A pure-Python install (no lrcore._kernels) takes grad_scale too (API.md)."""
    code = ("import sys, warnings; sys.modules['lrcore._kernels'] = None\n"
            "warnings.simplefilter('ignore')\n"
            "import numpy as np, lrcore\n"
            "assert lrcore.backend == 'numpy', lrcore.backend\n"
            "p = np.zeros(3, np.float32)\n"
            "assert lrcore.step(p, np.ones(3, np.float32), lrcore.SGD(lr=1.0), grad_scale=2.0) == 1.0\n"
            "assert p.tolist() == [-0.5] * 3, p\n"
            "print('ok')\n")
    out = run_python("-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- max_grad_norm ----------------------------------------------------------------------

def fsum_norm(grads, scale=1.0):
    """‖g‖₂ / scale from exact float64 squares summed by math.fsum (independent of the
    kernels' order)."""
    squares = []
    for g in grads:
        if g is not None:
            wide = to_float32(g) if fmt(g.dtype) in ("float16", "bfloat16") else g
            squares += (wide.astype(np.float64).ravel() ** 2).tolist()
    return math.sqrt(math.fsum(squares)) / scale


@pytest.mark.parametrize("combo", list(COMBOS))
def test_the_norm_matches_fsum_for_every_thread_count_and_backend(restore_threads, combo):
    """grad_norm and state.last_grad_norm: within 1e-12 of math.fsum's, and the same bits
    for threads 1..4 and both backends."""
    if _backend._kernels is None:
        pytest.skip("compiled kernels not built")
    _, gdtype = COMBOS[combo]
    rng = np.random.default_rng(23)
    sizes = [3 * 32768 + 5, 0, 17, 40000]
    grads = [stored(rng.standard_normal(n) * 10.0**rng.integers(-3, 3, n), gdtype) for n in sizes]
    grads.insert(2, None)
    pdtype = COMBOS[combo][0]
    want = fsum_norm(grads, 4.0)
    seen = set()
    previous = _backend.active
    try:
        for backend in ("cython", "numpy"):
            lrcore.set_backend(backend)
            for threads in ((1, 2, 3, 4) if backend == "cython" else (1,)):
                lrcore.set_num_threads(threads)
                norm, finite = grad_norm(grads, 4.0)
                assert finite is True
                assert norm == pytest.approx(want, rel=1e-12)
                params = [np.zeros(0 if g is None else g.size, pdtype) for g in grads]
                state = lrcore.SGD(lr=0.0, max_grad_norm=1.0)
                assert state.last_grad_norm is None
                lrcore.step(params, grads, state, grad_scale=4.0)
                assert state.last_grad_norm == norm
                seen.add(norm.hex())
    finally:
        lrcore.set_backend(previous)
    assert len(seen) == 1


@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("max_grad_norm", [0.5, 1e6])
def test_clipping_in_closed_form(backend, combo, max_grad_norm):
    """SGD without momentum: p ← p − lr·(g·c), c = (1 / scale)·min(1, max / (norm + 1e-6))
    computed in float64 and cast; last_grad_norm is the norm before clipping."""
    pdtype, gdtype = COMBOS[combo]
    rng = np.random.default_rng(24)
    p = stored(rng.standard_normal(100), pdtype)
    g = stored(rng.standard_normal(100) * 2, gdtype)
    norm = fsum_norm([g], 2.0)
    real = compute_dtype(pdtype).type
    state = lrcore.SGD(lr=0.1, max_grad_norm=max_grad_norm)
    assert state.last_grad_norm is None
    half = fmt(pdtype) in ("float16", "bfloat16")
    p_wide = to_float32(p) if half else p.copy()
    g_wide = to_float32(g) if fmt(gdtype) in ("float16", "bfloat16") else g.astype(real)
    lrcore.step(p, g, state, grad_scale=2.0)
    assert state.last_grad_norm == pytest.approx(norm, rel=1e-12)
    coef = min(1.0, max_grad_norm / (state.last_grad_norm + 1e-6))
    assert (coef < 1) == (max_grad_norm < norm)
    want = p_wide - real(0.1) * (g_wide * real((1 / 2.0) * coef))
    want = round_to(want, pdtype) if half else want
    np.testing.assert_array_equal(uint_view(p), uint_view(want))


def test_clip_coefficient_is_torchs_clamp():
    assert clip_coefficient(1.0, 10.0) == 1.0
    assert clip_coefficient(4.0, 1.0) == 1.0 / (4.0 + 1e-6)
    assert clip_coefficient(math.inf, 1.0) == 0.0
    assert math.isnan(clip_coefficient(math.nan, 1.0))


def test_last_grad_norm_is_none_without_max_grad_norm(backend):
    state = lrcore.Adam(lr=0.1)
    assert state.last_grad_norm is None
    for _ in range(3):
        lrcore.step(np.ones(4, np.float32), np.ones(4, np.float32), state, grad_scale=2.0)
    assert state.last_grad_norm is None
    assert state.max_grad_norm is None and lrcore.Adam(max_grad_norm=2).max_grad_norm == 2.0


@pytest.mark.parametrize("bad, want_norm", [(np.inf, math.inf), (np.nan, math.nan)])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_skip_with_clipping_changes_nothing_but_records_the_norm(backend, combo, bad, want_norm):
    pdtype, gdtype = COMBOS[combo]
    p = stored(np.linspace(-1, 1, 20), pdtype)
    state = lrcore.Adam(lr=0.1, max_grad_norm=1.0, nonfinite="skip")
    lrcore.step(p, stored(np.ones(20), gdtype), state)
    assert state.last_grad_norm == pytest.approx(math.sqrt(20), rel=1e-12)
    before = p.copy(), state.state_dict()
    g = np.ones(20)
    g[7] = bad
    assert lrcore.step(p, stored(g, gdtype), state, grad_scale=2.0) == 0.0
    assert np.array_equal(uint_view(p), uint_view(before[0]))
    assert state.skipped_steps == 1 and state.step_count == 1 and state.array_steps == [1]
    for name, (b,) in before[1]["buffers"].items():
        assert np.array_equal(uint_view(state.buffers[name][0]), uint_view(b))
    assert same_float(state.last_grad_norm, want_norm)


@pytest.mark.parametrize("combo", list(COMBOS))
def test_raise_with_clipping_leaves_last_grad_norm(backend, combo):
    pdtype, gdtype = COMBOS[combo]
    p = stored(np.linspace(-1, 1, 20), pdtype)
    state = lrcore.SGD(lr=0.1, momentum=0.9, max_grad_norm=1.0, nonfinite="raise")
    lrcore.step(p, stored(np.full(20, 2.0), gdtype), state)
    norm = state.last_grad_norm
    assert norm == pytest.approx(math.sqrt(80), rel=1e-12)
    before = p.copy(), state.buffers["momentum_buffer"][0].copy()
    g = np.ones(20)
    g[3] = -np.inf
    with pytest.raises(FloatingPointError, match=r"grads\[0\]"):
        lrcore.step(p, stored(g, gdtype), state)
    assert state.last_grad_norm == norm
    assert np.array_equal(uint_view(p), uint_view(before[0]))
    assert np.array_equal(uint_view(state.buffers["momentum_buffer"][0]), uint_view(before[1]))
    assert state.step_count == 1 and state.skipped_steps == 0


@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_propagate_with_clipping_follows_torch(combo, n):
    """nonfinite="propagate": an inf grad makes the norm inf and coef 0, so each update uses
    g·0: finite grads leave p as it was, inf grads make it NaN (inf·0); a NaN grad makes
    coef NaN and every param NaN. Both backends give the same bits, but for NaNs (a NaN
    gradient times the NaN coefficient: see nan_blind)."""
    pdtype, gdtype = COMBOS[combo]
    results = []
    for backend in (["cython"] if _backend._kernels is not None else []) + ["numpy"]:
        previous = _backend.active
        lrcore.set_backend(backend)
        try:
            out = []
            for bad in (np.inf, np.nan):
                p = stored(np.linspace(-1, 1, n), pdtype)
                start = p.copy()
                g = np.ones(n)
                g[5] = bad
                g[6] = -bad
                state = lrcore.SGD(lr=0.1, max_grad_norm=1.0)
                with np.errstate(all="ignore"):
                    lrcore.step(p, stored(g, gdtype), state)
                    wide = reference.widen(p).astype(np.float64)
                if bad == np.inf:
                    assert state.last_grad_norm == math.inf
                    assert np.isnan(wide[[5, 6]]).all()
                    keep = np.ones(n, bool)
                    keep[[5, 6]] = False
                    assert np.array_equal(uint_view(p)[keep], uint_view(start)[keep])
                else:
                    assert math.isnan(state.last_grad_norm)
                    assert np.isnan(wide).all()
                out.append(nan_blind(p))
            results.append(out)
        finally:
            lrcore.set_backend(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_nonfinite_rules_without_clipping(backend, combo, bad):
    """nonfinite="skip" / "raise" see a non-finite half-precision or float32 gradient in any
    storage (bfloat16 as bits included): skip changes nothing but skipped_steps, raise names
    the array and changes nothing."""
    pdtype, gdtype = COMBOS[combo]
    for nonfinite in ("skip", "raise"):
        params = [stored(np.linspace(-1, 1, 9), pdtype), stored(np.linspace(1, 2, 33), pdtype)]
        state = lrcore.RMSprop(lr=0.1, momentum=0.5, nonfinite=nonfinite)
        lrcore.step(params, [stored(np.ones(9), gdtype), stored(np.ones(33), gdtype)], state)
        before = [p.copy() for p in params], state.state_dict()
        g = np.ones(33)
        g[17] = bad
        grads = [stored(np.ones(9), gdtype), stored(g, gdtype)]
        if nonfinite == "skip":
            assert lrcore.step(params, grads, state, grad_scale=2.0) == 0.0
            assert state.skipped_steps == 1
        else:
            with pytest.raises(FloatingPointError, match=r"grads\[1\] holds NaN or infinite"):
                lrcore.step(params, grads, state, grad_scale=2.0)
            assert state.skipped_steps == 0
        assert state.step_count == 1 and state.array_steps == [1, 1]
        assert state.last_grad_norm is None
        for p, b in zip(params, before[0]):
            assert np.array_equal(uint_view(p), uint_view(b))
        for name, arrays in before[1]["buffers"].items():
            for got, want in zip(state.buffers[name], arrays):
                assert np.array_equal(uint_view(got), uint_view(want)), name


NO_ML_DTYPES = r"""
import sys
sys.modules["ml_dtypes"] = None            # import ml_dtypes now fails
import numpy as np, lrcore
from lrcore._validate import BFLOAT16_BITS
lrcore.set_backend(sys.argv[1])
bits = lambda x: (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16).view(BFLOAT16_BITS)
p, g = bits(np.linspace(-1, 1, 40)), bits(np.linspace(2, 3, 40))
state = lrcore.Adam(lr=0.125, max_grad_norm=1.0)
lrcore.step([p, np.ones(3, np.float32)], [g, bits(np.ones(3))], state, grad_scale=2.0)
assert p.dtype is BFLOAT16_BITS or p.dtype.metadata == BFLOAT16_BITS.metadata
lrcore.save(state, sys.argv[2])
loaded = lrcore.load(sys.argv[2])
assert loaded.buffers["exp_avg"][0].dtype.metadata == BFLOAT16_BITS.metadata
lrcore.step([p, np.ones(3, np.float32)], [g, bits(np.ones(3))], loaded)
assert "ml_dtypes" not in sys.modules or sys.modules["ml_dtypes"] is None
print(p.view(np.uint16).tobytes().hex(), repr(loaded.last_grad_norm))
"""


def test_bfloat16_bits_need_no_ml_dtypes(tmp_path):
    """Without ml_dtypes (import blocked), BFLOAT16_BITS params and grads step, clip, save and
    load, on both backends, to the same bits."""
    outs = []
    for backend in ("cython", "numpy"):
        out = run_python("-c", NO_ML_DTYPES, backend, str(tmp_path / f"{backend}.npz"))
        assert out.returncode == 0, out.stderr[-3000:]
        outs.append(out.stdout)
    assert outs[0] == outs[1]


TWO_NANS = [(lrcore.SGD, dict(weight_decay=0.01)), (lrcore.SGD, dict(momentum=0.9, nesterov=True)),
            (lrcore.Adagrad, dict(weight_decay=0.01)), (lrcore.RMSprop, dict(centered=True)),
            (lrcore.Adam, dict(weight_decay=0.01, amsgrad=True)), (lrcore.AdamW, {})]


@pytest.mark.parametrize("n", [3, 40])
@pytest.mark.parametrize("combo", ["f64", "f32", "f16", "bf16"])
def test_two_nans_meeting_give_nans_at_the_same_places(combo, n):
    """A NaN param (−NaN) meeting a NaN gradient (+NaN), and the reverse, at the same element:
    both backends write NaN at the same places and the same bits everywhere else (which of
    two NaNs an operation returns is the CPU's choice: see nan_blind)."""
    pdtype, gdtype = COMBOS[combo]
    results = {}
    for backend in ("cython", "numpy"):
        previous = _backend.active
        lrcore.set_backend(backend)
        try:
            for cls, options in TWO_NANS:
                p = np.linspace(-1, 1, n)
                g = np.ones(n)
                p[1], g[1], p[2], g[2] = -np.nan, np.nan, np.nan, -np.nan
                p, g = stored(p, pdtype), stored(g, gdtype)
                state = cls(lr=0.1, **options)
                with np.errstate(all="ignore"):
                    for _ in range(2):
                        lrcore.step(p, g, state)
                results.setdefault(backend, []).append(
                    [nan_blind(p).tolist()] + [nan_blind(b[0]).tolist()
                                               for _, b in sorted(state.buffers.items())])
        finally:
            lrcore.set_backend(previous)
    for (cls, options), got, want in zip(TWO_NANS, results["cython"], results["numpy"]):
        assert got == want, (cls.__name__, options)


@pytest.mark.parametrize("nonfinite", ["skip", "raise"])
def test_huge_finite_float64_grads_are_not_taken_for_nonfinite(backend, nonfinite):
    """float64 grads of 1e200 are finite though their sum of squares overflows: no skip, no
    FloatingPointError; the norm is inf, so coef = 0 and SGD leaves p as it was (g·0)."""
    p = np.linspace(-1, 1, 40)
    start = p.copy()
    state = lrcore.SGD(lr=0.1, max_grad_norm=1.0, nonfinite=nonfinite)
    assert lrcore.step(p, np.full(40, 1e200), state) == 0.1
    assert state.skipped_steps == 0 and state.step_count == 1
    assert state.last_grad_norm == math.inf
    np.testing.assert_array_equal(p, start)
    # float32 grads at the top of their range square to finite float64 values
    q = np.zeros(40, np.float32)
    state = lrcore.SGD(lr=0.1, max_grad_norm=1.0, nonfinite=nonfinite)
    lrcore.step(q, np.full(40, 3e38, np.float32), state)
    assert state.last_grad_norm == pytest.approx(math.sqrt(40) * float(np.float32(3e38)), rel=1e-12)
    assert state.skipped_steps == 0 and np.isfinite(q).all()
