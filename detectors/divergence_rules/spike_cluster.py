"""Spikes keep coming: the ``cluster``-th counted spike within ``cluster_window`` records.

One spike is a bad batch (no LR action: the spike detector's note); several in a short window
are instability that ends in divergence. Counted spikes only (:mod:`.spikes`: from a normal
record, reaching ``level_ratio`` x best on the raw progress scale); the count restarts when an
episode resolves (without that, it re-fired every few records on a chaotic run at 100x its LR).

Parameters
----------
cluster : int, default 3
    The counted spike that fires (two earlier ones are remembered).
    Set by: the GPT-2 speedrun logs' data spikes come in pairs at most (steps 918 and 946).
cluster_window : int, default 50
    Records within which the spikes must fall.
    Set by: the benchmark's cyclic and one-cycle CNNs at 10x their LR spike ever more often
    before dying.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [1.0] * 10 + [2.0] + [1.0] * 5 + [2.0] + [1.0] * 5 + [2.0]
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.evidence["rule"]) for a in alerts], alerts[0].message.split(" and ")[-1]
([(22, 'spike_cluster')], 'spiked 3 times in 12 records: training is unstable')

References
----------
llm-foundry's KillLossSpike (repeated spikes -> lower the LR); OLMo-core's SpikeScore (the
share of spiky steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector


def check(d: DivergenceDetector, rec: int) -> tuple[str, str] | None:
    """On a counted spike at record ordinal ``rec`` (before it is remembered)."""
    if rec - d.spike_recs[0] <= d.cluster_window:
        return (f"spiked {len(d.spike_recs) + 1} times in {rec - d.spike_recs[0]} "
                "records: training is unstable", "spike_cluster")
    return None
