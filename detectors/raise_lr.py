"""What the detectors that advise raising the LR share: their episode ends once the LR was raised."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action

#: An episode that advised a larger LR resolves once the reported LR is at least this x the LR
#: it was raised at (the advice was followed; whether it was enough, the next check says).
RAISED = 2.0

#: The LR peak counts as risen (a warm-up still under way) past this x the peak seen before.
WARMING = 1.001


def schedule_explains(lr: float | None, peak: float, peak_then: float, decayed: float) -> bool:
    """Does the LR schedule explain a slow steady fall? The peak LR rose since ``peak_then``
    (a warm-up: the pace is the ramp's), or the LR is below ``decayed`` x its peak (a decayed
    schedule's slow tail is by design). Without a logged LR (``None``) nothing is explained."""
    if lr is None:
        return False
    if peak == peak and peak_then == peak_then and peak > peak_then * WARMING:
        return True
    return peak > 0.0 and lr < decayed * peak


class RaiseLRDetector(Detector):
    """Base of slow_progress and sgd_efficiency: both check at sparse checkpoints (``screen``),
    keep what they saw there in ``cps`` (checkpoint key -> values, their own layout) and advise
    ``scale_lr`` > 1. Subclasses set ``lr_at_alert`` when they open an episode (0.0 when the LR
    was not logged); ``step`` calls :meth:`resolve_if_raised` first, which keeps the step at
    which the advice was seen followed (``raised_step``, -1 before any). Without a logged LR the
    advice is seen followed in the loss instead: an episode opened with the fall per step at
    the alert (``pace_at_alert``) resolves once the fall is ``RAISED`` x as fast
    (:meth:`resolve_if_faster`). Both have a ``z`` (noise units) parameter."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.lr_at_alert = 0.0
        self.pace_at_alert = 0.0
        self.raised_step = -1
        self.cps: dict[str, list[float]] = {}

    def get_state(self) -> dict[str, Any]:
        return {"cps": self.cps, "lr_at_alert": self.lr_at_alert, "raised_step": self.raised_step,
                "pace_at_alert": self.pace_at_alert}

    def set_state(self, d: dict[str, Any]) -> None:
        self.cps, self.lr_at_alert = d["cps"], d["lr_at_alert"]
        self.raised_step = d.get("raised_step", -1)  # states saved before it was kept: none known
        self.pace_at_alert = d.get("pace_at_alert", 0.0)  # likewise: the loss's pace closes nothing

    def active_screen(self, f):
        rows = self.screen(f)
        if self.lr_at_alert > 0.0:
            with np.errstate(invalid="ignore"):
                rows = rows | (f.a("lrok") & ~(f.a("lr") < RAISED * self.lr_at_alert))
        return rows

    def resolve_if_raised(self, f, i: int) -> None:
        if self.alert is not None and self.lr_at_alert > 0.0 and f.lrok[i] and \
                f.lr[i] >= RAISED * self.lr_at_alert:
            self.raised_step = int(f.step[i])
            self.close_episode(f.step[i], f"LR raised to {fmt(f.lr[i])}")

    def resolve_if_faster(self, step: int, pace: float) -> None:
        """Close an episode opened without a logged LR once the loss falls ``RAISED`` x as fast
        per step (``pace``) as when it opened: the LR was raised, and the loss says so."""
        if self.alert is not None and self.pace_at_alert > 0.0 and pace >= RAISED * self.pace_at_alert:
            self.raised_step = int(step)
            self.close_episode(step, f"the loss falls {fmt(pace / self.pace_at_alert)}x as fast per step "
                               "as when the LR was found too low: it was raised")

    def advise_raise(self, step: int, message: str, evidence: dict[str, Any], lr: float | None,
                     why: str, pace: float = 0.0) -> None:
        """Open a warning advising ``scale_lr`` x``factor``, keeping the LR it was raised at
        (``lr_at_alert``; 0.0 and no ``lr`` evidence when the LR is not logged) and, without a
        logged LR, the loss's fall per step then (``pace``, for :meth:`resolve_if_faster`; 0.0:
        none). ``why`` is the advice's first sentence; the shared second one names the raise."""
        self.lr_at_alert = lr if lr is not None else 0.0
        self.pace_at_alert = pace if lr is None else 0.0
        if lr is not None:
            evidence["lr"] = lr
        factor = self.factor
        self.open_episode(step, "warning", message, evidence,
                          Action("scale_lr", {"factor": factor},
                                 f"{why} Raise the LR x{fmt(factor)} (or run an LR range test)."))

    def recovering(self, level_then: float, best_then: float, sd_now: float) -> bool:
        """The window being judged started above the best level reached before it (by ``z``
        noise units): the progress since is a recovery (from a spike, a relapse, a blow-up
        during warm-up), not the LR's pace. Today's noise scale: the one back then may be the
        excursion's own."""
        return level_then > best_then + self.z * sd_now
