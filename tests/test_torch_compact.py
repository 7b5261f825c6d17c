"""lrcore.torch with compact optimizer state (API.md "Compact optimizer state"; optional: torch).

- Every optimizer, every state_format, float32 / float16 / bfloat16 params (bfloat16 also with
  param_rounding="stochastic"), a complex64 param and a param in another dimension order: the
  torch step equals lrcore.step on the same values as numpy arrays bit for bit, params and
  every buffer (codes and absmax included), with clipping and a GradScaler's loss scale too.
  lrcore's numpy-array step is itself checked against the independent reference in
  test_compact_state.py.
- The state: torch tensors in the stored format under torch's names, laid out as the param.
- state_dict() / load_state_dict() (and torch.save / torch.load) resume bit for bit, the
  compact dtypes kept (torch.optim would cast them to the param's dtype).
- Errors: bad options, params a format cannot take, state tensors of the wrong dtype, shape or
  layout, a missing or stray absmax; nothing changes when a step raises.
- Stochastic rounding: the bits are those of lrcore.compact's hash for (seed, the group's step
  count, array, buffer), so they differ from step to step and between seeds, and a replay with
  the same seed is identical.
"""
import io
import math
import pickle

import numpy as np
import pytest

import lrcore

torch = pytest.importorskip("torch")
import lrcore.torch as lt  # noqa: E402
from lrcore import _validate, compact  # noqa: E402

FORMATS = [None, "float32", "bfloat16", "8bit"]
NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
# every buffer of each optimizer in use, and a start value that is not 0 (Adagrad's sum)
OPTIONS = {
    "SGD": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "RMSprop": dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01),
    "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=0.01, amsgrad=True, weight_decay=0.1),
}
PARAM_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "bfloat16-stochastic": torch.bfloat16}
STEPS = 6
# a matrix above min_8bit_size (4096) whose last block is partial (5200 = 20·256 + 80), laid
# out transposed (dense, not contiguous: blocks count in memory order); a small one below it
BIG, SMALL = (40, 130), (7, 9)


def lrcore_class(name):
    return getattr(lrcore, name)


def memory(t):
    """A dense tensor's memory in order as a flat numpy array of its bit patterns (complex:
    its real view), the array lrcore's numpy-array step is given."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    flat = t.as_strided((t.numel(),), (1,), t.storage_offset())
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
    return flat.view(width).numpy()


def as_array(t):
    """What lrcore.step takes for tensor t: its memory as a flat array of t's format (float16,
    bfloat16 as lrcore's tagged uint16, complex as its real view), a copy."""
    bits = memory(t).copy()
    if t.dtype == torch.bfloat16:
        return bits.view(_validate.BFLOAT16_BITS)
    return bits.view({torch.float16: np.float16, torch.float32: np.float32,
                      torch.complex64: np.float32, torch.float64: np.float64}[t.dtype])


def bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def transposed(values):
    """values laid out as the transpose of a contiguous tensor: shape kept, strides reversed."""
    return values.t().contiguous().t()


def params_for(dtype, gen):
    """The params of a run: BIG transposed, SMALL contiguous, and for float32 a complex64
    param of 2700 complex (5400 real) elements, above min_8bit_size as its real view."""
    big = transposed(torch.randn(BIG, generator=gen)).to(dtype)
    assert not big.is_contiguous() and big.t().is_contiguous()
    params = [big, torch.randn(SMALL, generator=gen).to(dtype)]
    if dtype == torch.float32:
        params.append(torch.randn(30, 90, generator=gen, dtype=torch.complex64))
    return [torch.nn.Parameter(p) for p in params]


def grads_for(params, gen):
    """Gradients laid out as their params (a grad must have its param's strides)."""
    out = []
    for p in params:
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype if p.is_complex() else torch.float32)
        out.append((transposed(g) if not p.is_contiguous() else g).to(p.dtype))
    return out


