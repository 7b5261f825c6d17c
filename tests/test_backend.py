"""Backend selection: the compiled kernels by default, the numpy reference on request."""
import os

import pytest

import lrcore
from lrcore import _backend

from conftest import NUMPY_REQUESTED, run_python


@pytest.mark.skipif(NUMPY_REQUESTED, reason="this run asked for the numpy backend")
def test_the_compiled_kernels_of_this_package_are_loaded():
    assert lrcore.backend == "cython"
    kernels_dir = os.path.dirname(os.path.abspath(_backend._kernels.__file__))
    assert kernels_dir == os.path.dirname(os.path.abspath(lrcore.__file__))


def test_set_backend_switches_and_rejects_unknown_names(compiled):
    lrcore.set_backend("numpy")
    assert lrcore.backend == "numpy"
    lrcore.set_backend("auto")
    assert lrcore.backend == "cython"
    with pytest.raises(ValueError, match=r"backend must be one of 'auto', 'cython', 'numpy', got 'c'"):
        lrcore.set_backend("c")
    assert lrcore.backend == "cython"


def test_environment_selects_the_reference(compiled):
    out = run_python("-c", "import lrcore; print(lrcore.backend)", LRCORE_BACKEND="numpy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "numpy"


BLOCK_EXTENSION = "import sys; sys.modules['lrcore._kernels'] = None\n"


def test_missing_extension_warns_once_and_falls_back():
    code = BLOCK_EXTENSION + (
        "import warnings, numpy as np\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import lrcore\n"
        "    lrcore.set_backend('auto')\n"
        "w = np.ones(3, np.float32); lrcore.step(w, w * 2, lrcore.SGD(lr=0.5))\n"
        "print(lrcore.backend, len(caught), caught[0].category.__name__, w[0])\n")
    out = run_python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "1", "RuntimeWarning", "0.0"]


def test_demanding_the_kernels_without_them_fails_loudly():
    out = run_python("-c", BLOCK_EXTENSION + "import lrcore", LRCORE_BACKEND="cython")
    assert out.returncode != 0
    assert "ImportError: the compiled lrcore kernels are not available" in out.stderr
