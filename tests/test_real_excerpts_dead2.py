"""A network flat from its first record, on real excerpts from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): a warning to check the data and the init,
with no action (a few flat records are also what the end of a converged run prints). The holdout
part is never read here."""

from pathlib import Path

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.base import drive
from losswatch.detectors.dead import DeadDetector
from losswatch.detectors.types import Record

REAL = Path(__file__).resolve().parent.parent / "bench" / "real"

BERT = "issues/aws-samples__deep-learning-models__45.csv"  # 11.165-11.183 from its first step
DPO = "histories/silver-8ce__llamatest__trainer-state.csv"  # healthy: starts at ln 2 by construction


def _records(rel: str):
    return tune_records(rel)


def test_a_loss_flat_from_its_first_record_gets_a_warning_without_an_action():
    recs = _records(BERT)
    dead = raised(one_at_a_time(recs)[1], "dead")
    assert [(a.step, a.severity, a.action.type) for a in dead] == [(60, "warning", "none")]
    assert dead[0].message.startswith("run may be dead at step 60")
    assert "11.165-11.183" in dead[0].message and "first 6 records" in dead[0].message
    assert "initialisation" in dead[0].action.reason and "converged" in dead[0].action.reason
    # five records are not enough
    assert raised(one_at_a_time(recs[:5])[1], "dead") == []


def test_both_paths_agree_on_the_flat_start():
    recs = _records(BERT)
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 2, 4, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


def test_a_healthy_run_that_starts_at_chance_in_its_warm_up_is_not_flat():
    # a DPO tuning starts at ln 2 by construction, its LR ramping: 0.39 % over six records
    assert raised(one_at_a_time(_records(DPO))[1], "dead") == []


def test_a_run_that_moved_first_is_not_flat_when_it_converges():
    # the flat last lines of a run that descended: the rule ended when the loss left the band
    losses = [2.0, 1.6, 1.3, 1.1] + [1.0 + 0.0003 * (k % 3) for k in range(20)]
    assert drive(DeadDetector(), [Record(s, x) for s, x in enumerate(losses)]) == []


def test_not_while_the_lr_ramps_up_then_on_the_first_record_after():
    lrs = [1e-5 * (k + 1) for k in range(8)] + [8e-5] * 4
    recs = [Record(s, 3.0 + 0.001 * (s % 2), lr=lr) for s, lr in enumerate(lrs)]
    got = drive(DeadDetector(), recs)
    assert [(a.step, a.action.type) for a in got] == [(8, "none")]


def test_the_alert_resolves_once_the_loss_moves():
    losses = [5.0, 5.004, 5.002, 5.001, 5.003, 5.0, 4.9, 4.8, 4.7, 4.6]
    got = drive(DeadDetector(), [Record(s, x) for s, x in enumerate(losses)])
    # five values of their own within 0.1 % (flat_start's close band): raised on the fifth
    assert [(a.event, a.step, a.resolved_step) for a in got] == [("raised", 4, None), ("resolved", 4, 8)]


FROZEN = "issues/deeplabcut__deeplabcut__2922__lr0.001.csv"  # 0.01463, then 0.01462 on every line


def test_a_stronger_verdict_later_gives_the_open_episode_its_action():
    # flat from the start on record 6 (no action), the same four digits on record 7 (stop): one
    # episode, escalated to the stop
    recs = _records(FROZEN)
    out = [a for a in one_at_a_time(recs)[1] if a.kind == "dead"]
    for size in (3, 100):
        assert [a for a in in_batches(recs, size)[1] if a.kind == "dead"] == out, size
    assert [(a.event, a.step, a.last_step, a.action.type) for a in out[:2]] == [
        ("raised", 6, 6, "none"), ("escalated", 6, 7, "stop")]
    assert out[1].message.startswith("run is dead at step 7: the loss has been 0.0146")
    assert "sure" not in out[1].evidence


def test_a_state_saved_before_the_rule_existed_is_past_its_first_records():
    old = {k: v for k, v in DeadDetector().get_state().items() if not k.startswith("fs_")}
    d = DeadDetector()
    d.set_state(old)
    recs = [Record(s, 11.17 + 0.001 * (s % 3)) for s in range(100, 110)]
    assert drive(d, recs) == []
    assert [a.step for a in drive(DeadDetector(), recs)] == [104]  # five values within 0.1 %


def test_evaluations_that_move_within_the_band_do_not_end_the_flat_start():
    # a network that does not learn evaluates within its data noise too: evaluations 0.09 %
    # apart leave the rule its run; evaluations 1 % apart show a model that changed
    losses = [11.170, 11.175, 11.183, 11.166, 11.170, 11.165]
    for vals, steps in (((11.20, 11.21), [50]), ((11.20, 11.31), [])):
        recs = [Record(10 * s, x, val_loss=vals[s // 3] if s in (1, 4) else None) for s, x in enumerate(losses)]
        assert [a.step for a in drive(DeadDetector(), recs)] == steps, vals
