"""lrcore: a fast, exact optimizer step for numpy buffers on the CPU.

    state = lrcore.SGD(lr=0.1, momentum=0.9)
    lrcore.step(params, grads, state)      # updates params in place, returns the lr used

The step runs in compiled kernels (lrcore.backend == "cython") and falls back to the numpy
reference implementation (lrcore.reference) when they are unavailable or when
LRCORE_BACKEND=numpy / set_backend("numpy") asks for it.
"""
from lrcore import _backend, schedules
from lrcore._backend import set_backend
from lrcore.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

__version__ = "0.1.0"
__all__ = ["step", "schedules", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Optimizer", "set_backend", "backend", "__version__"]


def step(params, grads, state):
    """Apply one update of `state`'s optimizer to `params`, in place; return the lr it used.

    params: a float32/float64 C-contiguous writeable ndarray, or a list/tuple of them.
    grads: the same structure (same count, shapes, dtypes); never written.
    state: an optimizer state such as lrcore.SGD(...). Update k = state.step_count uses
    lr(k); afterwards state.step_count == k + 1. On any error (TypeError / ValueError naming
    the argument) nothing has been modified.
    """
    return state._step(params, grads)


def __getattr__(name):
    if name == "backend":   # live: follows set_backend()
        return _backend.active
    raise AttributeError(f"module 'lrcore' has no attribute {name!r}")
