from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

# A project type-checked without torch installed still imports lrcore (whose stub names this
# submodule): torch is then Any, and these two ignores keep that from being an error in this
# file; with torch installed they are unused, which the unused-ignore code allows.
import torch  # type: ignore[import-not-found, unused-ignore]
from typing_extensions import TypeAlias

from lrcore.schedules import LearningRateSchedule

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]

# torch.optim's ParamsT (tensors, param-group dicts or named tensors), spelled out: its name
# and place in torch have changed between releases
_ParamsT: TypeAlias = (
    Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]]
)
# a number, a 1-element tensor read at every step (as torch's schedulers write it), or an
# lrcore schedule evaluated at the group's step count
_LR: TypeAlias = float | torch.Tensor | LearningRateSchedule
_StateFormat: TypeAlias = Literal["float32", "bfloat16", "8bit"] | None
_ParamRounding: TypeAlias = Literal["nearest", "stochastic"]

class _LrcoreOptimizer(torch.optim.Optimizer):  # type: ignore[misc, unused-ignore]
    last_grad_norm: float | None
    def __init__(
        self,
        params: _ParamsT,
        defaults: dict[str, Any],
        foreach: bool | None = ...,
        fused: bool | None = ...,
        capturable: bool = ...,
        differentiable: bool = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
    @property
    def max_grad_norm(self) -> float | None: ...
    @max_grad_norm.setter
    def max_grad_norm(self, value: float | None) -> None: ...
    def __getstate__(self) -> dict[str, Any]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
    @overload
    def step(self, closure: None = ...) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

class SGD(_LrcoreOptimizer):
    def __init__(
        self,
        params: _ParamsT,
        lr: _LR = ...,
        momentum: float = ...,
        dampening: float = ...,
        weight_decay: float = ...,
        nesterov: bool = ...,
        *,
        maximize: bool = ...,
        foreach: bool | None = ...,
        differentiable: bool = ...,
        fused: bool | None = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...

class Adagrad(_LrcoreOptimizer):
    def __init__(
        self,
        params: _ParamsT,
        lr: _LR = ...,
        lr_decay: float = ...,
        weight_decay: float = ...,
        initial_accumulator_value: float = ...,
        eps: float = ...,
        foreach: bool | None = ...,
        *,
        maximize: bool = ...,
        differentiable: bool = ...,
        fused: bool | None = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...

class RMSprop(_LrcoreOptimizer):
    def __init__(
        self,
        params: _ParamsT,
        lr: _LR = ...,
        alpha: float = ...,
        eps: float = ...,
        weight_decay: float = ...,
        momentum: float = ...,
        centered: bool = ...,
        capturable: bool = ...,
        foreach: bool | None = ...,
        maximize: bool = ...,
        differentiable: bool = ...,
        *,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...

class Adam(_LrcoreOptimizer):
    def __init__(
        self,
        params: _ParamsT,
        lr: _LR = ...,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = ...,
        eps: float = ...,
        weight_decay: float = ...,
        amsgrad: bool = ...,
        *,
        foreach: bool | None = ...,
        maximize: bool = ...,
        capturable: bool = ...,
        differentiable: bool = ...,
        fused: bool | None = ...,
        decoupled_weight_decay: bool = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...

class AdamW(Adam):
    def __init__(
        self,
        params: _ParamsT,
        lr: _LR = ...,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = ...,
        eps: float = ...,
        weight_decay: float = ...,
        amsgrad: bool = ...,
        *,
        foreach: bool | None = ...,
        maximize: bool = ...,
        capturable: bool = ...,
        differentiable: bool = ...,
        fused: bool | None = ...,
        max_grad_norm: float | None = ...,
        state_format: _StateFormat = ...,
        param_rounding: _ParamRounding = ...,
        seed: int = ...,
        min_8bit_size: int = ...,
    ) -> None: ...
