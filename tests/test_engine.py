"""Engine contract: one-record and batch paths agree, state round-trips, bad input never raises."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector_helpers import in_batches, one_at_a_time
from losswatch.detectors import Batch, Engine
from losswatch.detectors.engine import _json_default, decode_state
from losswatch.detectors.types import Record

REPO = Path(__file__).resolve().parents[1]

#: Run metadata that adds the SGD-efficiency rule (and reads the first-order feature sums)
SGD_META = {"optimizer": "sgd", "momentum": 0.9}


def _dicts(alerts):
    return [a.to_dict() for a in alerts]


def realistic_run(n, seed, lr=1e-3):
    """A noisy decaying loss with occasional spikes, NaNs, LR jumps/zeros, val every 50 steps."""
    r = random.Random(seed)
    recs, level = [], 3.0
    for s in range(n):
        level = level * 0.999 + r.gauss(0, 0.03)
        x = level + r.gauss(0, 0.05) + (2.0 if r.random() < 0.01 else 0.0)
        if r.random() < 0.003:
            x = math.nan
        g = abs(r.gauss(1, 0.2)) * (100 if r.random() < 0.01 else 1)
        if r.random() < 0.004:
            lr = lr * 20
        if r.random() < 0.004:
            lr = 0.0
        if r.random() < 0.01:
            lr = 1e-3
        if r.random() < 0.002:  # a run-away
            for k in range(6):
                recs.append(Record(s, level * (1.4 ** k), g * 10 ** k, lr))
                s += 1
        recs.append(Record(s, x if r.random() > 0.05 else None, g, lr,
                           level + 0.1 if s % 50 == 0 else None))
    # strictly increasing steps (the run-away insertions may repeat one)
    out, last = [], -1
    for rec in recs:
        if rec.step > last:
            out.append(rec)
            last = rec.step
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_path_gives_the_same_alerts_as_one_at_a_time_on_realistic_runs(seed):
    recs = realistic_run(3000, seed)
    e1, a1 = one_at_a_time(recs)
    assert len(a1) > 5  # the run is eventful: the comparison means something
    for size in (1000, 97, 1):
        e2, a2 = in_batches(recs, size)
        assert _dicts(a2) == _dicts(a1)
        assert _dicts(e2.active_alerts) == _dicts(e1.active_alerts)
        assert e2.health == e1.health and e2.last_step == e1.last_step
        assert (e2.recommendation and e2.recommendation.to_dict()) == (e1.recommendation and e1.recommendation.to_dict())


def test_small_batches_go_one_record_at_a_time_with_the_same_alerts(monkeypatch):
    # conftest forces the vectorised pass everywhere; here the engine's own dispatch is on
    monkeypatch.setattr(Engine, "SMALL_BATCH", 16)
    recs = realistic_run(1500, 3)
    _, a1 = one_at_a_time(recs)
    assert len(a1) > 3
    for size in (16, 17, 5):  # at, just above and below the threshold
        _, a2 = in_batches(recs, size)
        assert _dicts(a2) == _dicts(a1)
    # below the threshold, update_batch must not build the vectorised features at all
    eng = Engine("r")
    called = []
    monkeypatch.setattr(eng._features, "advance_batch", lambda b: called.append(len(b)))
    eng.update_batch(recs[:16])
    assert called == [] and eng.last_step == recs[15].step


@pytest.mark.parametrize("small", [16, 0])
def test_a_batch_of_checked_lists_reads_as_from_columns_and_gives_the_same_alerts(monkeypatch, small):
    # Batch.from_lists (the service's parsed columns) keeps the lists until an array is read:
    # its rows, arrays and alerts are those of the validated columns, on both engine paths
    monkeypatch.setattr(Engine, "SMALL_BATCH", small)
    recs = realistic_run(1500, 4)
    recs[7] = Record(recs[7].step, -0.0, math.inf, None, math.nan)
    lists = ([r.step for r in recs], [r.loss for r in recs], [r.grad_norm for r in recs], [r.lr for r in recs],
             [r.val_loss for r in recs])
    ref = Batch.from_records(recs)
    assert len(Batch.from_lists(*lists)) == len(recs)
    assert repr(Batch.from_lists(*lists).rows()) == repr(ref.rows())   # repr: NaN and -0.0 compare as written
    b = Batch.from_lists(*lists)
    for name in ("step", "loss", "grad_norm", "lr", "val_loss", "has_loss", "has_grad_norm", "has_lr", "has_val_loss"):
        got, want = getattr(b, name), getattr(ref, name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert repr(b.rows()) == repr(ref.rows())
    _, a1 = one_at_a_time(recs)
    for size in (10, 16, 250):
        eng, a2 = Engine("r"), []
        for k in range(0, len(recs), size):
            a2 += eng.update_batch(Batch.from_lists(*(col[k:k + size] for col in lists)))
        assert _dicts(a2) == _dicts(a1)


def test_restore_between_batches_and_mid_episode_continues_exactly():
    recs = realistic_run(3000, 7)
    _, ref = one_at_a_time(recs)
    # restore from bytes before every record that falls inside an active episode
    eng, out, restored_mid_episode = Engine("r"), [], 0
    for k, r in enumerate(recs):
        if eng.active_alerts and k % 7 == 0:
            restored_mid_episode += 1
            eng = Engine.from_bytes(eng.to_bytes())
        out += eng.update(r)
    assert restored_mid_episode > 10
    assert _dicts(out) == _dicts(ref)
    # and between batches of the vectorised path
    eng, out = Engine("r"), []
    for k in range(0, len(recs), 250):
        eng = Engine.from_bytes(eng.to_bytes())
        out += eng.update_batch(Batch.from_records(recs[k:k + 250]))
    assert _dicts(out) == _dicts(ref)


def test_state_is_msgpack_without_pickle_and_keeps_nan():
    import msgpack

    eng = Engine("r", {"project": "p"})
    eng.update(Record(1, 2.0, 1.0, 1e-3))
    eng.update(Record(2, math.nan, math.inf, 1e-3))
    b = eng.to_bytes()
    doc = msgpack.unpackb(b, strict_map_key=False)  # plain data: no code runs to read it
    assert doc["last_step"] == 2 and doc["run_id"] == "r"
    again = Engine.from_bytes(b)
    assert again.to_bytes() == b
    assert again.last_step == 2 and again.health == "critical"


def test_msgpack_and_json_states_restore_the_same_engine():
    # states written as JSON (before msgpack, or by an install without it) still restore, to an
    # engine that goes on exactly as the msgpack one does; the two encodings hold the same document
    import json

    recs = realistic_run(1500, 11)
    eng = Engine("r", {"project": "p", "lr_schedule": {"name": "cosine", "lr": 1e-3, "total_steps": 3000}})
    for r in recs[:700]:
        eng.update(r)
    packed = eng.to_bytes()
    doc = decode_state(packed)
    as_json = json.dumps(doc, allow_nan=True, separators=(",", ":"), default=_json_default).encode()
    a, b = Engine.from_bytes(packed), Engine.from_bytes(as_json)
    assert json.dumps(decode_state(a.to_bytes())) == json.dumps(decode_state(b.to_bytes())) == json.dumps(doc)
    out_a = [x for r in recs[700:] for x in a.update(r)]
    out_b = [x for r in recs[700:] for x in b.update(r)]
    out_ref = [x for r in recs[700:] for x in eng.update(r)]
    assert _dicts(out_a) == _dicts(out_b) == _dicts(out_ref) and out_ref


def test_metadata_msgpack_cannot_hold_falls_back_to_json():
    # a client may put an integer beyond 64 bits or a lone surrogate in its free-form metadata
    for meta in ({"seed": 2**70}, {"note": "\ud800"}):
        eng = Engine("r", meta)
        eng.update(Record(1, 2.0, 1.0, 1e-3))
        b = eng.to_bytes()
        assert b.startswith(b"{")
        again = Engine.from_bytes(b)
        assert again.meta == meta and again.to_bytes() == b


def test_practitioner_example_divergence_before_nan_then_nan_on_it():
    losses = [2.5, 2.4, 2.6, 3.1, 4.2, math.nan]
    _, alerts = one_at_a_time([Record(s, x) for s, x in enumerate(losses)])
    div = [a for a in alerts if a.kind == "divergence"]
    nan = [a for a in alerts if a.kind == "nan"]
    assert div and div[0].step < 5 and div[0].severity == "critical"
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] == pytest.approx(0.1)
    assert nan and nan[0].step == 5 and nan[0].action.type == "rollback"
    assert nan[0].action.params["to_step"] == 4


def test_records_at_or_below_last_step_are_ignored_in_both_paths():
    recs = [Record(s, 2.0) for s in (1, 2, 3)]
    eng = Engine("r")
    eng.update_batch(recs)
    assert eng.update(Record(3, math.nan)) == [] and eng.update(Record(2, math.nan)) == []
    assert eng.update_batch([Record(1, math.nan), Record(3, math.nan)]) == []
    assert eng.health == "ok" and eng.last_step == 3
    # inside one batch: a repeated or lower step is skipped, later higher steps are used
    b = Batch.from_columns(step=[5, 4, 5, 6], loss=[2.0, math.nan, math.nan, math.nan])
    out = eng.update_batch(b)
    assert [(a.kind, a.step) for a in out] == [("nan", 6)]


def test_batch_from_columns_keeps_none_and_nan_apart():
    b = Batch.from_columns(step=[1, 2, 3], loss=[None, math.nan, 1.0], lr=np.array([1e-3, 1e-3, 1e-3]))
    assert b.has_loss.tolist() == [False, True, True] and b.has_lr.all() and not b.has_grad_norm.any()
    eng = Engine("r")
    out = eng.update_batch(b)
    assert [(a.kind, a.step) for a in out] == [("nan", 2)]
    with pytest.raises(ValueError):
        Batch.from_columns(step=[1, 2], loss=[1.0])
    with pytest.raises(ValueError):
        Batch.from_columns(step=[-1], loss=[1.0])


WEIRD = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.just(0.0), st.just(-0.0),
    st.just(1e300), st.just(-1e300), st.just(5e-324), st.just(1e-310), st.just(math.nan),
    st.sampled_from([1.0, 2.0, 3.0]),
)
ROW = st.tuples(st.integers(0, 3), WEIRD, WEIRD, WEIRD, WEIRD)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=120), cut=st.integers(1, 40))
def test_any_floats_never_raise_and_both_paths_agree(rows, cut):
    # step increments of 0 make repeated steps; big increments make gaps
    step, recs = 0, []
    for inc, loss, gn, lr, val in rows:
        step += inc * inc * 7 if inc == 3 else inc
        recs.append(Record(step, loss, gn, lr, val))
    e1, a1 = one_at_a_time(recs, meta=SGD_META)  # SGD: the first-order sums and their rule too
    e2, a2 = in_batches(recs, cut, meta=SGD_META)
    assert _dicts(a1) == _dicts(a2)
    assert e1.health == e2.health
    assert e1._features.state["fo"] == e2._features.state["fo"]  # bit-identical, and never NaN
    e3 = Engine.from_bytes(e2.to_bytes())
    assert _dicts(e3.active_alerts) == _dicts(e2.active_alerts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(50, 1500), cut=st.integers(2, 600))
def test_both_paths_agree_on_random_realistic_runs(seed, n, cut):
    recs = realistic_run(n, seed)
    _, a1 = one_at_a_time(recs, meta=SGD_META)
    _, a2 = in_batches(recs, cut, meta=SGD_META)
    assert _dicts(a1) == _dicts(a2)


def test_a_constant_run_is_dead_first_and_never_diverging():
    recs = [Record(s, 1.0, 1.0, 1e-3) for s in range(2000)]
    eng, alerts = one_at_a_time(recs)
    # nothing learns: a frozen loss is a dead run, from its sixth identical record
    assert (alerts[0].kind, alerts[0].step) == ("dead", 5)
    assert {a.kind for a in alerts} <= {"dead", "plateau"}


def test_schedule_monitor_plugin_runs_in_both_paths_and_survives_restore():
    meta = {"lr_schedule": {"name": "constant", "lr": 1e-3}}
    eng = Engine("r", meta)
    assert any(d.name == "schedule_monitor" for d in eng._detectors)
    recs = realistic_run(2000, 11)
    e1, a1 = one_at_a_time(recs, meta=meta)
    assert any(a.detector == "schedule_monitor" for a in a1)  # the LR jumps/zeros are off-schedule
    e2, a2 = in_batches(recs, 333, meta=meta)
    assert _dicts(a2) == _dicts(a1)
    eng, out = Engine("r", meta), []
    for k in range(0, len(recs), 400):
        eng = Engine.from_bytes(eng.to_bytes())
        out += eng.update_batch(recs[k:k + 400])
    assert _dicts(out) == _dicts(a1)


def test_set_meta_adds_the_schedule_monitor_and_bad_schedules_do_not_break_the_engine():
    eng = Engine("r")
    eng.set_meta({"lr_schedule": {"name": "constant", "lr": 1e-3}})
    assert any(d.name == "schedule_monitor" for d in eng._detectors)
    eng = Engine("r", {"lr_schedule": {"name": "no-such-schedule"}})
    eng.update(Record(1, 2.0, 1.0, 1e-3))  # never raises


def test_state_from_another_version_restores_what_fits():
    import json as _json

    eng = Engine("r")
    for r in realistic_run(300, 3):
        eng.update(r)
    doc = decode_state(eng.to_bytes())
    doc["detectors"] = [d for d in doc["detectors"] if d["name"] != "slow_progress"]  # older version
    for d in doc["detectors"]:
        if d["name"] == "plateau":
            d["params"]["retired_param"] = 1.0  # a parameter this version no longer has
        if d["name"] == "divergence":
            d["state"] = {"hi_start": 0}  # state keys missing
    del doc["features"]["state"]["worst"]
    again = Engine.from_bytes(_json.dumps(doc).encode())
    assert [d.name for d in again._detectors] == [d.name for d in eng._detectors]
    for r in realistic_run(600, 3)[300:]:
        again.update(r)  # keeps working
    assert again.last_step > 300


def test_a_state_saved_before_the_highest_loss_was_kept_starts_it_at_the_next_loss_in_both_paths():
    import json as _json

    eng = Engine("r")
    for r in realistic_run(300, 5):
        eng.update(r)
    doc = decode_state(eng.to_bytes())
    del doc["features"]["state"]["top"]
    for d in doc["detectors"]:
        if d["name"] == "divergence":
            del d["state"]["spike_top"]
    old = _json.dumps(doc).encode()
    rest = realistic_run(600, 5)[300:]
    one, batch = Engine.from_bytes(old), Engine.from_bytes(old)
    out_one = [a for r in rest for a in one.update(r)]
    out_batch = [a for k in range(0, len(rest), 100) for a in batch.update_batch(Batch.from_records(rest[k:k + 100]))]
    assert _dicts(out_one) == _dicts(out_batch)
    top = one._features.state["top"]
    assert top == batch._features.state["top"] == max(r.loss for r in rest if r.loss is not None and math.isfinite(r.loss))


def test_numpy_and_integral_float_steps_and_values_are_accepted():
    eng = Engine("r")
    eng.update(Record(np.int64(1), np.float32(2.0), np.float64(1.0), 1e-3))
    eng.update(Record(2.0, 2.0, 1, 1e-3))
    eng.update(Record(3, "NaN", None, 1e-3))  # a stray string counts as a NaN value
    assert eng.last_step == 3 and eng.health == "critical"


def stuck_then_realistic(n, seed):
    """A transformer-like run stuck early (fast drop, flat loss, faded grad-norm, large LR), then
    the noisy realistic run (spikes, NaNs, LR jumps) restarted after it: the early-stall episode
    opens, then resolves or stays open under everything the other detectors react to."""
    r = random.Random(seed)
    recs = []
    for s in range(250):
        x = 4.6 if s == 0 else 2.8 + 1.8 * math.exp(-s / 3) + r.gauss(0, 0.05)
        recs.append(Record(s, x, (3.0 * math.exp(-s / 8) + 0.15) * math.exp(r.gauss(0, 0.2)), 0.03))
    recs += [Record(250 + rec.step, rec.loss, rec.grad_norm, rec.lr, rec.val_loss)
             for rec in realistic_run(n, seed)]
    return recs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(50, 400), cut=st.integers(2, 300))
def test_both_paths_agree_on_runs_stuck_early(seed, n, cut):
    recs = stuck_then_realistic(n, seed)
    _, a1 = one_at_a_time(recs)
    _, a2 = in_batches(recs, cut)
    assert _dicts(a1) == _dicts(a2)
    assert any(a.detector == "early_stall" for a in a1)


def test_a_state_saved_before_a_detector_changed_its_checkpoints_restores_and_runs_on():
    # slow_progress checkpoints once held fewer values (no best level, no raw best, no LR, no
    # record count), on one checkpoint per doubling: such a state restarts that detector afresh
    # instead of failing or running on a guess
    import json

    eng = Engine("r")
    for s in range(300):
        eng.update(Record(s, 2.3 - 0.002 * s, lr=1e-4))
    doc = decode_state(eng.to_bytes())
    sp = next(d for d in doc["detectors"] if d["name"] == "slow_progress")
    assert sp["state"]["cps"] and all(len(cp) == 7 for cp in sp["state"]["cps"].values())
    assert sp["state"]["per_doubling"] == 2
    shorter = json.loads(json.dumps(doc))
    for cp in next(d for d in shorter["detectors"] if d["name"] == "slow_progress")["state"]["cps"].values():
        del cp[6]
    other_grid = json.loads(json.dumps(doc))
    del next(d for d in other_grid["detectors"] if d["name"] == "slow_progress")["state"]["per_doubling"]
    for saved in (shorter, other_grid):
        old = Engine.from_bytes(json.dumps(saved).encode())
        restored = next(d for d in old._detectors if d.name == "slow_progress")
        assert restored.cps == {} and restored.k_done == -1  # afresh
        old.update_batch([Record(s, 2.3 - 0.002 * s, lr=1e-4) for s in range(300, 700)])  # runs on


# -- alert events and incidents --------------------------------------------------------------

def _feed(values):
    eng, out = Engine("r"), []
    for s, (loss, gn) in enumerate(values):
        out += eng.update(Record(step=s, loss=loss, grad_norm=gn))
    return eng, out


def test_the_nan_that_ends_a_divergence_joins_its_incident():
    eng, alerts = _feed([(v, None) for v in (2.5, 2.4, 2.6, 3.1, 4.2, math.nan)])
    div = next(a for a in alerts if a.kind == "divergence")
    nan = next(a for a in alerts if a.kind == "nan")
    assert (div.event, nan.event) == ("raised", "raised")
    assert div.incident == div.id
    assert nan.incident == div.id
    assert {a.incident for a in eng.active_alerts} == {div.id}


def test_an_unrelated_alert_opens_its_own_incident():
    from losswatch.detectors.incidents import IncidentBook
    from losswatch.detectors.types import Alert
    book = IncidentBook()
    div = Alert(run_id="r", step=4, kind="divergence", severity="critical", detector="divergence", message="")
    over = Alert(run_id="r", step=9, kind="overfitting", severity="warning", detector="overfitting", message="")
    book.assign([div, over])
    assert over.incident == over.id
    # once the divergence resolved, a later spike opens a new incident
    closed = Alert(run_id="r", step=4, kind="divergence", severity="critical", detector="divergence",
                   message="", resolved_step=20, event="resolved")
    spike = Alert(run_id="r", step=30, kind="spike", severity="info", detector="spike", message="")
    book.assign([closed, spike])
    assert closed.incident == div.id and spike.incident == spike.id


def test_update_episode_reports_escalated_only_for_a_new_request():
    from losswatch.detectors.base import Detector
    from losswatch.detectors.types import Action
    d = Detector()
    d.run_id = "r"
    d.open_episode(1, "warning", "m", {}, Action("scale_lr", {"factor": 0.1}))
    d.update_episode(2, message="the same, in new words")
    d.update_episode(3, action=Action("scale_lr", {"factor": 0.01}))
    d.update_episode(4, severity="critical")
    d.update_episode(5, severity="warning")
    d.update_episode(6, action=Action("none"))
    d.close_episode(7)
    assert [a.event for a in d.drain_changes()] == [
        "raised", "updated", "escalated", "escalated", "updated", "updated", "resolved"]


@pytest.mark.parametrize("seed", [0, 1])
def test_incidents_survive_a_restore_and_agree_between_paths(seed):
    recs = realistic_run(2000, seed)
    _, a1 = one_at_a_time(recs)
    eng, a2 = Engine("r"), []
    for k in range(0, len(recs), 300):
        a2 += eng.update_batch(recs[k:k + 300])
        eng = Engine.from_bytes(eng.to_bytes())
    assert [(a.id, a.event, a.incident) for a in a1] == [(a.id, a.event, a.incident) for a in a2]
    assert any(a.incident != a.id for a in a1)  # the run has incidents of several alerts


def test_a_frozen_loss_is_not_told_to_raise_the_lr_while_dead_says_stop():
    eng, alerts = _feed([(2.302585, None)] * 300)
    dead = next(a for a in alerts if a.kind == "dead")
    assert dead.action.type == "stop"
    raises = [a for a in alerts if a.action.direction == "up"]
    plateau = [a for a in alerts if a.kind == "plateau"]
    assert plateau, "the plateau rule still reports the stall"
    assert raises == [], [(a.kind, a.action) for a in raises]
    assert "dead" in plateau[0].action.reason and plateau[0].incident == dead.incident
    assert eng.recommendation.type == "stop"
    assert all(a.action.direction != "up" for a in eng.active_alerts)


def test_an_open_lr_raise_is_withheld_when_a_lowering_alert_appears():
    from losswatch.detectors.incidents import IncidentBook
    from losswatch.detectors.types import Action, Alert
    book = IncidentBook()
    up = Alert(run_id="r", step=10, kind="plateau", severity="warning", detector="plateau",
               message="", action=Action("scale_lr", {"factor": 10.0}, "too small"))
    down = Alert(run_id="r", step=40, kind="divergence", severity="critical", detector="divergence",
                 message="", action=Action("scale_lr", {"factor": 0.1}))
    out = book.assign([up])
    assert out[0].action.direction == "up"
    out = book.assign([down])
    assert [(a.kind, a.event, a.action.type, a.last_step) for a in out] == [
        ("divergence", "raised", "scale_lr", 40), ("plateau", "updated", "none", 40)]
    # the book's state round-trips with the withheld copy
    again = IncidentBook.from_state(book.to_state())
    later = Alert(run_id="r", step=10, kind="plateau", severity="warning", detector="plateau", message="",
                  action=Action("scale_lr", {"factor": 10.0}), last_step=60, event="updated")
    assert again.assign([later])[0].action.type == "none"


def test_a_note_inside_an_incident_that_lowers_the_lr_defers_to_its_advice():
    from losswatch.detectors.incidents import IncidentBook
    from losswatch.detectors.types import Action, Alert
    book = IncidentBook()
    down = Alert(run_id="r", step=9, kind="divergence", severity="critical", detector="divergence",
                 message="", action=Action("scale_lr", {"factor": 0.1}, "cut"))
    note = Alert(run_id="r", step=9, kind="spike", severity="info", detector="val_spike", message="",
                 action=Action("none", {}, "Nothing to do if the next evaluation is back."))
    out = book.assign([down, note])
    assert out[1].incident == out[0].incident
    assert out[1].action.reason.startswith("part of the divergence incident (step 9)")
    # a note raised first gives its own words until a lowering alert opens in its incident: then
    # it is reported again, deferring, and the book's saved state keeps that
    book = IncidentBook()
    first = book.assign([Alert(run_id="r", step=3, kind="spike", severity="info", detector="spike",
                               message="", action=Action("none", {}, "a transient spike"))])
    assert first[0].action.reason == "a transient spike"
    book = IncidentBook.from_state(json.loads(json.dumps(book.to_state())))
    later = book.assign([Alert(run_id="r", step=7, kind="divergence", severity="critical", detector="divergence",
                               message="", action=Action("scale_lr", {"factor": 0.1}, "cut"))])
    assert [(a.kind, a.event, a.incident) for a in later] == [
        ("divergence", "raised", "r:spike:3"), ("spike", "updated", "r:spike:3")]
    assert later[1].action.reason.startswith("part of the divergence incident (step 7)")
    # the same alert escalated is no new lowering alert: the note is not reported again, and its
    # own words are kept once whatever it deferred to
    worse = book.assign([Alert(run_id="r", step=7, kind="divergence", severity="critical", detector="divergence",
                               message="", action=Action("scale_lr", {"factor": 0.01}, "cut more"),
                               last_step=12, event="escalated")])
    assert [(a.kind, a.event) for a in worse] == [("divergence", "escalated")]
    nan = book.assign([Alert(run_id="r", step=15, kind="nan", severity="critical", detector="nan", message="",
                             action=Action("rollback", {"to_step": 5}, "roll back"))])
    assert [a.kind for a in nan] == ["nan"]  # the incident had a lowering alert already
    from losswatch.detectors.incidents import subsumed
    twice = subsumed(later[1], nan[0])
    assert twice.reason.count("this note alone") == 1 and twice.reason.endswith("(this note alone: a transient spike)")
    # a lowering alert of another incident leaves a note its own words; one of the note's does not
    book = IncidentBook()
    over = Alert(run_id="r", step=2, kind="overfitting", severity="warning", detector="overfitting", message="",
                 action=Action("rollback", {"to_step": 1}, "rollback"))
    div = Alert(run_id="r", step=9, kind="divergence", severity="critical", detector="divergence", message="",
                action=Action("scale_lr", {"factor": 0.1}, "cut"))
    spike = Alert(run_id="r", step=10, kind="spike", severity="info", detector="spike", message="",
                  action=Action("none", {}, "a transient spike"))
    out = book.assign([over]) + book.assign([div]) + book.assign([spike])
    assert out[-1].incident == out[1].incident != out[0].incident
    assert out[-1].action.reason.startswith("part of the divergence incident (step 9)")
    # on a real evaluation-only log: the run's alerts never say both "cut the LR" and "nothing to do"
    path = REPO / "bench" / "real" / "issues" / "wandb__senpai__pr2583__lr1e-3.csv"
    eng = Engine("r")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    alerts = []
    for r in rows:
        alerts += eng.update(Record(int(r["step"]), val_loss=float(r["val_loss"])))
    assert any(a.kind == "divergence" and a.action.direction == "down" for a in alerts)
    assert not any("Nothing to do" in a.action.reason and not a.action.reason.startswith("part of")
                   for a in alerts + eng.active_alerts)


def test_a_loss_repeated_at_the_four_decimal_print_resolution_is_dead_only_with_three_digits():
    from losswatch.detectors.dead import same_4_digits
    assert same_4_digits(0.0266, 0.0266) and same_4_digits(0.2, 0.2) and same_4_digits(2.3026, 2.3026)
    assert not same_4_digits(0.0003, 0.0003)  # one significant digit at four decimals
    assert same_4_digits(0.00031234, 0.00031234)  # printed with more digits: judged
    def dead(losses):
        _, alerts = one_at_a_time([Record(s, x) for s, x in enumerate(losses)])
        return [a for a in alerts if a.kind == "dead"]
    assert dead([0.5, 0.2] + [0.0003] * 10) == []
    assert dead([0.5, 0.2] + [0.0266] * 10)
