from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from typing_extensions import TypeAlias

from lrcore.plateau import ReduceLROnPlateau
from lrcore.schedules import LearningRateSchedule

# What the annotations of lrcore's stubs share (private: they exist for the type checker only).
# One array, or a list / tuple of them; grads may hold None (a frozen array).
_Params: TypeAlias = NDArray[Any] | Sequence[NDArray[Any]]
_Grads: TypeAlias = NDArray[Any] | Sequence[NDArray[Any] | None]
# A learning rate: a number, an lrcore schedule (evaluated in the compiled step), or any
# callable step -> rate (called once per step).
_LR: TypeAlias = float | LearningRateSchedule | Callable[[int], float]
_Nonfinite: TypeAlias = Literal["propagate", "skip", "raise"]
_StateFormat: TypeAlias = Literal["float32", "bfloat16", "8bit"] | None
_ParamRounding: TypeAlias = Literal["nearest", "stochastic"]
# (format name, shape) per param array; Optimizer.layout's result maps buffer names to them
_ArrayLayout: TypeAlias = list[tuple[str, tuple[int, ...]]]

NONFINITE: dict[str, int]

class Optimizer:
    def __init__(
        self,
        lr: _LR,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
        **hyper: Any,
    ) -> None: ...
    @property
    def lr(self) -> _LR: ...
    @lr.setter
    def lr(self, value: _LR) -> None: ...
    @property
    def current_lr(self) -> float: ...
    @property
    def plateau(self) -> ReduceLROnPlateau | None: ...
    @property
    def step_count(self) -> int: ...
    @property
    def array_steps(self) -> list[int]: ...
    @property
    def skipped_steps(self) -> int: ...
    @property
    def max_grad_norm(self) -> float | None: ...
    @property
    def last_grad_norm(self) -> float | None: ...
    @property
    def state_format(self) -> _StateFormat: ...
    @property
    def nonfinite(self) -> _Nonfinite: ...
    @property
    def param_rounding(self) -> _ParamRounding: ...
    @property
    def seed(self) -> int: ...
    @property
    def min_8bit_size(self) -> int: ...
    @property
    def state_bytes(self) -> int: ...
    @property
    def buffers(self) -> dict[str, list[NDArray[Any]]]: ...
    def buffer_values(self, name: str) -> list[NDArray[np.floating[Any]]]: ...
    def layout(self, arrays: Sequence[tuple[str, tuple[int, ...]]]) -> dict[str, _ArrayLayout]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

class SGD(Optimizer):
    def __init__(
        self,
        lr: _LR = ...,
        momentum: float = ...,
        dampening: float = ...,
        nesterov: bool = ...,
        weight_decay: float = ...,
        maximize: bool = ...,
        *,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
    @property
    def momentum(self) -> float: ...
    @property
    def dampening(self) -> float: ...
    @property
    def nesterov(self) -> bool: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def maximize(self) -> bool: ...

class Adagrad(Optimizer):
    def __init__(
        self,
        lr: _LR = ...,
        lr_decay: float = ...,
        weight_decay: float = ...,
        initial_accumulator_value: float = ...,
        eps: float = ...,
        maximize: bool = ...,
        *,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
    @property
    def lr_decay(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def initial_accumulator_value(self) -> float: ...
    @property
    def eps(self) -> float: ...
    @property
    def maximize(self) -> bool: ...

class RMSprop(Optimizer):
    def __init__(
        self,
        lr: _LR = ...,
        alpha: float = ...,
        eps: float = ...,
        weight_decay: float = ...,
        momentum: float = ...,
        centered: bool = ...,
        maximize: bool = ...,
        *,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
    @property
    def alpha(self) -> float: ...
    @property
    def eps(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def centered(self) -> bool: ...
    @property
    def maximize(self) -> bool: ...

class Adam(Optimizer):
    def __init__(
        self,
        lr: _LR = ...,
        betas: tuple[float, float] = ...,
        eps: float = ...,
        weight_decay: float = ...,
        amsgrad: bool = ...,
        maximize: bool = ...,
        *,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
    @property
    def betas(self) -> tuple[float, float]: ...
    @property
    def eps(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def amsgrad(self) -> bool: ...
    @property
    def maximize(self) -> bool: ...

class AdamW(Adam):
    def __init__(
        self,
        lr: _LR = ...,
        betas: tuple[float, float] = ...,
        eps: float = ...,
        weight_decay: float = ...,
        amsgrad: bool = ...,
        maximize: bool = ...,
        *,
        nonfinite: _Nonfinite = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...

def python_step(
    params: _Params, grads: _Grads, state: Optimizer, *, grad_scale: float | None = ...
) -> float: ...
def clip_coefficient(norm: float, max_grad_norm: float) -> float: ...
def grad_norm(
    grads: Iterable[NDArray[Any] | None], grad_scale: float = ...
) -> tuple[float, bool]: ...
