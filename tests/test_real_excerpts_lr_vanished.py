"""An LR that has decayed to nothing, in a log that begins after the decay: lr_anomaly's
absolute ``floor``, on a real excerpt of the corpus's tune part (bench/real/, provenance in
bench/real/SOURCES.md) and on the schedules it must leave alone. The holdout part is never read
here."""

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

# a forecasting model at epochs 455-459 whose scheduler cut the LR 0.9x per epoch: 1.7e-24 ->
# 1.2e-24, the test loss the same to eight digits on every epoch
DECAYED_AWAY = "issues/thuml__time-series-library__294.csv"
# a healthy 3-epoch fine-tune whose cosine decay prints 3.5e-11 on its last step before 0
COSINE_END = "histories/yc1999__stanford_alpaca__output-trainer-state.csv"


def test_an_excerpt_whose_lr_decayed_to_1e_24_is_told_the_lr_is_zero():
    recs = tune_records(DECAYED_AWAY)
    assert max(r.lr for r in recs if r.lr is not None) < 1e-23  # the log never shows the LR it had
    lr = raised(one_at_a_time(recs)[1], "lr_anomaly")
    assert [(a.step, a.severity, a.action.type, a.action.direction) for a in lr] == [(458, "warning", "scale_lr", "up")]
    assert "(never above 1.00e-16 in this log: too small to move float32 weights)" in lr[0].message
    # the direction (x10, as for an LR of exactly 0), and the words say no factor is the fix
    assert lr[0].action.params == {"factor": 10.0} and "set it to the schedule's base LR" in lr[0].action.reason
    # before the floor, a log without the peak of its schedule had nothing to compare its LR with
    eng = Engine("r", params={"lr_anomaly": {"floor": 0.0}})
    assert not [a for r in recs for a in eng.update(r) if a.kind == "lr_anomaly"]


def test_the_batch_path_gives_the_same_alerts():
    recs = tune_records(DECAYED_AWAY)
    one = [(a.id, a.event, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    assert one == [(a.id, a.event, a.severity, a.last_step) for a in Engine("r").update_batch(recs)]


def test_the_warning_resolves_once_the_lr_is_set_back():
    eng = Engine("r")
    recs = [Record(s, 2.0, lr=1e-20 * 0.9 ** s) for s in range(6)] + [Record(6, 2.0, lr=1e-3)]
    out = [a for r in recs for a in eng.update(r) if a.kind == "lr_anomaly" and a.event != "updated"]
    assert [(a.event, a.step) for a in out] == [("raised", 2), ("resolved", 2)]
    assert out[-1].resolved_step == 6


def test_an_lr_held_at_1e_20_from_the_start_is_no_user_floor():
    # an LR a user holds exactly (Keras' min_lr) is a floor they chose, unless no weight moves at it
    eng = Engine("r")
    out = [a for s in range(5) for a in eng.update(Record(s, 2.0, lr=1e-20)) if a.kind == "lr_anomaly"]
    assert [(a.step, a.severity) for a in out] == [(2, "warning")]
    # ReduceLROnPlateau halving Adam's 1e-3 down to its min_lr 1e-6, held there: a floor above it
    held = Engine("r")
    lrs = [max(1e-3 * 0.5 ** (s // 10), 1e-6) for s in range(300)]
    assert lrs[-1] == 1e-6 and not [a for s in range(300) for a in held.update(Record(s, 2.0 - s / 1000, lr=lrs[s]))
                                    if a.kind == "lr_anomaly"]


def test_a_cosine_decay_that_prints_3e_11_on_its_last_step_is_left_alone():
    recs = tune_records(COSINE_END)
    assert min(r.lr for r in recs if r.lr) < 1e-10  # the tiny last LR is there
    assert raised(one_at_a_time(recs)[1], "lr_anomaly") == []


def test_a_decay_that_crosses_the_floor_is_no_sudden_drop():
    # a 0.9x-per-step decay from 5e-15 passes 1e-16 while still above 1 % of its peak: judged as
    # a decay (long_frac of the LR records), not as a drop after three records
    eng = Engine("r")
    out = [a for s in range(60) for a in eng.update(Record(s, 2.0 - s / 100, lr=5e-15 * 0.9 ** s))
           if a.kind == "lr_anomaly"]
    assert [(a.step, a.evidence["sudden"]) for a in out] == [(42, False)]  # 5 records: 10 % of 43
    assert "decayed" in out[0].message and "dropped" not in out[0].message
