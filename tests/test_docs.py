"""docs/reference.md is complete and true: every public name and every parameter with its
default is documented in its own section, every example runs and prints what it says, and
every error message the page quotes is the one the code raises."""
import ast
import contextlib
import inspect
import io
import json
import math
import os
import pathlib
import re
import shlex
import warnings

import numpy as np
import pytest

import lrcore
from lrcore import _backend, reference, schedules
from lrcore.lr_finder import LRFinderResult

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference.md"

pytestmark = pytest.mark.skipif(not PAGE.exists(), reason="docs/reference.md is not present")

TEXT = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
LINES = TEXT.splitlines()


# -- the page's structure -------------------------------------------------------------------

def _headings():
    """[(line index, level, text)] of the page's headings, outside fenced blocks."""
    out, fenced = [], False
    for i, line in enumerate(LINES):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            m = re.match(r"(#{1,6}) (.*)", line)
            if m:
                out.append((i, len(m[1]), m[2].strip()))
    return out


HEADINGS = _headings()


def section(key):
    """The text under the one heading containing `key`, up to the next heading of the same
    or a higher level (subsections included)."""
    found = [(i, level) for i, level, text in HEADINGS if key == text] or \
        [(i, level) for i, level, text in HEADINGS if key in text]
    assert len(found) == 1, f"expected one heading containing {key!r}, found {len(found)}"
    start, level = found[0]
    end = next((i for i, lv, _ in HEADINGS if i > start and lv <= level), len(LINES))
    return "\n".join(LINES[start:end])


def signature_block(text):
    """The first plain fenced block (``` with no language) of a section: its signature."""
    m = re.search(r"^```\n(.*?)^```", text, flags=re.S | re.M)
    return m[1] if m else None


def code_blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", TEXT, flags=re.S | re.M)


def github_slug(heading):
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


# -- what must be documented ----------------------------------------------------------------

OPTIMIZERS = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")


def torch_module():
    pytest.importorskip("torch")
    import lrcore.torch
    return lrcore.torch


def documented_callables():
    """(heading key, callable) for every public callable with a signature section."""
    items = [("`lrcore.step`", lrcore.step)]
    items += [(f"`lrcore.{name}`", getattr(lrcore, name)) for name in OPTIMIZERS]
    items += [(f"`Optimizer.{name}`", getattr(lrcore.Optimizer, name))
              for name in ("buffer_values", "layout", "state_dict", "load_state_dict")]
    items += [(f"`lrcore.{name}`", getattr(lrcore, name))
              for name in ("set_backend", "set_num_threads", "get_num_threads", "build_info",
                           "save", "load", "find_lr", "ReduceLROnPlateau")]
    items += [("`LRFinderResult.plot`", LRFinderResult.plot)]
    items += [(f"`lrcore.schedules.{name}`", cls) for name, cls in schedules.SCHEDULES.items()]
    items += [(f"`lrcore.schedules.{name}`", getattr(schedules, name))
              for name in ("serialize", "deserialize", "get")]
    items += [(f"`lrcore.reference.{name}`", getattr(reference, name))
              for name in ("sgd", "adagrad", "rmsprop", "adam", "adamw")]
    return items


def documented_calls():
    """(heading key, name shown in the page, callable) for callables documented as a call
    `name(arg, key=default)` inside a section rather than by a signature block."""
    base = schedules.LearningRateSchedule
    items = [("`lrcore.schedules.LearningRateSchedule`", "schedule", base.__call__),
             ("`lrcore.schedules.LearningRateSchedule`", "get_config", base.get_config),
             ("`lrcore.schedules.LearningRateSchedule`", "from_config", base.from_config)]
    items += [("`lrcore.reference.widen`", f"reference.{name}", getattr(reference, name))
              for name in ("widen", "narrow", "full", "grad_sumsq")]
    return items


