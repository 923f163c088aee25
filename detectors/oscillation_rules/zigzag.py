"""Zig-zag: the loss changes direction nearly every record, each swing is large and the trend
has stopped improving, while the LR is not cyclic: the iterate bounces across a valley.

Condition: the zig-zag rate (``features.alt``, an EMA of "the loss changed direction") is
``>= zigzag``, the mean swing (``features.amp``) is ``>= amplitude`` x the loss level, the trend
has not improved by 1 % for ``stall`` steps, and the LR has reversed direction fewer than two
times (under a cyclic LR the loss follows the LR by design). The episode closes when the zig-zag
rate falls below 0.9 x ``zigzag``.

Why: independent minibatch noise flips direction on ~2/3 of records; a too-large step on a sharp
valley flips on ~every record (period-2 oscillation).

Parameters
----------
zigzag : float, default 0.95
    The zig-zag rate that counts as period-2 oscillation.
    Set by: the EMA reached 0.85 by chance on healthy linear-regression runs of the benchmark and
    0.90 on its tiny language models; no benchmark run shows true period-2 oscillation, so the
    bar is 0.95, which a clean zig-zag (-> 1.0) still passes.
amplitude : float, default 0.05
    The smallest mean swing, relative to the level: keeps a quiet converged run (tiny swings)
    silent.
stall : int, default 50
    Steps without a 1 % trend gain.

``min_records`` (30) is shared with :mod:`.relapse`: the zig-zag statistics have a ~20-record
memory.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.oscillation import OscillationDetector
>>> from losswatch.detectors.types import Record
>>> losses = [2.0 + (0.5 if s % 2 else 0.0) for s in range(200)]
>>> alerts = drive(OscillationDetector(), [Record(s, x, lr=0.1) for s, x in enumerate(losses)])
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(60, 'zigzag', {'factor': 0.3})]

References
----------
AutoTrainer (oscillating loss -> LR x0.1); Cohen et al., "Gradient descent on neural networks
typically occurs at the edge of stability" (2021).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import fmt

if TYPE_CHECKING:
    from ..features import Features
    from ..oscillation import OscillationDetector


def check(d: OscillationDetector, f: Features, i: int) -> tuple[str, dict[str, Any], str] | None:
    alt = f.alt[i]
    if alt < d.zigzag:
        return None
    level = f.slow[i]
    rel = f.amp[i] / abs(level) if level != 0.0 else 0.0
    if rel < d.amplitude or f.step[i] - f.pstep[i] < d.stall or f.rev[i] >= 2:
        return None
    ev: dict[str, Any] = {"zigzag": alt, "amplitude": rel, "level": level}
    return (f"loss oscillating at step {f.step[i]}: it changes direction on {fmt(100 * alt)}% of "
            f"steps with swings of {fmt(100 * rel)}% and no progress"), ev, \
        "The loss bounces up and down every step instead of descending: the LR is too high for this valley."


def resolved(d: OscillationDetector, f: Features, i: int) -> str | None:
    return "the loss no longer zig-zags" if f.alt[i] < d.zigzag * 0.9 else None
