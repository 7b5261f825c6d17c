# The numpy reference: one optimizer update of one array, in place (params and buffers are
# written, the gradient never). `step` is the array's update count before this update.
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

CHUNK: int
LANES: int

def widen(a: NDArray[Any]) -> NDArray[Any]: ...
def narrow(x: NDArray[Any], dtype: DTypeLike) -> NDArray[Any]: ...
def full(shape: int | tuple[int, ...], value: float, dtype: DTypeLike) -> NDArray[Any]: ...
def grad_sumsq(grads: Iterable[NDArray[Any] | None]) -> tuple[float, bool]: ...
def sgd(
    param: NDArray[np.floating[Any]],
    grad: NDArray[np.floating[Any]],
    momentum_buffer: NDArray[np.floating[Any]] | None = ...,
    *,
    step: int,
    lr: float,
    momentum: float = ...,
    dampening: float = ...,
    nesterov: bool = ...,
    weight_decay: float = ...,
    maximize: bool = ...,
) -> None: ...
def adagrad(
    param: NDArray[np.floating[Any]],
    grad: NDArray[np.floating[Any]],
    sum: NDArray[np.floating[Any]],
    *,
    step: int,
    lr: float,
    lr_decay: float = ...,
    weight_decay: float = ...,
    eps: float = ...,
    maximize: bool = ...,
) -> None: ...
def rmsprop(
    param: NDArray[np.floating[Any]],
    grad: NDArray[np.floating[Any]],
    square_avg: NDArray[np.floating[Any]],
    grad_avg: NDArray[np.floating[Any]] | None = ...,
    momentum_buffer: NDArray[np.floating[Any]] | None = ...,
    *,
    step: int,
    lr: float,
    alpha: float = ...,
    eps: float = ...,
    weight_decay: float = ...,
    momentum: float = ...,
    centered: bool = ...,
    maximize: bool = ...,
) -> None: ...
def adam(
    param: NDArray[np.floating[Any]],
    grad: NDArray[np.floating[Any]],
    exp_avg: NDArray[np.floating[Any]],
    exp_avg_sq: NDArray[np.floating[Any]],
    max_exp_avg_sq: NDArray[np.floating[Any]] | None = ...,
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = ...,
    eps: float = ...,
    weight_decay: float = ...,
    amsgrad: bool = ...,
    maximize: bool = ...,
    decoupled_weight_decay: bool = ...,
) -> None: ...
def adamw(
    param: NDArray[np.floating[Any]],
    grad: NDArray[np.floating[Any]],
    exp_avg: NDArray[np.floating[Any]],
    exp_avg_sq: NDArray[np.floating[Any]],
    max_exp_avg_sq: NDArray[np.floating[Any]] | None = ...,
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = ...,
    eps: float = ...,
    weight_decay: float = ...,
    amsgrad: bool = ...,
    maximize: bool = ...,
) -> None: ...