def assert_state_matches(opt, params, state):
    """opt's torch state equals lrcore state `state` bit for bit: each buffer's memory, and an
    absmax tensor exactly where the numpy state has a non-empty absmax array."""
    assert state.buffers, "the numpy state has buffers"
    for name, arrays in state.buffers.items():
        for i, (p, want) in enumerate(zip(params, arrays)):
            got = opt.state[p].get(name)
            if name.endswith("_absmax") and want.size == 0:
                assert got is None, f"{name}[{i}]: no absmax for a float32 buffer"
                continue
            assert got is not None, f"{name}[{i}]"
            assert np.array_equal(memory(got).view(np.uint8), bits(want).view(np.uint8)), \
                f"{name}[{i}]"


def expected_dtype(p, fmt, name):
    """The torch dtype of buffer `name` of p under state_format `fmt` (API.md)."""
    if fmt is None:
        return p.dtype
    if fmt == "8bit":
        return torch.uint8 if p.numel() * (2 if p.is_complex() else 1) >= 4096 else \
            (torch.complex64 if p.is_complex() else torch.float32)
    if fmt == "float32" and p.dtype in (torch.float32, torch.complex64):
        return p.dtype
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[fmt]


@pytest.mark.parametrize("dtype_id", list(PARAM_DTYPES))
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_torch_step_equals_numpy_array_step_bit_for_bit(backend, name, fmt, dtype_id):
    dtype = PARAM_DTYPES[dtype_id]
    rounding = "stochastic" if dtype_id.endswith("stochastic") else "nearest"
    keywords = dict(state_format=fmt, param_rounding=rounding, seed=1234)
    gen = torch.Generator().manual_seed(3)
    params = params_for(dtype, gen)
    arrays = [as_array(p) for p in params]         # stepped by lrcore.step
    opt = getattr(lt, name)(params, **OPTIONS[name], **keywords)
    state = lrcore_class(name)(**OPTIONS[name], **keywords)
    addresses = [p.data_ptr() for p in params]
    for k in range(STEPS):
        grads = grads_for(params, gen)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        lrcore.step(arrays, [as_array(g) for g in grads], state)
        for i, (p, a) in enumerate(zip(params, arrays)):
            assert np.array_equal(memory(p), bits(a).view(memory(p).dtype)), (k, i)
        assert_state_matches(opt, params, state)
    assert [p.data_ptr() for p in params] == addresses
    assert opt.param_groups[0]["lrcore_step_count"] == STEPS == state.step_count
    # the tensors: stored format, laid out as the param (a complex one's compact buffers as
    # its real view), one float32 absmax per 256 elements beside 8-bit codes
    for p in params:
        st = opt.state[p]
        for buf in (b for b in state.buffers if not b.endswith("_absmax")):
            t = st[buf]
            assert t.dtype == expected_dtype(p, fmt, buf), buf
            like = torch.view_as_real(p.detach()) if p.is_complex() and not t.is_complex() else p
            assert t.shape == like.shape and t.stride() == like.stride(), buf
            if t.dtype == torch.uint8:
                absmax = st[buf + "_absmax"]
                assert absmax.dtype == torch.float32
                assert absmax.shape == (math.ceil(like.numel() / 256),)


@pytest.mark.parametrize("fmt", ["bfloat16", "8bit"])
def test_clipping_and_a_loss_scale_equal_the_numpy_step(backend, fmt):
    """max_grad_norm (over both groups) and GradScaler's grad_scale with compact state: the
    numpy-array step with the same max_grad_norm and grad_scale, bit for bit; a found_inf
    step changes nothing and creates no state."""
    gen = torch.Generator().manual_seed(8)
    params = params_for(torch.float32, gen)
    arrays = [as_array(p) for p in params]
    opt = lt.AdamW(params, lr=0.01, state_format=fmt, max_grad_norm=5.0, seed=9)
    state = lrcore.AdamW(lr=0.01, state_format=fmt, max_grad_norm=5.0, seed=9)
    scale = 2.0 ** 12
    opt.grad_scale, opt.found_inf = torch.tensor(scale), torch.tensor(1.0)
    for p, g in zip(params, grads_for(params, gen)):
        p.grad = g * scale
    before = [memory(p).copy() for p in params]
    opt.step()
    assert all(np.array_equal(memory(p), b) for p, b in zip(params, before))
    assert len(opt.state) == 0 and "lrcore_step_count" not in opt.param_groups[0]
    opt.found_inf = torch.tensor(0.0)
    for _ in range(3):
        grads = grads_for(params, gen)
        for p, g in zip(params, grads):
            p.grad = g * scale          # exact: a power of two
        opt.step()
        lrcore.step(arrays, [as_array(g * scale) for g in grads], state, grad_scale=scale)
        assert opt.last_grad_norm == state.last_grad_norm > 5.0     # it clips
        for p, a in zip(params, arrays):
            assert np.array_equal(memory(p), bits(a).view(memory(p).dtype))
        assert_state_matches(opt, params, state)


