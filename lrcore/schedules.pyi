from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Self

__all__ = [
    "LearningRateSchedule",
    "Constant",
    "PiecewiseConstant",
    "ExponentialDecay",
    "NaturalExpDecay",
    "InverseTimeDecay",
    "PolynomialDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "LinearCosineDecay",
    "NoisyLinearCosineDecay",
    "Warmup",
    "serialize",
    "deserialize",
    "Linear",
    "InverseSqrt",
    "WarmupStableDecay",
    "get",
]
__all__ += ["OneCycle", "Cyclic", "Sequence"]

MAX_WARMUP_NESTING: int
SCHEDULES: dict[str, type[LearningRateSchedule]]

class LearningRateSchedule:
    # a step is an int (a float comes back) or an integer array (a float64 array of its shape)
    @overload
    def __call__(self, step: int | np.integer[Any]) -> float: ...
    @overload
    def __call__(self, step: NDArray[np.integer[Any]]) -> NDArray[np.float64]: ...
    def get_config(self) -> dict[str, Any]: ...
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Constant(LearningRateSchedule):
    learning_rate: float
    def __init__(self, learning_rate: float) -> None: ...

class PiecewiseConstant(LearningRateSchedule):
    boundaries: list[float]
    values: list[float]
    def __init__(
        self, boundaries: list[float] | tuple[float, ...] | NDArray[Any],
        values: list[float] | tuple[float, ...] | NDArray[Any],
    ) -> None: ...

class _Decay(LearningRateSchedule):
    initial_learning_rate: float
    decay_steps: float
    decay_rate: float
    staircase: bool
    def __init__(
        self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
        staircase: bool = ...,
    ) -> None: ...

class ExponentialDecay(_Decay): ...
class NaturalExpDecay(_Decay): ...
class InverseTimeDecay(_Decay): ...

class PolynomialDecay(LearningRateSchedule):
    initial_learning_rate: float
    decay_steps: float
    end_learning_rate: float
    power: float
    cycle: bool
    def __init__(
        self, initial_learning_rate: float, decay_steps: float, end_learning_rate: float = ...,
        power: float = ..., cycle: bool = ...,
    ) -> None: ...

class CosineDecay(LearningRateSchedule):
    initial_learning_rate: float
    decay_steps: float
    alpha: float
    warmup_target: float | None
    warmup_steps: int
    def __init__(
        self, initial_learning_rate: float, decay_steps: float, alpha: float = ...,
        warmup_target: float | None = ..., warmup_steps: int = ...,
    ) -> None: ...

class CosineDecayRestarts(LearningRateSchedule):
    initial_learning_rate: float
    first_decay_steps: float
    t_mul: float
    m_mul: float
    alpha: float
    def __init__(
        self, initial_learning_rate: float, first_decay_steps: float, t_mul: float = ...,
        m_mul: float = ..., alpha: float = ...,
    ) -> None: ...

class LinearCosineDecay(LearningRateSchedule):
    initial_learning_rate: float
    decay_steps: float
    num_periods: float
    alpha: float
    beta: float
    def __init__(
        self, initial_learning_rate: float, decay_steps: float, num_periods: float = ...,
        alpha: float = ..., beta: float = ...,
    ) -> None: ...

class NoisyLinearCosineDecay(LinearCosineDecay):
    initial_variance: float
    variance_decay: float
    seed: int
    def __init__(
        self, initial_learning_rate: float, decay_steps: float, initial_variance: float = ...,
        variance_decay: float = ..., num_periods: float = ..., alpha: float = ...,
        beta: float = ..., seed: int = ...,
    ) -> None: ...

class Warmup(LearningRateSchedule):
    schedule: LearningRateSchedule     # a number given as `schedule` is kept as a Constant
    warmup_steps: int
    initial_learning_rate: float
    mode: Literal["linear", "constant"]
    def __init__(
        self, schedule: LearningRateSchedule | float, warmup_steps: int,
        initial_learning_rate: float = ..., mode: Literal["linear", "constant"] = ...,
    ) -> None: ...

INVERSE_SQRT_TIMESCALE: int
DECAY_SHAPES: tuple[str, ...]
HF_SCHEDULES: dict[str, tuple[str, ...]]

class Linear(LearningRateSchedule):
    initial_learning_rate: float
    end_learning_rate: float
    decay_steps: float
    def __init__(
        self, initial_learning_rate: float, end_learning_rate: float, decay_steps: float
    ) -> None: ...

class InverseSqrt(LearningRateSchedule):
    peak_learning_rate: float
    warmup_steps: int
    def __init__(self, peak_learning_rate: float, warmup_steps: int) -> None: ...

class WarmupStableDecay(LearningRateSchedule):
    peak_learning_rate: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    decay: Literal["linear", "cosine", "1-sqrt"]
    end_learning_rate: float
    initial_learning_rate: float
    def __init__(
        self, peak_learning_rate: float, warmup_steps: int, stable_steps: int, decay_steps: int,
        decay: Literal["linear", "cosine", "1-sqrt"] = ..., end_learning_rate: float = ...,
        initial_learning_rate: float = ...,
    ) -> None: ...

def get(
    name: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                  "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr",
                  "warmup_stable_decay"],
    learning_rate: float, num_warmup_steps: int | None = ..., num_training_steps: int | None = ...,
    **kwargs: Any,
) -> LearningRateSchedule: ...

class OneCycle(LearningRateSchedule):
    max_learning_rate: float
    total_steps: int
    pct_start: float
    anneal: Literal["cos", "linear"]
    div_factor: float
    final_div_factor: float
    three_phase: bool
    def __init__(
        self, max_learning_rate: float, total_steps: int, pct_start: float = ...,
        anneal: Literal["cos", "linear"] = ..., div_factor: float = ...,
        final_div_factor: float = ..., three_phase: bool = ...,
    ) -> None: ...

class Cyclic(LearningRateSchedule):
    base_learning_rate: float
    max_learning_rate: float
    step_size_up: float
    step_size_down: float | None
    mode: Literal["triangular", "triangular2", "exp_range"]
    gamma: float
    def __init__(
        self, base_learning_rate: float, max_learning_rate: float, step_size_up: float,
        step_size_down: float | None = ...,
        mode: Literal["triangular", "triangular2", "exp_range"] = ..., gamma: float = ...,
    ) -> None: ...

class Sequence(LearningRateSchedule):
    schedules: list[LearningRateSchedule]     # numbers given as pieces are kept as Constants
    boundaries: list[int]
    def __init__(
        self, schedules: list[LearningRateSchedule | float] | tuple[LearningRateSchedule | float, ...],
        boundaries: list[int] | tuple[int, ...] | NDArray[np.integer[Any]],
    ) -> None: ...

def normal_noise(seed: int, steps: int | NDArray[np.integer[Any]]) -> NDArray[np.float64]: ...
def serialize(schedule: LearningRateSchedule) -> dict[str, Any]: ...
def deserialize(config: dict[str, Any]) -> LearningRateSchedule: ...
