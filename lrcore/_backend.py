"""Which implementation runs the step, and on how many threads.

LRCORE_BACKEND=numpy (or set_backend("numpy")) selects the reference; "cython" demands the
compiled kernels and fails loudly without them; unset or "auto" uses the kernels when they
import and otherwise warns once and falls back to the reference. LRCORE_NUM_THREADS (or
set_num_threads(n)) caps the threads of a large compiled step; the default is the number of
cores this process may run on.
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
    if _kernels is not None:
        _kernels.set_active(active == "cython")


_num_threads = 1


MAX_THREADS = 1024      # src/pool.h LRC_MAX_THREADS


def set_num_threads(n):
    """Use up to n threads for a large step, 1 <= n <= MAX_THREADS (results are bit-identical
    for any n). The pool starts its threads when a step first needs them."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        shown = repr(n) if not isinstance(n, int) or abs(n) < 10**12 else "a larger int"
        raise ValueError(f"n must be an int from 1 to {MAX_THREADS}, got {shown}")
    if _kernels is not None:
        _kernels.set_num_threads(n)
    _num_threads = n


def get_num_threads():
    """The thread cap of the compiled step."""
    return _num_threads


def _default_threads():
    value = os.environ.get("LRCORE_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(f"LRCORE_NUM_THREADS must be an int from 1 to {MAX_THREADS}, "
                             f"got {value[:40]!r}")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:       # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, MAX_THREADS)


set_backend(os.environ.get("LRCORE_BACKEND", "").strip().lower() or "auto")
set_num_threads(_default_threads())
