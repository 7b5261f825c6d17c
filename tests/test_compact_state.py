"""Compact optimizer state (API.md "Compact optimizer state"): state_format "float32",
"bfloat16" (stochastic rounding) and "8bit" (block-wise dynamic quantization),
param_rounding="stochastic", seed, min_8bit_size, state_bytes, buffer_values, and their
state_dict / checkpoint round trips.

The expectation is built here, outside the state machinery, from the independent pieces:
lrcore.reference's update functions on float32 copies, lrcore.compact's quantize / dequantize
and stochastic rounding (themselves tested against brute force and bitsandbytes in
test_compact_reference.py). The compiled step must equal it bit for bit, for every thread
count; the numpy backend too.
"""
import math

import ml_dtypes
import numpy as np
import pytest

import lrcore
from lrcore import _validate, compact, reference

from test_optimizers import CASE_IDS, CASES, buffer_names

BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
PARAM_DTYPES = {"f32": F32, "f16": F16, "bf16": BF16}
DTYPES = {"float32": F32, "float16": F16, "bfloat16": BF16}
STATE_FORMATS = ["float32", "bfloat16", "8bit"]

# Around the 8-bit blocks (256), the blocked path's 512 and the parallel chunks (32768)
SIZES = (1, 7, 255, 256, 257, 511, 512, 513, 1000, 2 * 32768 + 300)


def bits(a):
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def signed(name):
    return name not in ("sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq")


def slot(cls, name):
    kind = {lrcore.SGD: 0, lrcore.Adagrad: 1, lrcore.RMSprop: 2}.get(cls, 3)
    return _validate.BUFFER_SLOTS[kind].index(name)


class Expected:
    """What the state holds after each step: params and buffers decoded to float32, updated by
    the reference function, and stored back as the options say."""

    def __init__(self, cls, options, params, state_format, param_rounding="nearest", seed=0,
                 min_8bit_size=4096):
        self.cls, self.ref = cls, dict((c, r) for c, r, _, _ in CASES)[cls]
        self.options = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
        self.params = [p.copy() for p in params]
        self.state_format, self.param_rounding, self.seed = state_format, param_rounding, seed
        start = options.get("initial_accumulator_value", 0.0)
        self.buffers = {}
        self.formats = []
        for p in params:        # None: the params' own format, rounded to nearest
            f = state_format or _validate.format_of(p.dtype)
            if state_format == "8bit":
                f = "8bit" if p.size >= min_8bit_size else "float32"
            self.formats.append(f)
        for name in buffer_names(cls, options):
            value = start if name == "sum" else 0.0
            self.buffers[name] = [self.encode_initial(np.full(p.shape, value, F32), f, name)
                                  for p, f in zip(params, self.formats)]
        self.step_count = 0

    @staticmethod
    def encode_initial(x, fmt, name):
        if fmt == "8bit":
            return compact.quantize(x, signed(name))
        return reference.narrow(x, DTYPES[fmt])

    def decode(self, b, fmt, name):
        if fmt == "8bit":
            return compact.dequantize(*b, signed(name))
        return reference.widen(b)

    def encode(self, x, fmt, name, i):
        if fmt == "8bit":
            return compact.quantize(x, signed(name))
        if fmt == "bfloat16" and self.state_format == "bfloat16":
            key = compact.rounding_key(self.seed, self.step_count, i, slot(self.cls, name))
            return compact.round_bf16_stochastic(x, key).reshape(x.shape).view(BF16)
        return reference.narrow(x, DTYPES[fmt])

    def step(self, grads, lr):
        for i, (p, g) in enumerate(zip(self.params, grads)):
            wp, wg = reference.widen(p), reference.widen(g)
            wb = {name: self.decode(bufs[i], self.formats[i], name)
                  for name, bufs in self.buffers.items()}
            with np.errstate(all="ignore"):
                self.ref(wp, wg, step=self.step_count, lr=lr, **wb, **self.options)
            if p.dtype == BF16 and self.param_rounding == "stochastic":
                key = compact.rounding_key(self.seed, self.step_count, i, 3)
                self.params[i] = compact.round_bf16_stochastic(wp, key).reshape(p.shape).view(BF16)
            else:
                self.params[i] = reference.narrow(wp, p.dtype)
            for name, x in wb.items():
                self.buffers[name][i] = self.encode(x, self.formats[i], name, i)
        self.step_count += 1

    def assert_matches(self, state, params, where=""):
        for i, (got, want) in enumerate(zip(params, self.params)):
            assert np.array_equal(bits(got), bits(want)), f"{where}params[{i}]"
        for name, arrays in self.buffers.items():
            for i, want in enumerate(arrays):
                got = state.buffers[name][i]
                if self.formats[i] == "8bit":
                    codes, absmax = want
                    assert got.dtype == np.uint8
                    assert np.array_equal(got.ravel(), codes.ravel()), f"{where}{name}[{i}] codes"
                    assert np.array_equal(bits(state.buffers[name + "_absmax"][i]), bits(absmax)), \
                        f"{where}{name}[{i}] absmax"
                else:
                    assert np.array_equal(bits(got), bits(want)), f"{where}{name}[{i}]"


