import os
from collections.abc import Callable
from typing import IO, Final, Literal, SupportsFloat, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lrcore.optimizers import Optimizer, _Grads, _Params

# find_lr hands fn the params exactly as it was given them
_P = TypeVar("_P", bound=_Params)

_Rule = Literal["valley", "minimum", "steep", "slide"]

RULES: Final[tuple[_Rule, ...]]
SKIP_END: Final[int]
MIN_POINTS: Final[int]
SLIDE_SPAN: Final[int]
SLIDE_THRESH: Final[float]
MIN_DECREASE: Final[float]

class LRFinderResult:
    lrs: NDArray[np.float64]
    losses: NDArray[np.float64]
    stopped_early: bool
    rule: _Rule
    window: tuple[int, int]
    suggestions: dict[str, float | None]
    suggestion: float | None
    reason: str | None
    steepest: float | None
    def __init__(
        self,
        lrs: ArrayLike,
        losses: ArrayLike,
        stopped_early: bool = ...,
        suggest: _Rule = ...,
        skip_start: int = ...,
        skip_end: int = ...,
    ) -> None: ...
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
    *,
    suggest: _Rule = ...,
    diverge_threshold: float = ...,
    smoothing: float = ...,
    batches_per_lr: int = ...,
) -> LRFinderResult: ...
