"""The escalation ladder: what the Actor does for an incident, and what next when that failed.

Each incident (the detectors' ``alert["incident"]``) gets a condition from its alert and its
advice, and climbs that condition's ladder one rung per failed attempt. The table is the whole
rule; :class:`losswatch.client.acting.Actor` reads it and nothing else decides the order.

======================  ====================  ===========================  =========
condition               rung 1                rung 2                       rung 3
======================  ====================  ===========================  =========
``nan``                 skip the batch        roll back to the checkpoint  stop
``divergence``          the detector's        roll back to the checkpoint  stop
                        advice (cut x0.1, or  and cut the LR x0.1
                        clip, or cut and
                        restart)
``lr_too_low``          raise the LR          stop raising
                        (bounded)
======================  ====================  ===========================  =========

- ``nan`` starts at rung 2 when the NaN is seen after its own step (the batch to skip is gone).
- "the checkpoint" is the latest one saved before the incident began (its first alert's step).
- A relapse counts: a new incident of the same condition within a verification window after a
  verified one continues that incident's ladder (see ``Actor``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DIVERGENCE", "LADDER", "LR_TOO_LOW", "NAN", "RUNG_ACTIONS", "condition_of"]

NAN, DIVERGENCE, LR_TOO_LOW = "nan", "divergence", "lr_too_low"

# rung names
SKIP_BATCH = "skip_batch"  # drop the gradients of the step in flight (the bad batch)
ADVICE = "advice"  # the detector's own advice, as given
ROLLBACK = "rollback"  # restore the latest checkpoint before the incident
ROLLBACK_AND_CUT = "rollback_and_cut"  # that, and the LR x CUT_FACTOR
RAISE = "raise"  # the detector's raise, bounded by the Actor's max_raise
STOP_RAISING = "stop_raising"  # no further raise on this run
STOP = "stop"  # end training

LADDER: dict[str, tuple[str, ...]] = {
    NAN: (SKIP_BATCH, ROLLBACK, STOP),
    DIVERGENCE: (ADVICE, ROLLBACK_AND_CUT, STOP),
    LR_TOO_LOW: (RAISE, STOP_RAISING),
}

CUT_FACTOR = 0.1

# the actions each rung applies, in order (ADVICE and RAISE take the advice's own action)
RUNG_ACTIONS: dict[str, tuple[str, ...]] = {
    SKIP_BATCH: ("skip_batch",),
    ADVICE: ("advice",),
    ROLLBACK: ("rollback",),
    ROLLBACK_AND_CUT: ("rollback", "scale_lr"),
    RAISE: ("advice",),
    STOP_RAISING: (),
    STOP: ("stop",),
}


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def condition_of(alert: Any, action: dict[str, Any]) -> str | None:
    """The ladder an alert's advice belongs to (None: a one-off action, such as a stop)."""
    kind = action.get("type")
    if kind == "scale_lr":
        f = action.get("factor")
        return LR_TOO_LOW if isinstance(f, (int, float)) and f > 1 else DIVERGENCE
    if kind == "clip_grad_norm":
        return DIVERGENCE
    if kind in ("rollback", "skip_batch"):
        return NAN if _get(alert, "kind") == "nan" else DIVERGENCE
    return None  # a stop is the end of every ladder: nothing to climb from it


def first_rung(condition: str, alert: Any, step: int) -> int:
    """Where a new incident starts on its ladder: a NaN seen on a later step than its own cannot
    skip its batch any more, so it starts at the rollback."""
    if condition == NAN and _get(alert, "step") != step:
        return 1
    return 0


def rung_name(condition: str, rung: int) -> str | None:
    """The rung's name, None past the top of the ladder."""
    rungs = LADDER[condition]
    return rungs[rung] if 0 <= rung < len(rungs) else None