def data(dtype, sizes, steps=3, seed=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
    grads = [[(rng.standard_normal(n) * scale).astype(np.float32).astype(dtype) for n in sizes]
             for scale in [1.0, 0.1, 3.0][:steps]]
    return params, grads


def run(cls, lr, options, dtype, state_format, sizes=SIZES, param_rounding="nearest", seed=0,
        min_8bit_size=1, steps=3):
    params, grads = data(dtype, sizes, steps)
    state = cls(lr=lr, state_format=state_format, param_rounding=param_rounding, seed=seed,
                min_8bit_size=min_8bit_size, **options)
    expected = Expected(cls, options, params, state_format, param_rounding, seed, min_8bit_size)
    for k, g in enumerate(grads):
        with np.errstate(all="ignore"):
            lrcore.step(params, g, state)
        expected.step(g, lr)
        expected.assert_matches(state, params, f"step {k}: ")
    return state, params


@pytest.mark.parametrize("state_format", STATE_FORMATS)
@pytest.mark.parametrize("cls, ref, lr, options", CASES[::3], ids=CASE_IDS[::3])
def test_compiled_equals_the_expectation_float32_params(compiled, cls, ref, lr, options,
                                                        state_format):
    run(cls, lr, options, F32, state_format)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("state_format", STATE_FORMATS)
@pytest.mark.parametrize("cls, ref, lr, options", CASES[::7], ids=CASE_IDS[::7])
def test_compiled_equals_the_expectation_half_params(compiled, cls, ref, lr, options,
                                                     state_format, dtype):
    run(cls, lr, options, PARAM_DTYPES[dtype], state_format, sizes=SIZES[:-1])


@pytest.mark.parametrize("state_format", [None, "float32", "bfloat16", "8bit"])
def test_stochastic_bfloat16_params(backend, state_format):
    run(lrcore.Adam, 0.01, {}, BF16, state_format, sizes=SIZES[:-1], param_rounding="stochastic",
        seed=12345)


@pytest.mark.parametrize("state_format", STATE_FORMATS)
@pytest.mark.parametrize("cls, ref, lr, options", CASES[::11], ids=CASE_IDS[::11])
def test_the_numpy_backend_equals_the_expectation(numpy_backend, cls, ref, lr, options,
                                                  state_format):
    run(cls, lr, options, F32, state_format, sizes=SIZES[:-1])


@pytest.mark.parametrize("state_format", ["bfloat16", "8bit"])
def test_every_thread_count_gives_the_same_bits(compiled, state_format):
    results = []
    previous = lrcore.get_num_threads()
    try:
        for threads in (1, 2, 3, 4):
            lrcore.set_num_threads(threads)
            state, params = run(lrcore.Adam, 0.01, dict(amsgrad=True), F32, state_format,
                                sizes=(5 * 32768 + 17, 300), seed=9)
            results.append([bits(p).copy() for p in params])
    finally:
        lrcore.set_num_threads(previous)
    for r in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(r, results[0]))


def test_min_8bit_size_keeps_small_arrays_in_float32(backend):
    params = [np.ones(4095, F32), np.ones(4096, F32), np.ones(10, F32)]
    state = lrcore.Adam(lr=0.1, state_format="8bit")
    lrcore.step(params, [np.ones_like(p) for p in params], state)
    assert [b.dtype for b in state.buffers["exp_avg"]] == [F32, np.uint8, F32]
    assert [b.shape for b in state.buffers["exp_avg_absmax"]] == [(0,), (16,), (0,)]


def test_state_bytes_closed_form(backend):
    n = 100_000
    p = np.zeros(n, F32)
    expect = {None: 8 * n, "float32": 8 * n, "bfloat16": 4 * n,
              "8bit": 2 * n + 2 * 4 * math.ceil(n / 256)}
    for state_format, want in expect.items():
        state = lrcore.Adam(lr=0.1, state_format=state_format)
        assert state.state_bytes == 0
        lrcore.step(p, np.ones(n, F32), state)
        assert state.state_bytes == want, state_format
    assert expect["8bit"] / n == pytest.approx(2 + 8 / 256, rel=1e-3)


