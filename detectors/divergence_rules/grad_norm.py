"""Blow-up with the grad-norm: the loss jumps while the grad-norm is huge and doubling.

Condition: the loss is >= ``gn_ratio`` x its best (plain ratio) while the grad-norm is
>= ``gn_abs`` and at least doubled since the previous grad-norm record. Grad-norms of 1e4-1e6
are what BLOOM-104B logged while diverging (healthy runs log 0.1-10). The doubling keeps a run
that merely lives at a huge grad-norm from firing on a loss spike: skipped fp16 steps repeat
the same value (BLOOM-104B's embedding-norm excerpt logs 464,441.887 four times in a row while
its loss spikes and recovers).

Parameters
----------
gn_ratio : float, default 1.5
    How far above its best the loss must be.
gn_abs : float, default 10000.0
    The grad-norm no healthy run reaches.
    Set by: BLOOM tr8-104B's diverging runs (1e4-1e6) against healthy logs (0.1-10).

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses, gns = [2.0] * 6 + [3.5], [1e3] * 6 + [1e5]
>>> alerts = drive(DivergenceDetector(), map(Record, range(7), losses, gns))
>>> [(a.step, a.evidence["rule"]) for a in alerts], alerts[0].message.split(" and ")[-1]
([(6, 'grad_norm')], 'jumped with the grad-norm at 1.00e+05 (was 1e+03)')

References
----------
BLOOM tr8-104B chronicles (grad-norms of 1e5 while diverging).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import fmt
from ..progress import _ratio, ratio_arr

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, best: float) -> tuple[str, str] | None:
    g = f.gn[i]
    if f.gok[i] and g >= d.gn_abs and _ratio(x, best) >= d.gn_ratio:
        gprev = f.b_glast[i]
        if f.ng[i] >= 2 and g >= 2.0 * gprev:
            return f"jumped with the grad-norm at {fmt(g)} (was {fmt(gprev)})", "grad_norm"
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    return f.a("gok") & ~(f.a("gn") < d.gn_abs) & ~(ratio_arr(f.a("loss"), f.a("best")) < d.gn_ratio)