def test_param_groups_keep_their_own_options(backend):
    """Groups with different state_format / seed / min_8bit_size each equal their own numpy
    state, and their tensors have their own formats."""
    gen = torch.Generator().manual_seed(4)
    a, b, c = (torch.nn.Parameter(torch.randn(5000, generator=gen)) for _ in range(3))
    groups = [dict(params=[a], state_format="8bit"),
              dict(params=[b], state_format="bfloat16", seed=77),
              dict(params=[c], min_8bit_size=10**6)]
    opt = lt.Adam(groups, lr=0.01, state_format="8bit")
    states = [lrcore.Adam(lr=0.01, state_format="8bit"),
              lrcore.Adam(lr=0.01, state_format="bfloat16", seed=77),
              lrcore.Adam(lr=0.01, state_format="8bit", min_8bit_size=10**6)]
    arrays = [as_array(p) for p in (a, b, c)]
    for _ in range(4):
        for p, arr, state in zip((a, b, c), arrays, states):
            g = torch.randn(5000, generator=gen)
            p.grad = g
            lrcore.step(arr, g.numpy().copy(), state)
        opt.step()
    for p, arr, state in zip((a, b, c), arrays, states):
        assert np.array_equal(memory(p), bits(arr).view(np.int32))
        assert_state_matches(opt, [p], state)
    assert [opt.state[p]["exp_avg"].dtype for p in (a, b, c)] == \
        [torch.uint8, torch.bfloat16, torch.float32]
    assert [g["state_format"] for g in opt.param_groups] == ["8bit", "bfloat16", "8bit"]
    assert "exp_avg_absmax" not in opt.state[c]


# -- state_dict --------------------------------------------------------------------------

def model_and_batches(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model = model.to(dtype)
    batches = [(torch.randn(16, 64, generator=gen).to(dtype),
                torch.randn(16, 3, generator=gen).to(dtype)) for _ in range(10)]
    return model, batches


def train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()


def snapshot(model, opt):
    """Every param and state tensor's bits, and the group counts."""
    out = [memory(p).copy() for p in model.parameters()]
    for p in model.parameters():
        out += [(k, v.dtype, memory(v).copy()) for k, v in sorted(opt.state[p].items())]
    return out, [g["lrcore_step_count"] for g in opt.param_groups]


def same(a, b):
    (xa, ca), (xb, cb) = a, b
    if ca != cb or len(xa) != len(xb):
        return False
    for u, v in zip(xa, xb):
        if isinstance(u, tuple):
            if u[:2] != v[:2] or not np.array_equal(u[2], v[2]):
                return False
        elif not np.array_equal(u, v):
            return False
    return True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name, fmt, dtype):
    """Train 10 steps straight; or 4 steps, state_dict() through torch.save / torch.load into a
    new optimizer constructed without the compact options (the dict's groups carry them), 6
    more: params and state the same bits. The compact dtypes survive loading (torch.optim's
    load_state_dict would cast them to the param's dtype: float32 moments of bfloat16 params
    to bfloat16, 8-bit codes to floats). min_8bit_size=1024 makes the first layer's weight
    (6144 elements) 8-bit; bfloat16 params round stochastically."""
    rounding = "stochastic" if dtype == torch.bfloat16 else "nearest"
    keywords = dict(OPTIONS[name], state_format=fmt, param_rounding=rounding, seed=5,
                    min_8bit_size=1024)
    straight, batches = model_and_batches(dtype)
    opt = getattr(lt, name)(straight.parameters(), **keywords)
    train(straight, opt, batches)

    model, _ = model_and_batches(dtype)
    first = getattr(lt, name)(model.parameters(), **keywords)
    train(model, first, batches[:4])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed, _ = model_and_batches(dtype)
    with torch.no_grad():
        for p, q in zip(resumed.parameters(), model.parameters()):
            p.copy_(q)
    base = {k: v for k, v in OPTIONS[name].items() if k != "lr"}
    second = getattr(lt, name)(resumed.parameters(), lr=OPTIONS[name]["lr"], **base)
    second.load_state_dict(saved)
    for p, q in zip(resumed.parameters(), model.parameters()):
        assert second.state[p].keys() == first.state[q].keys()
        for key, value in first.state[q].items():
            assert second.state[p][key].dtype == value.dtype, key
            assert np.array_equal(memory(second.state[p][key]), memory(value)), key
    train(resumed, second, batches[4:])
    assert same(snapshot(resumed, second), snapshot(straight, opt))
    assert second.param_groups[0]["state_format"] == fmt
    if fmt == "8bit":
        assert opt.state[straight[0].weight]["exp_avg_sq" if name.startswith("Adam") else
                                             {"SGD": "momentum_buffer", "Adagrad": "sum",
                                              "RMSprop": "square_avg"}[name]].dtype == torch.uint8


