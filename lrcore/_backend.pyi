from typing import Literal

from typing_extensions import TypeAlias

_Name: TypeAlias = Literal["auto", "cython", "numpy"]

NAMES: tuple[_Name, ...]
MAX_THREADS: int
active: Literal["cython", "numpy"]    # set at import (LRCORE_BACKEND) and by set_backend

def set_backend(name: _Name) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
