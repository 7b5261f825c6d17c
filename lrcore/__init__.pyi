from typing import Any, Literal

from lrcore import schedules as schedules
from lrcore import torch as torch   # at runtime imported on first use (module __getattr__)
from lrcore._backend import get_num_threads as get_num_threads
from lrcore._backend import set_backend as set_backend
from lrcore._backend import set_num_threads as set_num_threads
from lrcore.checkpoint import load as load
from lrcore.checkpoint import save as save
from lrcore.lr_finder import find_lr as find_lr
from lrcore.optimizers import SGD as SGD
from lrcore.optimizers import Adagrad as Adagrad
from lrcore.optimizers import Adam as Adam
from lrcore.optimizers import AdamW as AdamW
from lrcore.optimizers import Optimizer as Optimizer
from lrcore.optimizers import RMSprop as RMSprop
from lrcore.optimizers import _Grads, _Params
from lrcore.plateau import ReduceLROnPlateau as ReduceLROnPlateau

__version__: str
__all__ = [
    "step",
    "schedules",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Optimizer",
    "set_backend",
    "backend",
    "set_num_threads",
    "get_num_threads",
    "build_info",
    "save",
    "load",
    "find_lr",
    "ReduceLROnPlateau",
    "__version__",
]

# the active implementation, read live from lrcore._backend (module __getattr__)
backend: Literal["cython", "numpy"]

def step(
    params: _Params, grads: _Grads, state: Optimizer, *, grad_scale: float | None = ...
) -> float: ...
def build_info() -> dict[str, Any]: ...