def test_pickle_and_deepcopy_keep_the_compact_state():
    import copy
    model, batches = model_and_batches(torch.float32)
    opt = lt.AdamW(model.parameters(), lr=0.01, state_format="8bit", min_8bit_size=1024)
    train(model, opt, batches[:3])
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert other.param_groups[0]["state_format"] == "8bit"
        for (p, st), (q, st2) in zip(opt.state.items(), other.state.items()):
            assert st.keys() == st2.keys()
            assert all(st[k].dtype == st2[k].dtype and torch.equal(st[k], st2[k]) for k in st)


def test_load_hooks_see_the_dict_and_the_state_as_loaded():
    """A user's pre-hook may rewrite the dict (what it returns is what loads), and a user's
    post-hook already sees the compact dtypes restored."""
    model, batches = model_and_batches(torch.float32)
    opt = lt.AdamW(model.parameters(), lr=0.01, state_format="8bit", min_8bit_size=1024)
    train(model, opt, batches[:2])
    sd = opt.state_dict()
    weight = model[0].weight
    other = lt.AdamW(model.parameters(), lr=0.01)
    replaced, seen = torch.zeros_like(opt.state[weight]["exp_avg"]), []

    def pre(optimizer, state_dict):
        state = {k: dict(v) for k, v in state_dict["state"].items()}
        state[0]["exp_avg"] = replaced
        return dict(state_dict, state=state)

    other.register_load_state_dict_pre_hook(pre)
    other.register_load_state_dict_post_hook(
        lambda optimizer: seen.append(optimizer.state[weight]["exp_avg"]))
    other.load_state_dict(sd)
    assert seen[0] is replaced and other.state[weight]["exp_avg"] is replaced
    assert other.state[weight]["exp_avg_absmax"].dtype == torch.float32
    assert torch.equal(sd["state"][0]["exp_avg"], opt.state[weight]["exp_avg"])   # untouched


def test_a_torch_optim_state_dict_loads_as_plain_float32_state():
    """A torch.optim.AdamW state_dict has no compact keys: its groups get the defaults
    (state_format None), whatever the loading optimizer was constructed with, as torch fills
    keys an older dict lacks; training goes on with float32 moments."""
    model, batches = model_and_batches(torch.float32)
    ref = torch.optim.AdamW(model.parameters(), lr=0.01, foreach=False)
    train(model, ref, batches[:3])
    opt = lt.AdamW(model.parameters(), lr=0.01, state_format="8bit")
    opt.load_state_dict(ref.state_dict())
    assert "state_format" not in opt.param_groups[0]
    train(model, opt, batches[3:5])
    assert all(st["exp_avg"].dtype == torch.float32 for st in opt.state.values())


