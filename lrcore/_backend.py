"""Which implementation runs the step: the compiled kernels or the numpy reference.

LRCORE_BACKEND=numpy (or set_backend("numpy")) selects the reference; "cython" demands the
compiled kernels and fails loudly without them; unset or "auto" uses the kernels when they
import and otherwise warns once and falls back to the reference.
"""
import importlib
import os
import warnings

NAMES = ("auto", "cython", "numpy")

try:
    _kernels = importlib.import_module("lrcore._kernels")
    _import_error = None
except ImportError as exc:  # no compiled extension: a source checkout, or a failed build
    _kernels = None
    _import_error = exc

active = None   # "cython" or "numpy": read by every step
_warned = False


def set_backend(name):
    """Select the implementation of lrcore.step: "cython", "numpy" or "auto"."""
    global active, _warned
    if name not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {name!r}")
    if name == "numpy":
        active = "numpy"
    elif _kernels is not None:
        active = "cython"
    elif name == "cython":
        raise ImportError(f"the compiled lrcore kernels are not available: {_import_error}")
    else:
        if not _warned:
            warnings.warn(f"lrcore's compiled kernels could not be imported ({_import_error}); "
                          f"using the numpy reference implementation, which is much slower",
                          RuntimeWarning, stacklevel=3)
            _warned = True
        active = "numpy"


set_backend(os.environ.get("LRCORE_BACKEND", "").strip().lower() or "auto")
