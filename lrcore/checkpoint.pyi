import os

from typing_extensions import TypeAlias

from lrcore.optimizers import Optimizer

_Path: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

FORMAT: str

def save(state: Optimizer, path: _Path) -> None: ...
def load(path: _Path) -> Optimizer: ...