# -- errors ------------------------------------------------------------------------------

BAD_OPTIONS = [
    (dict(state_format="4bit"), ValueError, "state_format must be one of"),
    (dict(state_format="float16"), ValueError, "state_format must be one of"),
    (dict(param_rounding="up"), ValueError, "param_rounding must be one of"),
    (dict(seed=-1), ValueError, "seed must be an int in"),
    (dict(seed=2**64), ValueError, "seed must be an int in"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(min_8bit_size=-1), ValueError, "min_8bit_size must be an int in"),
    (dict(min_8bit_size=True), TypeError, "min_8bit_size must be an int"),
]


@pytest.mark.parametrize("options, exc, match", BAD_OPTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_constructors_refuse_bad_compact_options(name, options, exc, match):
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(exc, match=match):
        getattr(lt, name)([p], lr=0.01, **options)
    with pytest.raises(exc, match=match):       # a group's own value is checked at its step
        opt = getattr(lt, name)([dict(params=[p], **options)], lr=0.01)
        p.grad = torch.ones(3)
        opt.step()


def two_groups(fmt="8bit", **options):
    """Two groups, the first fine: a failing step must not touch it either."""
    gen = torch.Generator().manual_seed(2)
    a = torch.nn.Parameter(torch.randn(5000, generator=gen))
    b = torch.nn.Parameter(torch.randn(BIG, generator=gen))
    opt = lt.Adam([dict(params=[a]), dict(params=[b], **options)], lr=0.01, state_format=fmt)
    a.grad, b.grad = torch.randn(5000, generator=gen), torch.randn(BIG, generator=gen)
    return a, b, opt


def assert_step_refused(opt, params, exc, match):
    """The step raises, and params and every state tensor keep their bits."""
    before = [memory(p).copy() for p in params]
    state = {id(p): {k: (v.dtype, memory(v).copy()) for k, v in opt.state[p].items()}
             for p in params if p in opt.state}
    counts = [g.get("lrcore_step_count") for g in opt.param_groups]
    with pytest.raises(exc, match=match):
        opt.step()
    assert all(np.array_equal(memory(p), b) for p, b in zip(params, before))
    for p in params:
        now = {k: (v.dtype, memory(v)) for k, v in opt.state[p].items()} if p in opt.state else {}
        was = state.get(id(p), {})
        assert now.keys() == was.keys()
        assert all(now[k][0] == was[k][0] and np.array_equal(now[k][1], was[k][1]) for k in now)
    assert [g.get("lrcore_step_count") for g in opt.param_groups] == counts


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "8bit"])
def test_float64_params_refuse_a_compact_format(fmt):
    a = torch.nn.Parameter(torch.zeros(5000, dtype=torch.float64))
    opt = lt.Adam([a], lr=0.01, state_format=fmt)
    a.grad = torch.ones(5000, dtype=torch.float64)
    assert_step_refused(opt, [a], ValueError,
                        r"param_groups\[0\]\['params'\]\[0\] is float64: state_format=")
    assert len(opt.state) == 0


def test_float16_params_refuse_stochastic_rounding():
    a = torch.nn.Parameter(torch.zeros(10, dtype=torch.float16))
    opt = lt.SGD([a], lr=0.01, param_rounding="stochastic")
    a.grad = torch.ones(10, dtype=torch.float16)
    assert_step_refused(opt, [a], ValueError,
                        r"param_rounding='stochastic' rounds bfloat16 params; "
                        r"param_groups\[0\]\['params'\]\[0\] is float16")


