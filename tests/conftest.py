"""Shared fixtures, and the guard that keeps a broken build from passing as green.

Unless the run asked for the reference explicitly (LRCORE_BACKEND=numpy), the session stops
at once when lrcore did not load its compiled kernels: a silent fallback to numpy must never
make the suite pass.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import lrcore
from lrcore import _backend

NUMPY_REQUESTED = os.environ.get("LRCORE_BACKEND", "").strip().lower() == "numpy"


def pytest_sessionstart(session):
    if _backend._kernels is None and not NUMPY_REQUESTED:
        pytest.exit(f"lrcore's compiled kernels did not import ({_backend._import_error}); "
                    f"build them (pip install -e .) or run with LRCORE_BACKEND=numpy",
                    returncode=3)


def pytest_addoption(parser):
    parser.addoption("--large", action="store_true",
                     help="also run the tests marked large (arrays past 2**31 elements: ~9 GB)")


def pytest_collection_modifyitems(config, items):
    """Tests marked large need more memory than a laptop has: they run only with --large, so
    the default run fits in 4 GB."""
    if config.getoption("--large"):
        return
    skip = pytest.mark.skip(reason="needs ~9 GB of memory; run with --large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    where = getattr(_backend._kernels, "__file__", "not loaded")
    return f"lrcore {lrcore.__version__}: backend {lrcore.backend}, kernels {where}"


def run_python(*args, timeout=300, **env):
    """`python *args` in a fresh process, run beside the package under test (so it imports
    the same lrcore), with this run's LRCORE_* variables replaced by `env`. A child still
    running after `timeout` seconds is killed and the test fails (subprocess.TimeoutExpired):
    a hang regression fails CI instead of stalling it."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LRCORE_")}
    full.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full,
                          cwd=os.path.dirname(os.path.dirname(lrcore.__file__)), timeout=timeout)


def assert_round_trips(schedule):
    """get_config / from_config, repr, and serialize / deserialize through JSON rebuild an
    equal schedule with the same values."""
    import json
    from lrcore import schedules
    assert type(schedule).from_config(schedule.get_config()) == schedule
    assert eval(repr(schedule), vars(schedules)) == schedule
    restored = schedules.deserialize(json.loads(json.dumps(schedules.serialize(schedule))))
    assert restored == schedule
    steps = np.arange(0, 300, 7)
    np.testing.assert_array_equal(restored(steps), schedule(steps))


def run_cli(*args):
    """`python -m lrcore *args` (see run_python)."""
    return run_python("-m", "lrcore", *args)


@pytest.fixture
def compiled():
    """Run the test on the compiled kernels; skipped only in an explicit numpy-only run."""
    if _backend._kernels is None:
        pytest.skip("compiled kernels not built; LRCORE_BACKEND=numpy run")
    previous = _backend.active
    lrcore.set_backend("cython")
    yield
    _backend.active = previous


@pytest.fixture
def numpy_backend():
    previous = _backend.active
    lrcore.set_backend("numpy")
    yield
    _backend.active = previous


@pytest.fixture(params=["cython", "numpy"])
def backend(request):
    """Run the test once per backend."""
    if request.param == "cython":
        request.getfixturevalue("compiled")
    else:
        request.getfixturevalue("numpy_backend")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


def vector_levels():
    """The vector levels of the kernels this CPU runs (src/formats.h: portable, avx2,
    avx512f; each has its own update loops, half conversions and 8-bit primitives); every one
    must give the same bits."""
    kernels = _backend._kernels
    if kernels is None:
        return []
    levels = []
    for level in kernels.VECTOR_LEVELS:
        try:
            kernels.set_vector_level(level)
        except ValueError:
            continue
        levels.append(level)
    kernels.set_vector_level(None)
    return levels


LEVELS = vector_levels()


@pytest.fixture
def vector_level(request):
    """Run on the vector level `request.param` (one of LEVELS), then on the best again."""
    _backend._kernels.set_vector_level(request.param)
    yield request.param
    _backend._kernels.set_vector_level(None)