def test_buffer_values_decode_codes_and_absmax(backend):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(5000).astype(F32)
    state = lrcore.Adam(lr=0.1, state_format="8bit")
    lrcore.step(p, rng.standard_normal(5000).astype(F32), state)
    for name in ("exp_avg", "exp_avg_sq"):
        codes, absmax = state.buffers[name][0], state.buffers[name + "_absmax"][0]
        table = compact.dynamic_map(signed(name))
        want = table[codes] * np.repeat(absmax, 256)[:codes.size]
        (got,) = state.buffer_values(name)
        assert got.dtype == F32 and np.array_equal(got, want)
    with pytest.raises(ValueError, match="name must be one of"):
        state.buffer_values("exp_avg_absmax")


def test_eight_bit_state_tracks_the_float32_state(compiled):
    """Quantization error stays at the maps' resolution: after 20 steps the decoded moments
    are within a few per cent of the float32 run's (relative to each block's absmax)."""
    rng = np.random.default_rng(2)
    n = 1 << 14
    p32 = rng.standard_normal(n).astype(F32)
    p8 = p32.copy()
    s32, s8 = lrcore.Adam(lr=1e-3), lrcore.Adam(lr=1e-3, state_format="8bit")
    for _ in range(20):
        g = rng.standard_normal(n).astype(F32)
        lrcore.step(p32, g, s32)
        lrcore.step(p8, g, s8)
    for name in ("exp_avg", "exp_avg_sq"):
        want = s32.buffers[name][0].reshape(-1, 256)
        got = s8.buffer_values(name)[0].reshape(-1, 256)
        scale = np.abs(want).max(axis=1, keepdims=True)
        assert np.abs(got - want).max(axis=1, keepdims=True).max() <= 0.05 * scale.max()
    assert np.abs(p8 - p32).max() < 2e-3


def test_a_nan_gradient_poisons_its_block_only(backend):
    p = np.zeros(1024, F32)
    g = np.ones(1024, F32)
    g[300] = np.nan
    state = lrcore.SGD(lr=0.1, momentum=0.9, state_format="8bit", min_8bit_size=1)
    with np.errstate(all="ignore"):
        lrcore.step(p, g, state)
    (m,) = state.buffer_values("momentum_buffer")
    assert np.isnan(m[256:512]).all()
    assert np.isfinite(m[:256]).all() and np.isfinite(m[512:]).all()


@pytest.mark.parametrize("state_format", ["bfloat16", "8bit"])
def test_resume_through_state_dict_and_checkpoint_is_bit_identical(backend, tmp_path,
                                                                   state_format):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(9000).astype(F32) for _ in range(6)]
    p0 = rng.standard_normal(9000).astype(F32).astype(BF16)
    kwargs = dict(lr=0.01, state_format=state_format, param_rounding="stochastic", seed=77)
    straight, p_straight = lrcore.AdamW(**kwargs), p0.copy()
    for g in grads:
        lrcore.step(p_straight, g.astype(BF16), straight)
    first, p_resumed = lrcore.AdamW(**kwargs), p0.copy()
    for g in grads[:3]:
        lrcore.step(p_resumed, g.astype(BF16), first)
    via_dict = lrcore.AdamW()
    via_dict.load_state_dict(first.state_dict())
    lrcore.save(first, tmp_path / "s.npz")
    via_file = lrcore.load(tmp_path / "s.npz")
    for resumed in (via_dict, via_file):
        p = p_resumed.copy()
        for g in grads[3:]:
            lrcore.step(p, g.astype(BF16), resumed)
        assert np.array_equal(bits(p), bits(p_straight))
        for name, arrays in straight.buffers.items():
            assert all(np.array_equal(bits(a), bits(b))
                       for a, b in zip(arrays, resumed.buffers[name])), name


def test_state_dict_carries_the_maps_and_refuses_others(backend):
    p = np.zeros(5000, F32)
    state = lrcore.Adam(state_format="8bit")
    lrcore.step(p, np.ones(5000, F32), state)
    sd = state.state_dict()
    assert np.array_equal(sd["quantization_maps"]["signed"], compact.dynamic_map(True))
    assert np.array_equal(sd["quantization_maps"]["unsigned"], compact.dynamic_map(False))
    sd["quantization_maps"]["signed"] = np.linspace(-1, 1, 256, dtype=F32)
    fresh = lrcore.Adam(state_format="8bit")
    with pytest.raises(ValueError, match="quantization_maps"):
        fresh.load_state_dict(sd)
    assert fresh.step_count == 0 and fresh.buffers == {}


