"""How much worse a loss is than a reference level: the plain ratio, and the ratio on the
*progress scale* (against the progress made since the first loss when that is larger than the
level), and how far above its best a loss is in words. Shared by the divergence rules and the
spike rate, so "x times worse" means one thing."""

from __future__ import annotations

import numpy as np

from .base import fmt

#: Share of the progress made (first loss - best) that counts as the scale of "x times worse"
#: when it is larger than the best itself: half of it for the judgement of the loss *level*
#: (sustained rule, resolution), all of it for the quick rules on single raw values (streaks,
#: explosions, counted spikes), which need stronger evidence. On the benchmark a single share of
#: 0.5 left 6 false alarms (memorising models whose raw loss jumps from ~0.01 to ~0.5 for a few
#: batches), 1.0 everywhere missed a loss that tripled from its converged value and stayed there.
LEVEL_SHARE = 0.5
RAW_SHARE = 1.0


def _ratio(x: float, ref: float) -> float:
    """x relative to a reference level (works for references <= 0 too)."""
    den = abs(ref)
    if den < 1e-12:
        den = 1e-12
    return 1.0 + (x - ref) / den


def far_words(ratio: float, best: float) -> str:
    """How far a loss is above its best, in words, from :func:`_ratio` of the two: "3.2x its
    best" where the best is positive; where it is zero or negative (a log-likelihood, a critic's
    loss: no floor at zero) a multiple means nothing, and the difference is said instead
    ("0.131 above its best"). Every message of one alert says it this way."""
    if best > 0.0:
        return f"{fmt(ratio)}x its best"
    return f"{fmt((ratio - 1.0) * max(abs(best), 1e-12))} above its best"


def above_best(x: float, best: float) -> str:
    """:func:`far_words` for a loss ``x`` and its ``best``."""
    return far_words(_ratio(x, best), best)


def _pratio(x: float, ref: float, l0: float, share: float = LEVEL_SHARE) -> float:
    """Like :func:`_ratio`, but against half the progress made when that is larger than the
    level: for a loss that went from 2.4 to 0.01, 0.02 is not "2x worse" (noise), 1.2 is "the
    whole way back up" (the benchmark's lost-run rule uses the same scale). For a loss that
    started near its best (BLOOM excerpts) it is the plain ratio."""
    den = abs(ref)
    p = share * (l0 - ref)
    if p > den:
        den = p
    if den < 1e-12:
        den = 1e-12
    return 1.0 + (x - ref) / den


def ratio_arr(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """:func:`_ratio` on arrays, with the same operations in the same order (bit-identical)."""
    return 1.0 + (x - ref) / np.maximum(np.abs(ref), 1e-12)


def pratio_arr(x: np.ndarray, ref: np.ndarray, l0: np.ndarray,
               share: float = LEVEL_SHARE) -> np.ndarray:
    """:func:`_pratio` on arrays (bit-identical)."""
    den = np.abs(ref)
    p = share * (l0 - ref)
    den = np.where(p > den, p, den)
    return 1.0 + (x - ref) / np.maximum(den, 1e-12)


def given_back(x: float, best: float, l0: float) -> float:
    """The share of the progress made from the first loss ``l0`` down to ``best`` that a loss at
    ``x`` has given back: 0 at the best, 1 back at the first loss (0 when no progress was made).
    A too-small LR moves the loss down slowly but never back up; a share well above the noise is
    the LR (or the data) pushing it up."""
    made = l0 - best
    return (x - best) / made if made > 0.0 else 0.0


def climbed_back(x: float, best: float, l0: float, sd: float, share: float, z: float) -> bool:
    """Has a loss at ``x`` climbed back above its ``best`` by ``share`` of the progress made down
    to it (:func:`given_back`) *and* by ``z`` noise units (``sd``)? Both: ``best`` is a minimum,
    and on a run that barely moved it is only a lucky low record (the lowest of N noisy records
    lies ~2-3.6 noise units below their mean for N = 10^3-10^5), so half of that "progress"
    comes back by chance alone."""
    return given_back(x, best, l0) >= share and x - best >= z * sd


#: A log begins where training began when its first loss is logged at most this many mean logging
#: gaps after step 0 (:func:`logged_from_start`; a detector may take its own value).
FROM_START_GAPS = 5.0


def logged_from_start(first_step: int, step: int, records: int, gaps: float = FROM_START_GAPS) -> bool:
    """Does the log begin where training began, so that its first loss is the run's start?

    True when the first logged step is at most ``gaps`` times the log's mean gap between loss
    records (``(step - first_step) / (records - 1)``, with ``records`` losses logged up to
    ``step``): a run logged from scratch prints its first loss at step 0, 1 or one logging
    interval. A log that begins later (an excerpt pasted from the middle of a run, a resumed
    run, the tail of a finished one) never saw the progress made before it: its first loss is
    not where training started, and "barely below the first loss" or "progress before it"
    says nothing about the LR."""
    if records < 2 or step <= first_step:
        return first_step <= 0
    return first_step <= gaps * (step - first_step) / (records - 1)
