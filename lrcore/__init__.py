"""lrcore: a fast, exact optimizer step for numpy buffers on the CPU.

    state = lrcore.SGD(lr=0.1, momentum=0.9)
    lrcore.step(params, grads, state)      # updates params in place, returns the lr used

The step runs in compiled kernels (lrcore.backend == "cython") and falls back to the numpy
reference implementation (lrcore.reference) when they are unavailable or when
LRCORE_BACKEND=numpy / set_backend("numpy") asks for it.
"""
from lrcore import _backend, schedules
from lrcore._backend import get_num_threads, set_backend, set_num_threads
from lrcore.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, python_step
from lrcore.checkpoint import load, save
from lrcore.lr_finder import find_lr
from lrcore.plateau import ReduceLROnPlateau

__version__ = "0.1.0"
__all__ = ["step", "schedules", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Optimizer",
           "set_backend", "backend", "set_num_threads", "get_num_threads", "build_info",
           "save", "load", "find_lr", "ReduceLROnPlateau", "__version__"]


if _backend._kernels is not None:
    step = _backend._kernels.step       # compiled; falls back to python_step where it must
else:
    def step(params, grads, state, *, grad_scale=None):
        """Apply one update of `state`'s optimizer to `params`, in place; return the lr used.

        params: a C-contiguous writeable ndarray (float32, float64, float16 or bfloat16), or
        a list/tuple of them. grads: the same structure (same count and shapes; dtypes as
        the table of docs/reference.md); never written. state: an optimizer state such as lrcore.SGD(...).
        Update k = state.step_count uses lr(k); afterwards state.step_count == k + 1.
        grad_scale: the loss scale the grads carry; the update uses g / grad_scale. On any
        error (TypeError / ValueError naming the argument) nothing has been modified.
        """
        return python_step(params, grads, state, grad_scale=grad_scale)


def build_info():
    """{"version", "backend", "numpy", "num_threads", and, with the extension: "compiler",
    "isa_compiled" (the versions of the update loops built), "isa_dispatched" (the one this CPU
    runs), "vector_level" (its name among the vector levels), "threading" ("pthreads": lrcore's
    own pool; "none": the calling thread only)}."""
    import numpy
    info = {"version": __version__, "backend": _backend.active, "numpy": numpy.__version__,
            "num_threads": get_num_threads()}
    if _backend._kernels is not None:
        info.update(_backend._kernels.build_info())
    return info


def __getattr__(name):
    if name == "backend":   # live: follows set_backend()
        return _backend.active
    if name == "torch":     # imported on first use, so torch stays optional
        import importlib
        return importlib.import_module("lrcore.torch")
    raise AttributeError(f"module 'lrcore' has no attribute {name!r}")