def parameters(fn):
    return [p for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", "cls")]


def same_value(shown, default):
    if isinstance(shown, bool) or isinstance(default, bool) or shown is None or default is None:
        return shown is default
    numbers = (int, float)
    comparable = type(shown) is type(default) or (isinstance(shown, numbers)
                                                  and isinstance(default, numbers))
    return comparable and shown == default


def shown_defaults(block, name):
    """The literal values `name=...` takes in `block`."""
    values = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(name)}=(\([^()]*\)|\"[^\"]*\"|'[^']*'|[^\s,()`]+)",
                         block):
        with contextlib.suppress(ValueError, SyntaxError):
            values.append(ast.literal_eval(m[1]))
    return values


def check_signature(key, fn):
    block = signature_block(section(key))
    assert block is not None, f"{key}: no signature block"
    names = [p.name for p in parameters(fn)]
    for p in parameters(fn):
        assert re.search(rf"(?<![\w.]){re.escape(p.name)}\b", block), \
            f"{key}: parameter {p.name} missing from the signature"
        if p.default is not inspect.Parameter.empty:
            shown = shown_defaults(block, p.name)
            assert any(same_value(v, p.default) for v in shown), \
                f"{key}: {p.name} should show its default {p.default!r}, shows {shown}"
    for extra in re.findall(r"(?<![\w.])(\w+)=", block):
        assert extra in names, f"{key}: the signature shows {extra}=, which is no parameter"


# -- completeness ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, fn", documented_callables(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_parameter_and_default_is_in_its_signature(key, fn):
    check_signature(key, fn)


