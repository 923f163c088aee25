"""LR too high on a real log of the tune part (bench/real/, provenance in bench/real/SOURCES.md)
that no rule saw: the first updates overshot (the divergence rule ``overshoot``), on variants
that keep the class and on the shapes it must leave alone. The holdout part is never read here."""

import dataclasses

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# a regression net trained at LR 2: 782 -> 3299 on its second epoch, then 9-14 for 17 epochs
CITO_LR2 = "histories/citoverse__cito__vignette-b-training-nn__lr2-plateau.csv"
# healthy: a speech fine-tune whose second logged loss is 2.1x its first (0.27 at step 25 ->
# 0.57), 3.6x by step 150 (0.98) as its warm-up ends
BANGLA_STT = "histories/jubaerkhan49__bangla_stt__model-trainer-state.csv"


def _lr_cuts(alerts):
    return [a for a in raised(alerts, None, "warning")
            if a.action is not None and a.action.type == "scale_lr" and a.action.params["factor"] < 1]


def _rules(alerts):
    return [(a.kind, a.step, a.evidence.get("rule")) for a in _lr_cuts(alerts)]


@pytest.mark.parametrize("scale,shift,step_x", [(1, 0, 1), (0.1, 0, 1), (10, 0, 1), (1, 5, 1), (1, 0, 10)])
def test_a_loss_that_quadruples_on_the_second_epoch_is_an_lr_too_high_not_a_lost_run(scale, shift, step_x):
    recs = [dataclasses.replace(r, step=r.step * step_x, loss=r.loss * scale + shift)
            for r in tune_records(CITO_LR2)]
    alerts = one_at_a_time(recs)[1]
    cuts = _lr_cuts(alerts)
    assert [(a.kind, a.step, a.evidence["rule"]) for a in cuts] == [("divergence", 2 * step_x, "overshoot")]
    a = cuts[0]
    assert a.severity == "warning"  # the loss comes back below its first: unstable, not lost
    assert a.message.startswith("LR too high, the loss is unstable")
    assert "overshot" in a.message
    assert not [x for x in alerts if x.kind == "divergence" and x.severity == "critical"]


def test_the_batch_path_gives_the_overshoot_the_same_way():
    recs = tune_records(CITO_LR2)
    ref = [(a.id, a.event, a.step, a.severity) for a in one_at_a_time(recs)[1]]
    for size in (3, 64):
        assert [(a.id, a.event, a.step, a.severity) for a in in_batches(recs, size)[1]] == ref


def test_an_overshoot_that_stays_above_the_first_loss_turns_critical():
    losses = [2.4, 9.0, 12.0, 15.0, 18.0, 20.0, 22.0, 25.0]
    alerts = one_at_a_time([Record(s, x) for s, x in enumerate(losses, start=1)])[1]
    div = [a for a in alerts if a.kind == "divergence"]
    assert div[0].event == "raised" and div[0].evidence["rule"] == "overshoot" and div[0].severity == "warning"
    assert any(a.event == "escalated" and a.severity == "critical" for a in div[1:])


def test_a_jump_in_an_excerpt_or_after_the_first_updates_is_not_an_overshoot():
    # an excerpt that begins at step 5000: its first loss is not the untrained model's
    excerpt = [Record(5000 + 10 * k, x) for k, x in enumerate([0.30, 1.2, 0.31, 0.29, 0.30, 0.28])]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(excerpt)[1])]
    # from scratch, but the jump comes on the 6th record: a spike's, judged against the noise
    late = [Record(k, x) for k, x in enumerate([2.3, 2.1, 1.9, 1.8, 1.7, 7.0, 1.6, 1.5, 1.5], start=1)]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(late)[1])]
    # a log that begins at step 0: one record gives no scale for "the first updates"
    at_zero = [Record(k, x) for k, x in enumerate([2.3, 7.5, 2.0, 1.9, 1.8, 1.7])]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(at_zero)[1])]


@pytest.mark.parametrize("every", [1, 2, 5])
def test_a_fine_tune_whose_loss_rises_as_its_warm_up_ends_gets_no_overshoot_at_any_interval(every):
    # thinned to every 5th row, 0.98 (step 150) is the second record: still six times the first
    # loss's step, past the first updates
    recs = tune_records(BANGLA_STT)[::every]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(recs)[1])]