def test_the_seed_drives_the_stochastic_rounding(compiled):
    p = np.full(4096, 1.0 + 2**-10, F32)      # between two bfloat16 values
    results = {}
    for seed in (0, 0, 1):
        state = lrcore.SGD(lr=1.0, momentum=0.5, state_format="bfloat16", seed=seed)
        lrcore.step(p.copy(), p, state)
        results.setdefault(seed, []).append(bits(state.buffers["momentum_buffer"][0]).copy())
    assert np.array_equal(results[0][0], results[0][1])
    assert not np.array_equal(results[0][0], results[1][0])
    # each value is one of the two neighbours, rounded up about 1/8 of the time
    up = results[0][0] == 0x3F81
    assert np.isin(results[0][0], [0x3F80, 0x3F81]).all()
    assert abs(up.mean() - 0.125) < 0.03


@pytest.mark.parametrize("keywords, error, match", [
    (dict(state_format="int8"), ValueError, "state_format must be one of"),
    (dict(state_format=8), ValueError, "state_format must be one of"),
    (dict(param_rounding="up"), ValueError, "param_rounding must be one of"),
    (dict(seed=-1), ValueError, "seed must be an int in"),
    (dict(seed=2**64), ValueError, "seed must be an int in"),
    (dict(seed=1.0), TypeError, "seed must be an int"),
    (dict(seed=True), TypeError, "seed must be an int"),
    (dict(min_8bit_size=-1), ValueError, "min_8bit_size must be an int in"),
    (dict(min_8bit_size=None), TypeError, "min_8bit_size must be an int"),
])
@pytest.mark.parametrize("cls", [lrcore.SGD, lrcore.Adagrad, lrcore.RMSprop, lrcore.Adam,
                                 lrcore.AdamW])
def test_bad_keywords_name_the_argument(cls, keywords, error, match):
    with pytest.raises(error, match=match):
        cls(**keywords)


@pytest.mark.parametrize("state_format", ["float32", "bfloat16", "8bit"])
def test_float64_params_refuse_a_compact_state_before_anything_changes(backend, state_format):
    p = [np.ones(10, F32), np.ones(10, F64)]
    before = [a.copy() for a in p]
    state = lrcore.Adam(lr=0.1, state_format=state_format)
    with pytest.raises(ValueError, match=r"params\[1\] is float64"):
        lrcore.step(p, [np.ones_like(a) for a in p], state)
    assert state.step_count == 0 and state.buffers == {}
    assert all(np.array_equal(a, b) for a, b in zip(p, before))


def test_stochastic_rounding_of_float16_params_is_refused(backend):
    p = np.ones(10, F16)
    state = lrcore.Adam(lr=0.1, param_rounding="stochastic")
    with pytest.raises(ValueError, match="param_rounding='stochastic' rounds bfloat16"):
        lrcore.step(p, np.ones_like(p), state)
    assert state.step_count == 0 and np.array_equal(p, np.ones(10, F16))


def test_a_replaced_code_buffer_is_refused_before_anything_changes(compiled):
    p = np.ones(5000, F32)
    state = lrcore.Adam(lr=0.1, state_format="8bit")
    lrcore.step(p, np.ones_like(p), state)
    before = p.copy()
    state._core.buffers["exp_avg_absmax"][0] = np.zeros(3, F32)     # a wrong block count
    with pytest.raises(ValueError, match=r"state buffer exp_avg_absmax\[0\] no longer matches"):
        lrcore.step(p, np.ones_like(p), state)
    assert np.array_equal(p, before) and state.step_count == 1


@pytest.mark.parametrize("state_format", ["bfloat16", "8bit"])
def test_find_lr_runs_on_a_copy_of_a_compact_state(backend, state_format):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((64, 300)).astype(F32)
    y = X @ rng.standard_normal(300).astype(F32)
    w = np.zeros(300, F32)

    def fn(params):
        err = X @ params[0] - y
        return float(err @ err / 2 / len(y)), [X.T @ err / len(y)]

    state = lrcore.Adam(lr=1e-2, state_format=state_format, min_8bit_size=1)
    for _ in range(3):
        lrcore.step(w, fn([w])[1][0], state)
    before = {name: [bits(b).copy() for b in arrays] for name, arrays in state.buffers.items()}
    w_before = w.copy()
    result = lrcore.find_lr(fn, [w], state, num_steps=30)
    assert len(result.lrs) > 5 and state.step_count == 3 and np.array_equal(w, w_before)
    for name, arrays in state.buffers.items():
        assert all(np.array_equal(bits(a), b) for a, b in zip(arrays, before[name])), name
