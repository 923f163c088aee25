"""Evaluations at chance: the validation loss sits at ln(k) evaluation after evaluation, the
training loss there too, without new lows: the network predicts a uniform guess.

Condition, on an evaluation: ``chance_records`` evaluations in a row within ``val_chance_band``
of the same chance level ln(k) (:data:`~losswatch.detectors.dead_rules.at_chance.CHANCE_CLASSES`),
the training loss logged with each (or the last before it, when logged at all) within that band
of the same level, and no new low of the validation loss (beyond its fourth digit) in the last
half of them. An evaluation averages the whole validation set, so a network with a
near-constant output sits at ln(k) to about 1% on every one (a binary video classifier:
0.688-0.701, its validation accuracy exactly 0.5), while one that learns leaves the band
downwards.

The episode watches the validation loss: it closes once evaluations leave the band.

Parameters
----------
val_chance_band : float, default 0.015
    1.5% of ln(k) for evaluations. Set by: on the benchmark (seeds 0-7, 1,110 runs,
    evaluated every 25 steps) no healthy run has more than 3 evaluations in a row within
    1.5% of ln(k) with its training loss there too, and no healthy or LR-too-low run
    fires the rule; the 25 runs that do are LR x10/x100 runs stuck at chance (6-25
    evaluations). The real corpus's dead logs sit within 0.2-1.2%; 2% adds no healthy run
    either.

``chance_records`` (the run's length) is :mod:`.at_chance`'s.

Examples
--------
A training loss 1% above ln 2, evaluations between 0.6955 and 0.6965:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> recs = [Record(s, 0.70 + 0.001 * (s % 3), val_loss=0.6955 + 0.0005 * (s % 3)) for s in range(10)]
>>> [(a.step, a.evidence["watch"], a.action.type) for a in drive(DeadDetector(), recs)]
[(5, 'val_loss', 'stop')]

References
----------
bench/real/issues/mchengny__rwf2000-video-database-for-violence-detection__19.csv (provenance
in bench/real/SOURCES.md): a binary video classifier whose evaluations sit at ln 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import fmt
from . import Why
from .at_chance import CHANCE_K, chance_level

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: extend or break the run at a chance level; the verdict."""
    v = f.val[i]
    lv = chance_level(v, d.val_chance_band)
    train = f.lprev[i]
    if lv is not None and train == train and chance_level(train, d.val_chance_band) != lv:
        lv = None
    if lv is None:
        d.vc_n = 0
        return None
    if d.vc_n == 0 or lv != d.vc_level:
        d.vc_level, d.vc_n, d.vc_low, d.vc_improved = lv, 1, v, 1
    else:
        d.vc_n += 1
        if v < d.vc_low - 5e-5 * lv:  # a new low beyond the 4th digit
            d.vc_improved = d.vc_n
        d.vc_low = min(d.vc_low, v)
    if d.vc_n >= d.chance_records and d.vc_n - d.vc_improved >= d.chance_records // 2:
        k = CHANCE_K[lv]
        return Why(f"the validation loss has sat within {fmt(100 * d.val_chance_band)}% of ln({k}) = "
                   f"{lv:.4f} for {d.vc_n} evaluations (now {fmt(v)}, the training loss {fmt(train)}): "
                   f"the network predicts a uniform guess over {k} classes", lv, "val_loss",
                   d.val_chance_band * lv)
    return None


def forget(d: DeadDetector) -> None:
    d.vc_n = 0
