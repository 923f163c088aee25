# The compiled twin of features._loss_core and features._gn_core (_recursions.c).
from typing import Any

def loss_fold(
    params: tuple[float, ...], state: tuple[Any, ...], xs: Any, steps: Any, out_f: Any, out_i: Any
) -> tuple[Any, ...]: ...
def gn_fold(params: tuple[float, ...], state: tuple[Any, ...], gs: Any, out: Any) -> tuple[int, float, float]: ...