NAME = r"param_groups\[1\]\['params'\]\[0\]'s state "
# (state_format of group 1, what is done to b's state, error, message)
BAD_STATE = {
    "codes-as-float32": ("8bit", lambda st: st.__setitem__("exp_avg", st["exp_avg"].float()),
                         TypeError, NAME + r"'exp_avg' has dtype torch.float32; "
                                           r"state_format='8bit' stores it as torch.uint8"),
    "codes-shape": ("8bit", lambda st: st.__setitem__("exp_avg", st["exp_avg"].reshape(130, 40)),
                    ValueError, NAME + r"'exp_avg' has shape \(130, 40\), the param \(40, 130\)"),
    "codes-strides": ("8bit", lambda st: st.__setitem__("exp_avg", transposed(st["exp_avg"])),
                      ValueError, NAME + r"'exp_avg' has strides \(1, 40\) where the param has "
                                         r"\(130, 1\)"),
    "absmax-dtype": ("8bit", lambda st: st.__setitem__("exp_avg_sq_absmax",
                                                       st["exp_avg_sq_absmax"].double()),
                     TypeError, NAME + r"'exp_avg_sq_absmax' has dtype torch.float64; "
                                       r"state_format='8bit' stores one torch.float32 absmax"),
    "absmax-shape": ("8bit", lambda st: st.__setitem__("exp_avg_absmax", st["exp_avg_absmax"][:20]),
                     ValueError, NAME + r"'exp_avg_absmax' has shape \(20,\), expected \(21,\): "
                                        r"one absmax per 256-element block of the 5200 elements"),
    "absmax-strided": ("8bit", lambda st: st.__setitem__(
        "exp_avg_absmax", torch.zeros(42)[::2]), ValueError,
        NAME + r"'exp_avg_absmax' has strides \(2,\), expected a contiguous tensor"),
    "absmax-missing": ("8bit", lambda st: st.pop("exp_avg_absmax"), ValueError,
                       NAME + r"'exp_avg_absmax' is missing: the 8-bit codes of 'exp_avg' cannot "
                              r"be decoded"),
    "bf16-as-float32": ("bfloat16",
                        lambda st: st.__setitem__("exp_avg_sq", st["exp_avg_sq"].float()),
                        TypeError, NAME + r"'exp_avg_sq' has dtype torch.float32; "
                                          r"state_format='bfloat16' stores it as torch.bfloat16"),
    "float32-as-bf16": (None, lambda st: st.__setitem__("exp_avg", st["exp_avg"].bfloat16()),
                        TypeError, NAME + r"'exp_avg' has dtype torch.bfloat16, the param "
                                          r"torch.float32"),
    "stray-absmax": ("bfloat16", lambda st: st.__setitem__("exp_avg_absmax", torch.zeros(21)),
                     ValueError, NAME + r"'exp_avg_absmax' holds the block maxima of 8-bit "
                                        r"codes, but these options store 'exp_avg' as bfloat16"),
}


@pytest.mark.parametrize("case", list(BAD_STATE))
def test_a_state_tensor_of_the_wrong_format_is_refused(backend, case):
    fmt, spoil, exc, match = BAD_STATE[case]
    a, b, opt = two_groups(state_format=fmt)
    opt.step()
    spoil(opt.state[b])
    assert_step_refused(opt, [a, b], exc, match)


def test_8bit_small_param_state_must_be_float32():
    """Below min_8bit_size an 8-bit state keeps float32 buffers: a bfloat16 or uint8 one is
    refused with the reason, and so is an absmax beside them."""
    a = torch.nn.Parameter(torch.randn(100, dtype=torch.bfloat16))
    opt = lt.AdamW([a], lr=0.01, state_format="8bit")
    a.grad = torch.randn(100).bfloat16()
    opt.step()
    assert opt.state[a]["exp_avg"].dtype == torch.float32
    assert "exp_avg_absmax" not in opt.state[a]
    good = opt.state[a]["exp_avg"]
    opt.state[a]["exp_avg"] = good.bfloat16()
    assert_step_refused(opt, [a], TypeError,
                        r"'exp_avg' has dtype torch.bfloat16; state_format='8bit' stores it as "
                        r"torch.float32 \(the param has 100 elements, fewer than "
                        r"min_8bit_size=4096\)")
    opt.state[a]["exp_avg"] = good
    opt.state[a]["exp_avg_absmax"] = torch.zeros(1)
    assert_step_refused(opt, [a], ValueError, r"holds the block maxima of 8-bit codes, but "
                                              r"these options store 'exp_avg' as float32")


