"""A lost run: after blowing up, the loss is stuck at (or above) where training started.

The rule is part of :class:`~losswatch.detectors.divergence.DivergenceDetector` (its ``lost``
rule, :mod:`~losswatch.detectors.divergence_rules.lost`: a run that diverged and then got stuck
is one episode); the plateau detector uses the same test to leave such runs alone (a stuck loss
after a blow-up is not "LR too small")."""

from __future__ import annotations


def lost_after_blowup(trend: float, l0: float, worst: float, sd: float, blowup: float) -> bool:
    """Is a stalled loss at ``trend`` the remains of a blow-up rather than a slow start?

    True when the trend sits above the first loss by more than its noise (3 MAD and 2%), or
    the loss once shot up to ``blowup`` x the first loss. A too-small LR still moves the loss
    down from where it started; it never ends above it, nor passes through 2x on the way.
    """
    if l0 != l0 or trend != trend:
        return False
    if trend > l0 + 0.02 * abs(l0) and trend - l0 > 3.0 * sd:
        return True
    return blew_up(worst, l0, blowup)


def stuck_at_start(trend: float, l0: float, stuck: float) -> bool:
    """Is the loss trend still where training started (>= ``stuck`` x a positive first loss;
    for a first loss <= 0, where a ratio means nothing, at or above it)?"""
    return trend >= stuck * l0 if l0 > 0 else trend >= l0


def blew_up(worst: float, l0: float, factor: float) -> bool:
    """Has the loss level (its running maximum ``worst``) been ``factor`` x the first loss?"""
    return l0 != 0.0 and worst >= factor * abs(l0)