@pytest.mark.parametrize("key, shown, fn", documented_calls(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_calls_documented_inline_show_every_parameter(key, shown, fn):
    args = [p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in parameters(fn)]
    assert f"{shown}({', '.join(args)})" in section(key)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_optimizer_signatures(name):
    check_signature(f"`lrcore.torch.{name}`", getattr(torch_module(), name))


def test_torch_optimizer_methods_and_extras():
    lt = torch_module()
    import torch
    text = section("Methods and attributes of the `lrcore.torch` optimizers")
    for method in ("step", "load_state_dict"):
        fn = getattr(lt.Adam, method)
        args = [p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                for p in parameters(fn)]
        assert f"`{method}({', '.join(args)})`" in text
    extras = {n for name in lt.__all__ for n in dir(getattr(lt, name))
              if not n.startswith("_") and n not in dir(torch.optim.Optimizer)}
    extras |= {n for n in vars(lt.Adam([torch.zeros(1, requires_grad=True)]))
               if not n.startswith("_") and n not in vars(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))}
    assert extras >= {"max_grad_norm", "last_grad_norm"}
    for name in extras:
        assert f"`{name}`" in text, name
    assert set(lt.__all__) == set(OPTIMIZERS)


def test_every_public_name_has_its_place():
    for name in lrcore.__all__:
        assert f"`lrcore.{name}" in TEXT, name
    for name in ("step", "backend", "set_backend", "set_num_threads", "get_num_threads",
                 "build_info", "save", "load", "find_lr", "__version__", *OPTIMIZERS):
        section(f"`lrcore.{name}`")
    for name in schedules.__all__:
        section(f"`lrcore.schedules.{name}`")
    section("`lrcore.schedules.SCHEDULES`")
    assert "`MAX_WARMUP_NESTING`" in section("`lrcore.schedules.SCHEDULES`")
    assert f"({schedules.MAX_WARMUP_NESTING})" in section("`lrcore.schedules.Warmup`")
    for name in ("LRFinderResult", "lrcore.torch", "lrcore.reference"):
        assert any(f"`{name}`" in text for _, _, text in HEADINGS), name
    for name in ("lrs", "losses", "suggestion", "steepest", "stopped_early"):
        assert f"`{name}`" in section("`LRFinderResult`"), name


def test_every_state_member_is_documented():
    text = section("`lrcore.Optimizer`")
    members = [n for n in dir(lrcore.Optimizer) if not n.startswith("_")]
    assert {"state_dict", "load_state_dict", "step_count", "lr", "state_bytes",
            "buffer_values", "layout", "buffers"} <= set(members)
    for name in members:
        assert re.search(rf"`(Optimizer\.)?{name}(`|\()", text), name
    for cls_name in OPTIMIZERS:      # each hyperparameter is a read-only attribute
        cls = getattr(lrcore, cls_name)
        props = [n for n, v in vars(cls).items() if isinstance(v, property)]
        for name in props:
            assert name in signature_block(section(f"`lrcore.{cls_name}`")), (cls_name, name)
    for name in ("max_grad_norm", "last_grad_norm", "nonfinite", "state_format",
                 "param_rounding", "seed", "min_8bit_size"):
        assert f"`{name}`" in text or f"`{name}`" in section("Options every optimizer takes")


def test_buffer_names_are_documented():
    """Each optimizer's section names the buffers its options allocate."""
    cases = {"SGD": dict(momentum=0.9), "Adagrad": {}, "RMSprop": dict(momentum=0.9, centered=True),
             "Adam": dict(amsgrad=True), "AdamW": dict(amsgrad=True)}
    for name, options in cases.items():
        state = getattr(lrcore, name)(**options)
        lrcore.step(np.zeros(2, np.float32), np.ones(2, np.float32), state)
        text = section(f"`lrcore.{name}`")
        if name == "AdamW":
            text += section("`lrcore.Adam`")
        for buffer in state.buffers:
            assert f"`{buffer}`" in text, (name, buffer)


def test_headings_name_real_objects():
    """No section documents a name the package does not have."""
    import importlib.util
    for _, _, text in HEADINGS:
        for dotted in re.findall(r"`(lrcore(?:\.\w+)+)", text):
            if dotted.startswith("lrcore.torch") and importlib.util.find_spec("torch") is None:
                continue            # documented, but torch is not installed here
            parts = dotted.split(".")
            obj = importlib.import_module("lrcore")
            for i, part in enumerate(parts[1:], start=2):
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    obj = importlib.import_module(".".join(parts[:i]))
            assert obj is not None


def test_table_of_contents_links_every_section():
    slugs = [github_slug(text) for _, level, text in HEADINGS]
    assert len(slugs) == len(set(slugs)), "two headings with the same anchor"
    contents = section("Contents")
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert set(links) <= set(slugs), set(links) - set(slugs)
    for _, level, text in HEADINGS:
        if level in (2, 3) and text != "Contents":
            assert github_slug(text) in links, f"{text!r} missing from the contents"
    for link in re.findall(r"\]\(#([^)]+)\)", TEXT):
        assert link in slugs, link


def test_the_page_refers_only_to_what_a_reader_can_follow():
    for word in ("API.md", "tutorial", "seed 002", "issue", "this machine", "SPEC", "BUGS"):
        assert word.lower() not in TEXT.lower(), word


def test_cli_commands_and_options_are_documented(capsys):
    from lrcore.__main__ import main
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = re.findall(r"^    (\w+)\s", capsys.readouterr().out, flags=re.M)
    assert set(commands) == {"demo", "schedule", "bench", "info"}
    for command in commands:
        text = section(f"`python -m lrcore {command}`")
        with pytest.raises(SystemExit):
            main([command, "--help"])
        for option in set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out)) - {"--help"}:
            assert option in text, (command, option)


# -- examples -------------------------------------------------------------------------------

PYTHON_BLOCKS = code_blocks("python")


def claimed_output(block):
    """What the block's print lines say they print: the text after '  # ' on each."""
    prints = [line for line in block.splitlines() if line.strip().startswith("print(")]
    claims = [line.split("  # ", 1)[1] for line in prints if "  # " in line]
    assert len(claims) == len(prints), "a print line without its '  # output' comment"
    return claims


