"""Run-away streak: the raw loss rises several records in a row, from a normal value, far out of
its noise. Decides from a handful of points.

Condition: ``streak`` consecutive rises of the raw loss (or two, when a cause corroborates them
and the latest is >= ``explode_ratio`` x best), the latest >= ``streak_ratio`` x best (raw
progress scale) and >= (1 + ``streak_rise``) x the loss before the streak. The streak starts
from a normal value: the loss before it <= ``base_ratio`` x best, or within ``prev_z`` noise
units of the level when no counted spike happened in the last ``spike_memory`` records (not
from inside an excursion). Noise guards: the loss before the latest is ``prev_z`` noise units
above the level (two elevated points: noise then one data spike is no streak) and the latest
``streak_z`` units. With a cause (:mod:`.causes`): the grad-norm building up asks 1 and
``prev_z`` units, the LR ramping ``prev_z`` units for the latest. Never under a calm
grad-norm (:mod:`.causes`): a rise the gradient does not share is the data, not a run-away.

Parameters
----------
streak : int, default 3
    Rises in a row that make a run-away without a cause.
    Set by: a practitioner's 2.5, 2.4, 2.6, 3.1, 4.2, NaN: caught at 4.2, before its NaN.
streak_ratio : float, default 1.3
    How far above its best (raw progress scale) the latest loss must be.
streak_rise : float, default 0.25
    How much the streak must have added to the loss it started from.
base_ratio : float, default 1.25
    A streak starting at or below this multiple of the best starts from a normal value.
    Set by: with it (and the sustained rule's ``sustain``, ``keep``), the benchmark's
    divergence false alarms went from 50 episodes to 12.
prev_z : float, default 3.0
    Noise units for "normal" (the start) and for the loss before the latest.
    Set by: the 1.5B GPT-2 speedrun logs have ~100 one-step data spikes each; one spike after
    a noisy record must not be a streak.
streak_z : float, default 10.0
    Noise units the latest loss must be above the level without a cause.
    Set by: the 1.5B speedrun's 2-step excursion at step 5818 is 7 units out; BLOOM-104B's
    divergence (exp2) is 28, the practitioner's example 34.
explode_ratio : float, default 3.0
    With a cause, two rises suffice once the loss is this multiple of its best.
    Set by: an RNN at 10x its LR shows its grad-norm building up two steps before the loss
    runs away; SGD at 100x is lost by its third step; least-squares warm-up x100 runs swing
    0.7 -> 2.2 -> 4.5 while the LR climbs (10 noise units came 5-17 steps late).

``spike_memory`` (:mod:`.spikes`) is shared.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> alerts = drive(DivergenceDetector(), map(Record, range(5), [2.5, 2.4, 2.6, 3.1, 4.2]))
>>> [(a.step, a.evidence["rule"]) for a in alerts]
[(4, 'streak')]
>>> print(alerts[0].message)
loss diverging: 4.2 at step 4 is 1.69x its best (2.49 at step 1) and rose 3 records in a row, 2.4 -> 4.2

References
----------
llm-foundry's KillLossSpike (consecutive high losses -> lower the LR); BLOOM tr8-104B
chronicles (the divergence at the end of warm-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import fmt
from ..progress import RAW_SHARE, _pratio, _ratio, pratio_arr
from . import causes

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, best: float, l0: float, up_n: int,
          gn_up: bool, ramping: bool, after_spike: bool) -> tuple[str, str] | None:
    if causes.grad_norm_calm(d, f, i):
        return None
    caused = gn_up or ramping
    pr = _pratio(x, best, l0, RAW_SHARE)
    if not (up_n >= d.streak or (up_n >= 2 and caused and pr >= d.explode_ratio)):
        return None
    base = f.up_base[i]
    if pr >= d.streak_ratio and _ratio(x, base) >= 1.0 + d.streak_rise and \
            (_pratio(base, best, l0, RAW_SHARE) <= d.base_ratio or
             (base - f.b_slow[i] <= d.prev_z * f.b_sd[i] and not after_spike)) and \
            f.b_lprev[i] - f.b_slow[i] >= (1.0 if gn_up else d.prev_z) * f.b_sd[i] and \
            x - f.b_slow[i] >= (d.prev_z if caused else d.streak_z) * f.b_sd[i]:
        why = " with the grad-norm up" if gn_up else (" while the LR warms up" if ramping else "")
        return (f"rose {up_n} records in a row{why}, {fmt(base)} -> {fmt(x)}", "streak")
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    # two rises can be enough (with a cause), so the screen asks for two
    return (f.a("up_n") >= min(d.streak, 2)) & \
        ~(pratio_arr(f.a("loss"), f.a("best"), f.a("l0"), RAW_SHARE) < d.streak_ratio)
