"""The LR explains a spike: a counted loss spike right after the LR jumped up.

Condition: a counted spike (:mod:`.spikes`) within ``after_jump`` records of a record whose LR
was >= ``lr_jump`` x the LR logged before it. The new LR, not the data, made the loss jump:
one spike alone is a bad batch (no LR action), one that follows an LR jump is the first sign of
a run the new LR will lose.

State (on the detector): ``lr_jump_rec``, the record ordinal of the last LR jump (kept on
every row the rules run on, whichever rule fires).

Parameters
----------
lr_jump : float, default 3.0
    The one-record LR rise that counts as a jump.
after_jump : int, default 5
    Records after the jump during which a spike is the LR's doing.
    Set by: the benchmark's lr_jump runs: the spike is the first sign, the run is lost a step
    later.

Examples
--------
The LR goes 20x up at step 10; the loss doubles on the next record:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses, lrs = [1.0] * 11 + [2.0], [0.01] * 10 + [0.2] * 2
>>> alerts = drive(DivergenceDetector(), map(Record, range(12), losses, [None] * 12, lrs))
>>> [(a.step, a.evidence["rule"]) for a in alerts], alerts[0].message.split(" and ")[-1]
([(11, 'lr_jump')], 'spiked right after the LR jumped (record 1 after)')

References
----------
The benchmark's ``lr_jump`` schedule bug (bench/gen/policies.py): a resumed job whose LR is 20x
the declared one from half-way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def remember(d: DivergenceDetector, rec: int) -> None:
    """Keep record ordinal ``rec``, whose LR jumped (the detector's ``step`` tests the jump on
    every row, as part of its first screen: the vector form is :func:`screen`)."""
    d.lr_jump_rec = rec


def check(d: DivergenceDetector, rec: int) -> tuple[str, str] | None:
    """On a counted spike at record ordinal ``rec``."""
    if rec - d.lr_jump_rec <= d.after_jump:
        return f"spiked right after the LR jumped (record {rec - d.lr_jump_rec} after)", "lr_jump"
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """The rows where the LR jumped (the rule fires on counted spikes: :func:`.spikes.screen`)."""
    prev_lr = f.a("b_lrlast")
    return f.a("lrok") & (prev_lr > 0.0) & ~(f.a("lr") < d.lr_jump * prev_lr)
