# Types of the compiled extension (src/_kernels.pyx). Users reach it through lrcore.step,
# lrcore.build_info and lrcore.set_num_threads; the rest is what lrcore's own modules call,
# typed so that tests/test_typing.py's stubtest run keeps this file and the extension in step.
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from typing_extensions import disjoint_base

from lrcore.optimizers import Optimizer, _ArrayLayout, _Grads, _Params

_T = TypeVar("_T")
_Format = Literal["float32", "float64", "float16", "bfloat16"]
_Layout = dict[str, _ArrayLayout]

MAX_THREADS: int
CHUNK: int
LANES: int
SGD: int
ADAGRAD: int
RMSPROP: int
ADAM: int
HYPER_FIELDS: tuple[str, ...]
SCHEDULE_KINDS: tuple[str, ...]
VECTOR_LEVELS: tuple[str, ...]
Q8_BLOCK: int
# lrcore._validate's tables, imported by the extension
FORMATS: tuple[_Format, ...]
BUFFER_FORMATS: tuple[str, ...]
BUFFER_SLOTS: dict[int, tuple[str, ...]]
BFLOAT16_BITS: np.dtype[np.uint16]

def combinations() -> list[tuple[_Format, _Format, _Format]]: ...
def set_num_threads(n: int) -> None: ...
def set_active(active: bool) -> None: ...
def build_info() -> dict[str, Any]: ...
def set_vector_level(name: str | None) -> None: ...
def pool_workers() -> int: ...
def share_openmp_runtime(share: bool) -> bool: ...
def openmp_shared() -> bool: ...
def grad_sumsq(grads: list[NDArray[Any] | None]) -> tuple[float, bool]: ...
def step(
    params: _Params, grads: _Grads, state: Optimizer, *, grad_scale: float | None = ...
) -> float: ...

# extension types with C fields: no class can derive from two of them
@disjoint_base
class CompiledSchedule:
    def __init__(
        self,
        kind: str,
        *,
        initial: float = ...,
        steps: float = ...,
        warmup_steps: int = ...,
        rate: float = ...,
        end: float = ...,
        power: float = ...,
        alpha: float = ...,
        beta: float = ...,
        num_periods: float = ...,
        t_mul: float = ...,
        m_mul: float = ...,
        initial_variance: float = ...,
        variance_decay: float = ...,
        staircase: bool = ...,
        cycle: bool = ...,
        linear: bool = ...,
        seed: int = ...,
        boundaries: Sequence[float] | None = ...,
        values: Sequence[float] | None = ...,
        inner: CompiledSchedule | None = ...,
        peak: float = ...,
        timescale: float = ...,
        stable_steps: int = ...,
        decay_shape: int = ...,
        has_target: bool = ...,
        lr_low: float = ...,
        lr_high: float = ...,
        lr_min: float = ...,
        ends: tuple[float, ...] = ...,
        anneal_cos: bool = ...,
        total_size: float = ...,
        step_ratio: float = ...,
        gamma: float = ...,
        cyclic_mode: int = ...,
        pieces: list[CompiledSchedule] | None = ...,
        starts: Sequence[int] | None = ...,
    ) -> None: ...
    def value(self, step: int) -> float: ...
    def values(self, steps: NDArray[np.int64]) -> NDArray[np.float64]: ...

@disjoint_base
class StepCore:
    lr: float | CompiledSchedule | None
    lr_scale: float
    lr_floor: float
    step_count: int
    skipped_steps: int
    last_grad_norm: float | None
    @property
    def kind(self) -> int: ...
    @property
    def max_grad_norm(self) -> float: ...
    @property
    def nonfinite(self) -> int: ...
    @property
    def array_steps(self) -> NDArray[np.int64]: ...
    @property
    def signature(self) -> NDArray[np.int64] | None: ...
    @property
    def buffers(self) -> dict[str, list[NDArray[Any]]]: ...
    @property
    def layout(self) -> _Layout | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def rounding(self) -> int: ...
    def __init__(
        self,
        kind: int,
        hyper: tuple[float, ...],
        nonfinite: int = ...,
        max_grad_norm: float = ...,
        seed: int = ...,
        rounding: int = ...,
    ) -> None: ...
    def bind(
        self,
        signature: NDArray[np.int64],
        array_steps: NDArray[np.int64],
        buffers: dict[str, list[NDArray[Any]]],
        layout: _Layout,
    ) -> None: ...
    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def locked(self, fn: Callable[..., _T], *args: Any) -> _T: ...
    def unbind(self) -> None: ...
    def check(self, params: list[NDArray[Any]], grads: list[NDArray[Any] | None]) -> None: ...
    def run(
        self,
        params: list[NDArray[Any]],
        grads: list[NDArray[Any] | None],
        rate: float,
        grad_scale: float = ...,
        clip_coef: float | None = ...,
    ) -> bool: ...

# test hooks over src/compact.h's block primitives
def q8_map(unsigned: bool) -> NDArray[np.float32]: ...
def q8_quantize(
    x: NDArray[np.float32], unsigned: bool, *, blocks: bool = ...
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]: ...
def q8_dequantize(
    codes: NDArray[np.uint8],
    absmax: NDArray[np.float32],
    unsigned: bool,
    *,
    blocks: bool = ...,
) -> NDArray[np.float32]: ...
def rounding_key(seed: int, step: int, array: int, slot: int) -> int: ...
def round_bf16_stochastic(
    x: NDArray[np.float32], key: int, start: int = ...
) -> NDArray[np.uint16]: ...