def test_changing_a_group_s_format_mid_run_is_refused_until_the_state_is_reset():
    a, b, opt = two_groups(fmt="8bit")
    opt.step()
    opt.param_groups[1]["state_format"] = "bfloat16"
    assert_step_refused(opt, [a, b], TypeError, NAME + r"'exp_avg' has dtype torch.uint8; "
                                                       r"state_format='bfloat16' stores it")
    del opt.state[b]                       # a fresh state for b: accepted
    opt.step()
    assert opt.state[b]["exp_avg"].dtype == torch.bfloat16


# -- stochastic rounding -----------------------------------------------------------------

def run(seed, steps=5, fmt="bfloat16", rounding="stochastic"):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3000, generator=gen).bfloat16())
    opt = lt.Adam([p], lr=0.01, state_format=fmt, param_rounding=rounding, seed=seed)
    for _ in range(steps):
        p.grad = torch.randn(3000, generator=gen).bfloat16()
        opt.step()
    return [memory(p).copy()] + [memory(opt.state[p][k]).copy() for k in ("exp_avg", "exp_avg_sq")]


def test_stochastic_rounding_is_reproducible_and_depends_on_the_seed():
    first, again, other = run(11), run(11), run(12)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    for x, y in zip(first, other):     # params and both moments
        assert not np.array_equal(x, y)


@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_stochastic_rounding_bits_are_keyed_by_the_group_step_count(seed):
    """Adam's first update from the same values, once as update 0 and once as update 7 of
    the group (its "lrcore_step_count"; the param's own step count, which drives the bias
    corrections, is 0 in both): the stored bfloat16 moments are the float32 moments (from a
    state_format="float32" run) rounded by lrcore.compact's stochastic rounding with the keys
    of (seed, 0 or 7, array 0, slot 0 / 1). So they differ between the two steps."""
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(4000, generator=gen)
    grad = torch.randn(4000, generator=gen)
    stored = {}
    for count in (0, 7, "float32"):
        p = torch.nn.Parameter(start.clone())
        opt = lt.Adam([p], lr=0.01, state_format="float32" if count == "float32" else "bfloat16",
                      seed=seed)
        if count != "float32":
            opt.param_groups[0]["lrcore_step_count"] = count
        p.grad = grad.clone()
        opt.step()
        stored[count] = opt.state[p]
    for slot, name in enumerate(("exp_avg", "exp_avg_sq")):
        exact = stored["float32"][name].numpy()
        assert stored["float32"][name].dtype == torch.float32
        got = {}
        for count in (0, 7):
            key = compact.rounding_key(seed, count, 0, slot)
            want = compact.round_bf16_stochastic(exact, key)
            got[count] = memory(stored[count][name]).view(np.uint16)
            assert np.array_equal(got[count], want.view(np.uint16)), (name, count)
        differ = np.mean(got[0] != got[7])
        # exp_avg = 0.1·g has 16 random low bits: about half the roundings go either way
        assert 0.2 < differ < 0.8, (name, differ)


def test_stochastic_param_rounding_is_unbiased_where_nearest_stalls():
    """A bfloat16 param of 1.0 with updates of 1/4 ulp (lr·1, Adam's first steps move by
    about lr): rounding to nearest leaves it at 1.0 for ever, stochastic rounding moves it on
    average by the exact amount (within 5 standard deviations over 4096 elements)."""
    n, lr, steps = 4096, 2.0 ** -9, 8        # bfloat16's ulp at 1.0 is 2**-7
    results = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
        opt = lt.SGD([p], lr=lr, param_rounding=rounding, seed=3)
        for _ in range(steps):
            p.grad = -torch.ones(n, dtype=torch.bfloat16)       # p += lr each step
            opt.step()
        results[rounding] = p.detach().float()
    assert torch.equal(results["nearest"], torch.ones(n))
    moved = float(results["stochastic"].mean()) - 1.0
    # each step adds a Bernoulli multiple of ulp 2**-7 with mean lr: sd of the mean is small
    assert abs(moved - steps * lr) < 5 * (2.0 ** -7) * math.sqrt(steps * 0.25 / n)