def test_the_page_has_examples():
    assert len(PYTHON_BLOCKS) >= 10


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_example_runs_and_prints_what_it_says(index, compiled, capsys):
    block = PYTHON_BLOCKS[index]
    for module in ("torch", "ml_dtypes"):
        if re.search(rf"^import {module}\b", block, flags=re.M):
            pytest.importorskip(module)
    capsys.readouterr()
    exec(compile(block, f"docs/reference.md example {index}", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == claimed_output(block)


def test_cli_example_prints_what_it_says():
    from conftest import run_cli
    pairs = re.findall(r"^```bash\n(.*?)^```\n\n```text\n(.*?)^```", TEXT, flags=re.S | re.M)
    assert pairs
    for command, output in pairs:
        args = shlex.split(command.strip())
        assert args[:3] == ["python", "-m", "lrcore"]
        out = run_cli(*args[3:])
        assert out.returncode == 0, out.stderr
        assert out.stdout == output


# -- the quoted error messages --------------------------------------------------------------

def error_rows():
    """[(exception name, [message shapes])] of the Errors table."""
    rows = []
    for line in section("Errors").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3:
            continue
        names = re.findall(r"^`(\w+)`$", cells[1])
        shapes = re.findall(r"`([^`]+)`", cells[2])
        if names and names[0] != "exception":
            rows.append((names[0], shapes))
    return rows


GRADS_NOTE = "for `grads`, `params[<i>]` reads `grads[<i>]`"


def variants(shape):
    """A quoted shape and, as the Errors section's note says, its form for grads."""
    assert GRADS_NOTE in section("Errors")
    return {shape, shape.replace("params[<i>]", "grads[<i>]")}


def shape_regex(shape):
    """A message shape as a regex: `<...>` placeholders match anything."""
    parts = re.split(r"(<[a-z][a-z0-9_ ]*>)", shape)
    return "".join(".+?" if re.fullmatch(r"<[a-z][a-z0-9_ ]*>", p) else re.escape(p)
                   for p in parts)


def f32(n=3):
    return np.zeros(n, dtype=np.float32)


def sgd(**options):
    return lrcore.SGD(lr=0.1, **options)


def bound(state, n=3):
    lrcore.step(f32(n), f32(n), state)
    return state


def unaligned():
    return np.zeros(13, dtype=np.uint8)[1:13].view(np.float32)


def matrix():
    with warnings.catch_warnings():         # numpy discourages matrix; lrcore refuses it
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(np.zeros((1, 3), np.float32))


def read_only():
    a = f32()
    a.flags.writeable = False
    return a


def at_limit(**fields):
    """An SGD state bound to one float32 (3,) array whose counts are `fields`."""
    options = {"nonfinite": "skip"} if "skipped_steps" in fields else {}
    state = sgd(**options)
    sd = dict(bound(sgd(**options)).state_dict(), **fields)
    state.load_state_dict(sd)
    return state


def reentrant_state():
    state = lrcore.SGD(lr=lambda k: lrcore.step(f32(), f32(), state) or 0.1)
    return state


def nested_warmups(depth):
    s = schedules.Constant(0.1)
    for _ in range(depth):
        s = schedules.Warmup(s, 1)
    return s


def checkpoint(tmp_path, **header):
    """A .npz with an lrcore header built from `header`."""
    path = tmp_path / "crafted.npz"
    full = {"format": "lrcore-checkpoint/1", "optimizer": "SGD", "lr": 0.1,
            "hyperparameters": {}, "step_count": 0, "skipped_steps": 0, "array_steps": [],
            "arrays": []}
    np.savez(path, lrcore=np.array(json.dumps(dict(full, **header))))
    return path


def nan_grads():
    g = f32()
    g[1] = np.nan
    return g


def finder_fn(loss):
    return lambda params: (loss, [f32()])


# (a literal part of the quoted message, what raises it); tmp_path and monkeypatch are
# passed to the triggers that need them
SCENARIOS = [
    ("must be a numpy.ndarray or a list/tuple of them", lambda: lrcore.step(3, f32(), sgd())),
    ("must be a numpy.ndarray, got", lambda: lrcore.step([[1.0]], [f32()], sgd())),
    ("must be a numpy.ndarray, got", lambda: lrcore.step([f32()], [[0.0] * 3], sgd())),
    ("with element-wise arithmetic", lambda: lrcore.step(f32(), np.ma.zeros(3, np.float32), sgd())),
    ("to match params", lambda: lrcore.step(f32(), np.zeros(3, np.int32), sgd())),
    ("native byte order", lambda: lrcore.step(f32(), np.zeros(3, ">f4"), sgd())),
    ("must be C-contiguous", lambda: lrcore.step(f32(), f32(6)[::2], sgd())),
    ("must be aligned", lambda: lrcore.step(f32(), unaligned(), sgd())),
    ("like params", lambda: lrcore.step(f32(), [f32()], sgd())),
    ("must be a list/tuple like params", lambda: lrcore.step([f32()], f32(), sgd())),
    ("got an empty sequence", lambda: lrcore.step([], [], sgd())),
    ("one array per param", lambda: lrcore.step([f32()], [f32(), f32()], sgd())),
    ("with element-wise arithmetic",
     lambda: lrcore.step(matrix(), np.zeros((1, 3), np.float32), sgd())),
    ("with element-wise arithmetic",
     lambda: lrcore.step(np.ma.zeros(3, dtype=np.float32), f32(), sgd())),
    ("float64, float16 or bfloat16, got",
     lambda: lrcore.step(np.zeros(3, np.int32), np.zeros(3, np.int32), sgd())),
    ("native byte order", lambda: lrcore.step(np.zeros(3, ">f4"), np.zeros(3, ">f4"), sgd())),
    ("to match params", lambda: lrcore.step(f32(), np.zeros(3), sgd())),
    ("to match params", lambda: lrcore.step(np.zeros(3, np.float16), f32(), sgd())),
    ("must have the shape of", lambda: lrcore.step(f32(), f32(4), sgd())),
    ("must be C-contiguous", lambda: lrcore.step(f32(6)[::2], f32(), sgd())),
    ("must be C-contiguous", lambda: lrcore.step(np.zeros((2, 3), np.float32, order="F"),
                                                 np.zeros((2, 3), np.float32), sgd())),
    ("must be aligned", lambda: lrcore.step(unaligned(), f32(), sgd())),
    ("must be writeable", lambda: lrcore.step(read_only(), f32(), sgd())),
    ("shares memory with", lambda: (lambda b: lrcore.step(b[:3], b[1:4], sgd()))(f32(6))),
    ("shares memory with", lambda: (lambda b: lrcore.step([b[:3], b[2:5]], [f32(), f32()], sgd()))(f32(6))),
    ("arrays, as at this state's first step",
     lambda: lrcore.step([f32(), f32()], [f32(), f32()], bound(sgd()))),
    ("as at this state's first step, got shape", lambda: lrcore.step(f32(4), f32(4), bound(sgd()))),
    ("as at this state's first step, got shape",
     lambda: lrcore.step(np.zeros(3), np.zeros(3), bound(sgd()))),
    ("such as lrcore.SGD(...)", lambda: lrcore.step(f32(), f32(), "sgd")),
    ("grad_scale must be a finite number > 0", lambda: lrcore.step(f32(), f32(), sgd(), grad_scale=0)),
    ("grad_scale must be a finite number > 0", lambda: lrcore.step(f32(), f32(), sgd(), grad_scale=-2.0)),
    ("grad_scale must be a finite number, got",
     lambda: lrcore.step(f32(), f32(), sgd(), grad_scale=math.nan)),
    ("grad_scale must be a real number", lambda: lrcore.step(f32(), f32(), sgd(), grad_scale="2")),
    ("holds NaN or infinite values", lambda: lrcore.step(f32(), nan_grads(), sgd(nonfinite="raise"))),
    ("float64 params keep float64 buffers",
     lambda: lrcore.step(np.zeros(3), np.zeros(3), lrcore.Adam(state_format="8bit"))),
    ("which rounds to nearest",
     lambda: lrcore.step(np.zeros(3, np.float16), np.zeros(3, np.float16),
                         lrcore.Adam(param_rounding="stochastic"))),
    ("lr schedule gave", lambda: [lrcore.step(f32(), f32(), s) for s in
                                  [lrcore.SGD(lr=schedules.ExponentialDecay(1.0, 1, 1e200))] * 3]),
    ("(returned by the lr callable)", lambda: lrcore.step(f32(), f32(), lrcore.SGD(lr=lambda k: -1.0))),
    ("(returned by the lr callable)", lambda: lrcore.step(f32(), f32(), lrcore.SGD(lr=lambda k: "x"))),
    ("already in use by this thread", lambda: lrcore.step(f32(), f32(), reentrant_state())),
    ("the largest count a state holds",
     lambda: lrcore.step(f32(), f32(), at_limit(step_count=2**63 - 1))),
    ("the largest count a state holds",
     lambda: lrcore.step(f32(), f32(), at_limit(array_steps=[2**63 - 1]))),
    ("the largest count a state holds",
     lambda: lrcore.step(f32(), f32(), at_limit(skipped_steps=2**63 - 1))),
    # constructors
    ("must be a finite number >= 0, got", lambda: lrcore.SGD(lr=-0.1)),
    ("must be a finite number >= 0, got", lambda: lrcore.SGD(lr=10**400)),
    ("must be a finite number >= 0, got", lambda: lrcore.SGD(momentum=-0.5)),
    ("must be a finite number >= 0, got", lambda: lrcore.Adam(eps=math.nan)),
    ("must be a finite number >= 0, got", lambda: lrcore.Adagrad(lr_decay=math.inf)),
    ("dampening must be", lambda: lrcore.SGD(dampening=1.5)),
    ("betas[<i>] must be", lambda: lrcore.Adam(betas=(0.9, 1.0))),
    ("must be a real number, got", lambda: lrcore.SGD(momentum="0.9")),
    ("must be a real number, got", lambda: lrcore.SGD(lr=None)),
    ("betas must be a pair", lambda: lrcore.AdamW(betas=0.9)),
    ("must be a bool, got", lambda: lrcore.SGD(nesterov=1)),
    ("must be a bool, got", lambda: lrcore.RMSprop(centered="yes")),
    ("nesterov=True requires", lambda: lrcore.SGD(nesterov=True)),
    ("nesterov=True requires", lambda: lrcore.SGD(nesterov=True, momentum=0.9, dampening=0.1)),
    ("nonfinite must be one of", lambda: lrcore.SGD(nonfinite="ignore")),
    ("max_grad_norm must be a finite number > 0", lambda: lrcore.Adam(max_grad_norm=0)),
    ("state_format must be one of", lambda: lrcore.Adam(state_format="int8")),
    ("param_rounding must be one of", lambda: lrcore.Adam(param_rounding="up")),
    ("seed must be an int in [0, 2**64 - 1]", lambda: lrcore.Adam(seed=-1)),
    ("min_8bit_size must be an int in", lambda: lrcore.Adam(min_8bit_size=-1)),
    ("must be an int, got", lambda: lrcore.Adam(seed=1.5)),
    # state methods
    ("state_dict must be a dict", lambda: lrcore.SGD().load_state_dict([])),
    ("state_dict must come from", lambda: lrcore.SGD().load_state_dict(lrcore.Adam().state_dict())),
    ("state_dict is missing", lambda: lrcore.SGD().load_state_dict({"optimizer": "SGD"})),
    ("this state's buffers", lambda: bound(lrcore.Adam()).buffer_values("sum")),
    # schedules
    ("step must be an int or an integer ndarray", lambda: schedules.Constant(1)(1.5)),
    ("step must be an int or an integer ndarray", lambda: schedules.Constant(1)(np.zeros(2))),
    ("step must be >= 0", lambda: schedules.Constant(1)(-1)),
    ("step must fit in int64", lambda: schedules.Constant(1)(2**63)),
    ("must be a finite number >= 0, got", lambda: schedules.Constant(-1)),
    ("must be a finite number >= 0, got", lambda: schedules.CosineDecay(0.1, 10, alpha=-1)),
    ("decay_steps must be a finite number > 0", lambda: schedules.ExponentialDecay(0.1, 0, 0.9)),
    ("must be a finite number >= 1", lambda: schedules.CosineDecayRestarts(1.0, 0.5)),
    ("must be a finite number >= 1", lambda: schedules.CosineDecayRestarts(1.0, 10, t_mul=0.5)),
    ("must be a finite number >= 1", lambda: schedules.PolynomialDecay(1.0, 0.5, cycle=True)),
    ("fewer than 2**51 restarts", lambda: schedules.CosineDecayRestarts(1.0, 1, t_mul=1 + 1e-15)),
    ("strictly increasing", lambda: schedules.PiecewiseConstant([2, 1], [1, 2, 3])),
    ("len(boundaries) + 1", lambda: schedules.PiecewiseConstant([1, 2], [1, 2])),
    ("warmup_steps must be", lambda: schedules.Warmup(0.1, -1)),
    ("warmup_steps must be", lambda: schedules.Warmup(0.1, 1.5)),
    ("mode must be 'linear' or 'constant'", lambda: schedules.Warmup(0.1, 5, mode="cos")),
    ("an lrcore schedule or a number", lambda: schedules.Warmup("x", 5)),
    ("an lrcore schedule or a number", lambda: schedules.Warmup(lambda s: 0.1, 5)),
    ("nest Warmups", lambda: nested_warmups(schedules.MAX_WARMUP_NESTING + 1)),
    ("seed must be an int in [0, 2**64)", lambda: schedules.NoisyLinearCosineDecay(0.1, 10, seed=-1)),
    ("arguments <list>, got unknown keys", lambda: schedules.Constant.from_config({"lr": 1})),
    ("config must be {'class_name'",
     lambda: schedules.deserialize({"class_name": "Foo", "config": {}})),
    ("schedule must be an lrcore schedule, got", lambda: schedules.serialize(0.1)),
    # backend and threads
    ("backend must be one of", lambda: lrcore.set_backend("c")),
    ("kernels are not available", "no_kernels"),
    ("n must be an int from 1 to 1024", lambda: lrcore.set_num_threads(0)),
    ("n must be an int from 1 to 1024", lambda: lrcore.set_num_threads(2000)),
    # checkpoints
    ("state must be an lrcore optimizer state, got", lambda: lrcore.save("x", "never-written.npz")),
    ("which a checkpoint cannot hold",
     lambda: lrcore.save(lrcore.SGD(lr=lambda k: 0.1), "never-written.npz")),
    ("path must be a str or os.PathLike", lambda: lrcore.save(lrcore.SGD(), 3)),
    ("path must be a str or os.PathLike", lambda: lrcore.load(3)),
    ("is not a readable lrcore checkpoint", "not_a_zip"),
    ("is not a readable lrcore checkpoint", "directory"),
    ("is not a valid lrcore checkpoint", "invalid_hyperparameters"),
    ("holds an unknown optimizer", "unknown_optimizer"),
    # find_lr
    ("fn must be a callable", lambda: lrcore.find_lr(1, f32(), sgd())),
    ("state must be an lrcore optimizer state, got", lambda: lrcore.find_lr(finder_fn(0.0), f32(), "x")),
    ("0 < start_lr < end_lr", lambda: lrcore.find_lr(finder_fn(0.0), f32(), sgd(), start_lr=1.0, end_lr=0.1)),
    ("0 < start_lr < end_lr", lambda: lrcore.find_lr(finder_fn(0.0), f32(), sgd(), start_lr=0.0)),
    ("num_steps must be an int >= 2", lambda: lrcore.find_lr(finder_fn(0.0), f32(), sgd(), num_steps=1)),
    ("mode must be 'exp' or 'linear'", lambda: lrcore.find_lr(finder_fn(0.0), f32(), sgd(), mode="log")),
    ("no finite loss", lambda: lrcore.find_lr(finder_fn(math.nan), f32(), sgd())),
]


def raised_by(trigger, tmp_path):
    """The exception a scenario's trigger raises (None if it raises nothing); the named
    triggers need a temporary file or a patched backend."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)               # a save that should fail writes nowhere else
        try:
            if callable(trigger):
                trigger()
            elif trigger == "no_kernels":
                patch.setattr(_backend, "_kernels", None)
                patch.setattr(_backend, "_import_error", ImportError("no module"))
                lrcore.set_backend("cython")
            elif trigger == "not_a_zip":
                path = tmp_path / "text.npz"
                path.write_text("not a checkpoint")
                lrcore.load(path)
            elif trigger == "directory":
                lrcore.load(tmp_path)
            elif trigger == "invalid_hyperparameters":
                lrcore.load(checkpoint(tmp_path, hyperparameters={"momentum": -1.0}))
            elif trigger == "unknown_optimizer":
                lrcore.load(checkpoint(tmp_path, optimizer="Foo"))
            else:
                raise AssertionError(trigger)
        except Exception as exc:            # noqa: BLE001 - what the page must describe
            return exc
    return None


def matching_shapes(key, trigger, tmp_path):
    """The quoted message shapes (containing `key`) that the trigger's exception matches,
    with their rows' exception names; fails if it matches none or the type differs."""
    rows = [(name, shape) for name, shapes in error_rows() for shape in shapes if key in shape]
    assert rows, f"no quoted message contains {key!r}"
    exc = raised_by(trigger, tmp_path)
    assert exc is not None, f"{key!r}: nothing was raised"
    message = str(exc)
    matches = [(name, shape) for name, shape in rows
               if any(re.fullmatch(shape_regex(variant), message) for variant in variants(shape))]
    assert matches, f"{type(exc).__name__}: {message!r} matches none of {rows}"
    assert type(exc).__name__ in {name for name, _ in matches}, \
        f"raised {type(exc).__name__}, the page says {[n for n, _ in matches]}"
    return {shape for _, shape in matches}


@pytest.mark.parametrize("key, trigger", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_quoted_error_message_is_what_the_code_raises(key, trigger, compiled, tmp_path):
    matching_shapes(key, trigger, tmp_path)


def test_every_quoted_error_message_is_checked(compiled, tmp_path_factory):
    """None of the Errors table's messages is left without a scenario that raises it."""
    matched = set()
    for key, trigger in SCENARIOS:
        matched |= matching_shapes(key, trigger, tmp_path_factory.mktemp("scenario"))
    quoted = {shape for name, shapes in error_rows() for shape in shapes}
    assert len(quoted) > 60
    assert quoted - matched == set()


def test_error_rows_name_real_exceptions():
    import builtins
    rows = error_rows()
    assert rows
    for name, shapes in rows:
        assert issubclass(getattr(builtins, name), BaseException), name
        assert shapes or name == "FileNotFoundError", name


def test_missing_checkpoint_is_file_not_found(tmp_path):
    assert any(name == "FileNotFoundError" for name, _ in error_rows())
    with pytest.raises(FileNotFoundError):
        lrcore.load(tmp_path / "absent.npz")


def test_torch_error_wording_quoted_is_raised():
    lt = torch_module()
    import torch
    with pytest.raises(ValueError) as info:
        lt.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=-0.5)
    assert f"`{info.value}`" in section("torch optimizers: `lrcore.torch`")
