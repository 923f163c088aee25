"""LR too high on real logs of the tune part (bench/real/, provenance in bench/real/SOURCES.md)
that no rule saw, or saw only with every column logged: a first update that overshot (the
divergence rule ``overshoot``) and a loss that gave back its progress in a log without an LR
column (the oscillation rule ``relapse``). Each on variants that keep the class and on the shapes
it must leave alone. The holdout part is never read here."""

import dataclasses

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# a regression net trained at LR 2: 782 -> 3299 on its second epoch, then 9-14 for 17 epochs
CITO_LR2 = "histories/citoverse__cito__vignette-b-training-nn__lr2-plateau.csv"
# a CS336 LM at peak LR 0.1: 5.17 -> 4.09 in the warm-up, back at 4.3-5.3 until the decay
CS336_LR_1E1 = "histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv"
# healthy: a speech fine-tune whose second logged loss is 2.1x its first (0.27 -> 0.57)
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
    alerts = one_at_a_time([Record(s, x) for s, x in enumerate(losses)])[1]
    div = [a for a in alerts if a.kind == "divergence"]
    assert div[0].event == "raised" and div[0].evidence["rule"] == "overshoot" and div[0].severity == "warning"
    assert any(a.event == "escalated" and a.severity == "critical" for a in div[1:])


def test_a_jump_in_an_excerpt_or_after_the_first_updates_is_not_an_overshoot():
    # an excerpt that begins at step 5000: its first loss is not the untrained model's
    excerpt = [Record(5000 + 10 * k, x) for k, x in enumerate([0.30, 1.2, 0.31, 0.29, 0.30, 0.28])]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(excerpt)[1])]
    # from scratch, but the jump comes on the 6th record: a spike's, judged against the noise
    late = [Record(k, x) for k, x in enumerate([2.3, 2.1, 1.9, 1.8, 1.7, 7.0, 1.6, 1.5, 1.5])]
    assert "overshoot" not in [r for _, _, r in _rules(one_at_a_time(late)[1])]


def test_a_fine_tune_whose_first_logged_loss_was_a_low_draw_gets_no_lr_cut():
    assert _rules(one_at_a_time(tune_records(BANGLA_STT))[1]) == []


def _without_lr(recs):
    return [dataclasses.replace(r, lr=None) for r in recs]


@pytest.mark.parametrize("every", [1, 2])
def test_a_loss_that_gave_back_its_progress_is_an_lr_too_high_without_an_lr_column(every):
    recs = _without_lr(tune_records(CS336_LR_1E1))[::every]
    osc = raised(one_at_a_time(recs)[1], "oscillation", "warning")
    assert [a.evidence["rule"] for a in osc] == ["relapse"]
    a = osc[0]
    assert a.action.type == "scale_lr" and a.action.params["factor"] < 1
    assert a.message.startswith("LR too high: unstable") and "not lost" in a.message
    assert "no LR is logged" in a.action.reason
    assert a.evidence["gave_back"] >= 0.5 and a.evidence["level"] < a.evidence["first_loss"]


def test_the_batch_path_gives_the_relapse_without_an_lr_the_same_way():
    recs = _without_lr(tune_records(CS336_LR_1E1))
    ref = [(a.id, a.event, a.step) for a in one_at_a_time(recs)[1]]
    for size in (17, 1000):
        assert [(a.id, a.event, a.step) for a in in_batches(recs, size)[1]] == ref


def test_with_the_lr_logged_and_not_raised_a_loss_that_gave_back_its_progress_is_not_a_relapse():
    # the same losses under a constant logged LR: the LR did not rise past where the loss was
    # lowest, so the rise is not the LR's doing by this rule (a data change, a slow divergence)
    recs = [dataclasses.replace(r, lr=0.01) for r in tune_records(CS336_LR_1E1)]
    osc = raised(one_at_a_time(recs)[1], "oscillation", "warning")
    assert "relapse" not in [a.evidence["rule"] for a in osc]
