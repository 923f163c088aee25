"""Spikes keep coming: the ``cluster``-th counted spike within ``cluster_window`` records.

One spike is a bad batch (no LR action: the spike detector's note); several in a short window
are instability that ends in divergence, once they drag the loss *level* up with them: the
level (``features.slow``) must be >= ``level_ratio`` x its best (progress scale) on the spike's
record, the bar of :mod:`.sustained`. Spikes after which the level came back each time are
the run's own spike rate, not a lost run: the spike detector notes each one, exports the
rate and warns when it rises well above the run's own baseline; a spike that does not come
back raises the level, and the rules here see that. Reinforcement-learning value losses spike this way all run long (a
Stable-Baselines3 PPO log of the corpus's tune part: its loss falls 4,601 -> 133 while single
rows jump to ~10,700 at steps 480, 500 and 530, each back on its descent on the next row; the
cluster of three raised "cut the LR 10x" at 530).
Counted spikes only (:mod:`.spikes`: from a normal record, reaching ``level_ratio`` x best on
the raw progress scale); the count restarts when an episode resolves (without that, it
re-fired every few records on a chaotic run at 100x its LR).

Parameters
----------
cluster : int, default 3
    The counted spike that fires (two earlier ones are remembered).
    Set by: the GPT-2 speedrun logs' data spikes come in pairs at most (steps 918 and 946).
cluster_window : int, default 50
    Records within which the spikes must fall.
    Set by: the benchmark's cyclic and one-cycle CNNs at 10x their LR spike ever more often
    before dying.

``level_ratio`` (:mod:`.sustained`) is shared: the level bar. Set by: with it, the tune part's
healthy-log variants with an alarm went 208 -> 198 (that PPO log's and a seq2seq fine-tune's),
no problem variant's verdict and no benchmark figure of seeds 0-1 or 2-3 changed (the
benchmark's runs lost at a high LR raise their level before a third spike, or another rule
catches them first).

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record

Spikes that each come back to the run's level are its spike rate, not a divergence:

>>> losses = [1.0] * 10 + [2.0] + [1.0] * 5 + [2.0] + [1.0] * 5 + [2.0]
>>> drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
[]

Spikes on top of a level that has risen 1.6x above its best:

>>> losses = [1.0] * 10 + [1.6] * 5 + [3.2] + [1.6] * 4 + [3.2] + [1.6] * 4 + [3.2]
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.evidence["rule"]) for a in alerts], alerts[0].message.split(" and ")[-1]
([(25, 'spike_cluster')], 'spiked 3 times in 15 records: training is unstable')

References
----------
llm-foundry's KillLossSpike (repeated spikes -> lower the LR); OLMo-core's SpikeScore (the
share of spiky steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector


def check(d: DivergenceDetector, rec: int, high: bool) -> tuple[str, str] | None:
    """On a counted spike at record ordinal ``rec`` (before it is remembered); ``high``: the
    loss level is >= ``level_ratio`` x its best on this record."""
    if high and rec - d.spike_recs[0] <= d.cluster_window:
        return (f"spiked {len(d.spike_recs) + 1} times in {rec - d.spike_recs[0]} "
                "records: training is unstable", "spike_cluster")
    return None
