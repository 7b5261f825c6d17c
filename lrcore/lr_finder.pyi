import os
from collections.abc import Callable
from typing import IO, Any, Literal, SupportsFloat, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lrcore.optimizers import Optimizer, _Grads, _Params

# find_lr hands fn the params exactly as it was given them
_P = TypeVar("_P", bound=_Params)

SMOOTHING: float
DIVERGED: float

class LRFinderResult:
    lrs: NDArray[np.float64]
    losses: NDArray[np.float64]
    stopped_early: bool
    suggestion: float
    steepest: float
    def __init__(self, lrs: ArrayLike, losses: ArrayLike, stopped_early: bool) -> None: ...
    # any target matplotlib's savefig takes: a path, or a binary file object
    def plot(self, path: str | os.PathLike[str] | IO[bytes]) -> None: ...

def find_lr(
    fn: Callable[[_P], tuple[SupportsFloat, _Grads]],
    params: _P,
    state: Optimizer,
    start_lr: float = ...,
    end_lr: float = ...,
    num_steps: int = ...,
    mode: Literal["exp", "linear"] = ...,
) -> LRFinderResult: ...
