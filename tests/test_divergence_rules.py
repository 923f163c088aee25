"""The divergence rules can be read and driven alone: driving the detector without the Engine
gives the Engine's alerts, every parameter is documented once with its true default, the spike
defaults are one definition, and every feature column is described once, with its type."""

from __future__ import annotations

import csv
import inspect
import json
import math
import pkgutil
import random
import re
import typing
from pathlib import Path

import pytest

from detector_helpers import healthy_curve
from losswatch.detectors import Batch, Engine, divergence_rules
from losswatch.detectors.base import drive
from losswatch.detectors.divergence import DivergenceDetector
from losswatch.detectors.features import Features, FeatureTracker
from losswatch.detectors.spike import SpikeDetector
from losswatch.detectors.types import Record


def _key(a):
    """Everything an alert says, except the incident (the Engine groups alerts of several kinds)."""
    d = a.to_dict()
    d.pop("incident", None)
    return d


def _engine_divergence(records, size=None):
    eng = Engine("r")
    out = []
    if size is None:
        for r in records:
            out += eng.update(r)
    else:
        for k in range(0, len(records), size):
            out += eng.update_batch(records[k:k + size])
    return [_key(a) for a in out if a.detector == "divergence"]


def _driven(records):
    det = DivergenceDetector()
    det.run_id = "r"
    return [_key(a) for a in drive(det, records)]


def _runs():
    """Runs that open, escalate and close divergence episodes (and one that never does)."""
    r = random.Random(7)
    practitioner = [Record(s, x) for s, x in enumerate([2.5, 2.4, 2.6, 3.1, 4.2, math.nan])]
    # a healthy descent that runs away, gets its LR cut 10x and thrashes on: raised, escalated
    losses, gns, lrs = healthy_curve(60, seed=4, tau=20)
    losses += [losses[-1] * k for k in (1.3, 1.8, 2.6, 3.8, 5.5)]
    losses += [2.2 * (1.0 + r.gauss(0, 0.3)) for _ in range(135)]
    lrs = [1e-3] * 80 + [1e-4] * 120
    cut = [Record(s, x, 1.0, lr) for s, (x, lr) in enumerate(zip(losses, lrs))]
    # a dense slow divergence that recovers (sustained, then resolved), with a repeated step,
    # a missing loss and a NaN grad-norm on the way
    losses, gns, lrs = healthy_curve(1200, seed=2, tau=100)
    for s in range(600, 800):
        losses[s] *= 1.0 + 2.0 * min(1.0, (s - 600) / 60)
    slow = [Record(s, x, g, lr) for s, (x, g, lr) in enumerate(zip(losses, gns, lrs))]
    slow[300] = Record(300, None, 1.0, 1e-3)
    slow[301] = Record(301, 0.5, math.nan, 1e-3)
    slow.insert(500, Record(499, 9.0))  # at or below the last step: ignored by both
    # an unstable run (a warning) that climbs back past its first loss (critical, same alert)
    down = [3.0 * math.exp(-k / 30) + 0.4 + r.gauss(0, 0.01) for k in range(150)]
    unstable = down + [0.5 * 1.35 ** k for k in range(1, 6)] + [4.0 + 0.1 * k for k in range(40)]
    healthy = healthy_curve(2000, seed=1)[0]
    return {"practitioner": practitioner, "cut": cut, "slow": slow,
            "unstable": [Record(s, x) for s, x in enumerate(unstable)],
            "healthy": [Record(s, x) for s, x in enumerate(healthy)]}


RUNS = _runs()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_detector_driven_alone_gives_the_engines_divergence_alerts(name):
    records = RUNS[name]
    alone = _driven(records)
    assert alone == _engine_divergence(records)
    assert alone == _engine_divergence(records, size=100)  # the batch path too
    if name != "healthy":  # the comparison means something: the rules fired
        assert alone, name


def test_the_runs_cover_raising_escalating_and_resolving():
    events = {(a["event"], a["evidence"].get("escalation") is not None)
              for name in RUNS for a in _driven(RUNS[name])}
    assert {("raised", False), ("escalated", False), ("escalated", True), ("resolved", False)} <= events


def test_drive_reads_records_as_the_engine_does_and_rejects_what_a_batch_rejects():
    det = DivergenceDetector()
    assert drive(det, []) == []
    with pytest.raises(ValueError):
        drive(det, [Record(0, True)])  # a boolean is not a loss


# -- the rules' reference ---------------------------------------------------------------------------
PARAM = re.compile(r"^(\w+) : [^,\n]+, default (\S+)", re.M)


def _parameter_tables():
    """{parameter: [(module, default as written)]} from the Parameters sections of the rule modules."""
    found: dict[str, list[tuple[str, str]]] = {}
    for mod in DivergenceDetector.rule_modules:
        section = mod.__doc__.split("Parameters\n----------\n", 1)
        if len(section) == 2:
            table = re.split(r"\n\S[^\n]*\n-{3,}\n", section[1], maxsplit=1)[0]
            for name, default in PARAM.findall(table):
                found.setdefault(name, []).append((mod.__name__.rsplit(".", 1)[1], default))
    return found


def test_every_parameter_is_documented_once_with_its_true_default():
    tables = _parameter_tables()
    params = inspect.signature(DivergenceDetector.__init__).parameters
    names = [p for p in params if p != "self"]
    assert sorted(tables) == sorted(names)
    for name in names:
        (module, written), = tables[name]  # exactly once
        assert float(written) == params[name].default, (name, module, written)


def test_every_rule_module_is_in_the_reference_and_named_after_its_rule():
    modules = {m.name for m in pkgutil.iter_modules(divergence_rules.__path__)}
    listed = {m.__name__.rsplit(".", 1)[1] for m in DivergenceDetector.rule_modules}
    assert listed == modules
    for mod in DivergenceDetector.rule_modules:  # each says its rule the same way
        for section in ("Parameters", "Examples", "References"):
            assert f"\n{section}\n{'-' * len(section)}\n" in mod.__doc__, (mod.__name__, section)
    # the modules of the rules that open an episode carry the rule's name (evidence["rule"])
    rules = [m.__name__.rsplit(".", 1)[1] for m in DivergenceDetector.rule_modules[:11]]
    assert rules == ["first_loss", "raw_runaway", "streak", "climb", "never_learnt", "spike_climbs", "lr_jump",
                     "spike_cluster", "grad_norm", "sustained", "lost"]
    for name in rules:
        assert f'"{name}"' in inspect.getsource(getattr(divergence_rules, name).check), name


def test_the_spike_rule_defaults_are_one_definition_shared_by_both_detectors():
    div = inspect.signature(DivergenceDetector.__init__).parameters
    spk = inspect.signature(SpikeDetector.__init__).parameters
    assert (div["spike_z"].default, div["spike_rel"].default, div["spike_min"].default) == \
        (spk["z"].default, spk["rel"].default, spk["min_records"].default)
    source = inspect.getsource(DivergenceDetector.__init__) + inspect.getsource(SpikeDetector.__init__)
    assert "= SPIKE_Z" in source and "= SPIKE_REL" in source and "= SPIKE_MIN_RECORDS" in source


# -- the features ------------------------------------------------------------------------------------
def test_every_feature_column_is_described_once_with_its_type():
    hints = typing.get_type_hints(Features, include_extras=True)
    tracker = FeatureTracker()
    one = tracker.advance_one(0, 2.0, 1.0, 1e-3, None)
    columns = set(one.columns())
    batch = FeatureTracker().advance_batch(Batch.from_columns(step=[0, 1], loss=[2.0, 1.9]))
    assert set(batch._arrays) == columns  # both paths produce the same columns
    assert set(hints) - {"n"} == columns
    for c in columns:
        kind, meaning = typing.get_args(hints[c])
        assert typing.get_origin(kind) is list and len(meaning) > 10, c
        value = getattr(one, c)[0]
        assert isinstance(value, typing.get_args(kind)[0]) or \
            (typing.get_args(kind)[0] is float and isinstance(value, int)), (c, value)


def test_a_batch_row_reads_the_same_python_values_as_one_record_rows():
    # the batch path hands detectors its numpy columns through memoryviews: f.<column>[i] must be
    # the same Python value (type and bits) as the one-record row's, NaN and the integers included
    losses = [2.0, float("nan"), 1.9, None, 2.5, 1.7]
    lrs = [1e-3, 1e-3, None, 2e-3, 2e-3, 1e-3]
    one = FeatureTracker()
    rows = [one.advance_one(s, x, 1.0, lr, None) for s, (x, lr) in enumerate(zip(losses, lrs))]
    batch = FeatureTracker().advance_batch(
        Batch.from_columns(step=list(range(6)), loss=losses, grad_norm=[1.0] * 6, lr=lrs))
    for c in rows[0].columns():
        got = [getattr(batch, c)[i] for i in range(6)]
        want = [r.columns()[c][0] for r in rows]
        assert [type(v) for v in got] == [type(v) for v in want], c
        assert repr(got) == repr(want), c
    assert getattr(batch, "loss")[-1] == 1.7 and getattr(batch, "step")[-1] == 5


def test_a_streak_under_a_calm_grad_norm_is_the_data_not_a_run_away():
    losses = [1.16, 1.13, 1.23, 1.39, 1.57, 1.28]
    lrs = [2.16e-5 + k * 6e-7 for k in range(6)]  # a warm-up: the LR ramps under the rise

    def rules(gns):
        return [a.evidence["rule"] for a in drive(DivergenceDetector(), map(Record, range(6), losses, gns, lrs))]
    assert rules([0.52, 0.48, 0.75, 0.56, 0.56, 0.53]) == []  # the gradient does not share the rise
    assert rules([0.52, 0.48, 0.75, 1.6, 3.1, 0.53]) == ["streak"]  # it does: a run-away
    assert rules([None] * 6) == ["streak"]  # no grad-norm logged: the loss alone decides


# -- a bad batch's kick ------------------------------------------------------------------------------
def _kick_run():
    """The benchmark's injected bad batch on a least-squares model (bench/runs/linreg-sgd-spike-x1-s0.csv,
    steps 0-299): loss 0.73 -> 36 with the grad-norm 1.4 -> 216 at step 203, then 20-165 for 20
    steps under grad-norms of 19-61, back at its level by step 260. Labelled healthy: it recovers."""
    path = Path(__file__).resolve().parents[1] / "bench" / "runs" / "linreg-sgd-spike-x1-s0.csv"
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f)][:300]
    return [Record(int(r["step"]), float(r["loss"]), float(r["grad_norm"]), float(r["lr"])) for r in rows]


def test_a_bad_batch_kick_that_the_weights_come_back_from_is_not_a_run_away():
    kick = _kick_run()
    assert not _driven(kick)  # 24-195x the first loss for 20 steps, each grad-norm below the kick's
    assert _engine_divergence(kick) == _engine_divergence(kick, size=64) == []
    # the same losses with a grad-norm that grows past the kick's: the weights are not coming back
    runaway = [Record(r.step, r.loss, r.grad_norm * (1.0 if r.step <= 203 else 20.0), r.lr) for r in kick]
    alerts = _driven(runaway)
    assert [(a["step"], a["evidence"]["rule"]) for a in alerts[:1]] == [(204, "first_loss")]
    assert alerts == _engine_divergence(runaway) == _engine_divergence(runaway, size=64)
    # no grad-norm logged: nothing tells a kick, two records at 10x the first loss decide
    bare = [Record(r.step, r.loss, None, r.lr) for r in kick]
    assert [(a["step"], a["evidence"]["rule"]) for a in _driven(bare)[:1]] == [(204, "first_loss")]


def test_a_blow_up_that_stays_high_while_its_gradient_falls_back_is_not_waited_through_as_a_kick():
    # a descent with grad-norms ~1, a jump to 40x its start on a kick (grad-norm 500), then the loss
    # held at ~35x while the grad-norm falls back to ~2 (saturated units): no optimiser pull is
    # left, so the two records at 10x the start decide at once, as without a grad-norm
    r = random.Random(0)
    losses = [3.0 * 0.995 ** (s + 1) * (1 + r.gauss(0, 0.02)) for s in range(60)]
    gns = [math.exp(r.gauss(0, 0.1)) for _ in range(60)]
    losses += [120.0] + [110 + r.gauss(0, 3) for _ in range(45)]
    gns += [500.0] + [2.0 * math.exp(r.gauss(0, 0.1)) for _ in range(45)]
    stuck = [Record(s, x, g) for s, (x, g) in enumerate(zip(losses, gns))]
    alerts = _driven(stuck)
    assert [(a["step"], a["evidence"]["rule"]) for a in alerts[:1]] == [(61, "first_loss")]
    assert alerts == _engine_divergence(stuck) == _engine_divergence(stuck, size=16)


def test_a_kick_is_kept_in_the_saved_state_and_forgotten_when_an_episode_closes():
    det = DivergenceDetector()
    drive(det, _kick_run()[:205])
    state = det.get_state()
    assert state["kick_rec"] == 204 and state["kick_gn"] > 200  # the 204th record, step 203
    assert math.exp(state["kick_mu"]) < 3.0  # the grad-norm level before it (~1.4)
    again = DivergenceDetector()
    again.set_state(json.loads(json.dumps(state)))
    assert again.get_state() == state
    divergence_rules.spikes.forget(again)
    assert again.kick_rec < 0 and again.kick_mu == -math.inf
    # a state saved before the level was kept waits through the kick as it did
    older = {k: v for k, v in state.items() if k != "kick_mu"}
    again.set_state(json.loads(json.dumps(older)))
    assert again.kick_mu == -math.inf


def _start(losses):
    tr = FeatureTracker()
    return [tr.advance_one(s, x, None, None, None) for s, x in enumerate(losses)][-1]


def test_a_low_first_draw_does_not_set_the_start_level_the_level_or_the_best_alone():
    # a noisy per-batch loss whose first value is a low draw (a Whisper fine-tune's first five)
    f = _start([0.269, 0.573, 0.4585, 0.5744, 0.4376])
    assert f.l0[0] == 0.4585 and f.best[0] == 0.4585 and f.slow[0] == 0.4585 and f.rbest[0] == 0.4585
    assert f.sd[0] == pytest.approx(0.1145)  # the median absolute deviation from the start level
    # four losses are not enough to tell: the first one stands
    assert _start([0.269, 0.573, 0.4585, 0.5744]).l0[0] == 0.269


@pytest.mark.parametrize("losses", [
    [2.3309, 90.551, 5.32059, 2.48459, 2.43175],  # a CNN at 100x its LR blows up on its second step
    [1.16, 1.13, 1.23, 1.39, 1.57],  # the first is not the lowest
    [2.0, 1.5, 1.2, 1.0, 0.9],  # a descent: the first loss is where it started
    [0.2, 0.5, 0.45, 0.55, 0.6],  # 2.5x below the median: not a draw of the same noise
    [2.29, 2.79, 2.42, 2.418, 2.394],  # a CNN at chance, then its LR (100x) lifts it: the rise is real
])
def test_the_first_loss_stays_the_start_unless_it_is_a_low_draw_among_its_neighbours(losses):
    f = _start(losses)
    assert f.l0[0] == losses[0]


def test_the_batch_path_gives_the_start_level_of_the_one_record_path():
    losses = [0.269, 0.573, 0.4585, 0.5744, 0.4376, 0.975, 0.4933, 0.726]
    one = FeatureTracker()
    rows = [one.advance_one(s, x, None, None, None) for s, x in enumerate(losses)]
    for cut in (1, 3, 5, 8):  # a batch that ends before, at and after the fifth loss
        tr = FeatureTracker()
        batches = [Batch.from_records([Record(s, x) for s, x in enumerate(losses)][a:b])
                   for a, b in ((0, cut), (cut, len(losses))) if b > a]
        got = [tr.advance_batch(b) for b in batches]
        cols = {c: sum((list(getattr(g, c)) for g in got), []) for c in ("l0", "l0_n", "slow", "sd", "best", "rbest",
                                                                   "trend")}
        for c, v in cols.items():
            assert v == [getattr(r, c)[0] for r in rows], (cut, c)


def test_the_words_quote_the_start_level_as_a_median_once_it_replaced_the_first_loss():
    # a noisy loss whose first value (0.27 at step 0) is a low draw: the start level is the
    # median of the first five, 0.5; a blow-up to 16-18x it is quoted against that median
    losses = [0.27, 0.5, 0.6, 0.45, 0.7, 0.55, 0.6, 0.5, 0.52, 8.0, 9.0]
    assert _start(losses[:4]).l0_n[0] == 0 and _start(losses[:5]).l0_n[0] == 5
    records = [Record(s, x) for s, x in enumerate(losses)]
    alerts = _engine_divergence(records)
    assert alerts == _engine_divergence(records, size=4)
    assert [a["evidence"]["rule"] for a in alerts] == ["first_loss"]
    assert "10x its start level (0.5, the median of its first 5 losses)" in alerts[0]["message"]
    assert "at step 0" not in alerts[0]["message"]  # step 0 logged 0.27, not 0.5
    # a first loss that stays the start is quoted with its step
    plain = [Record(s, x) for s, x in enumerate([0.5, 0.45, 0.6, 0.55, 0.5, 0.52, 8.0, 9.0])]
    assert "10x its first loss (0.5 at step 0)" in _engine_divergence(plain)[0]["message"]


def test_a_spike_that_climbs_above_the_start_is_advised_and_escalated_in_words_that_match_it():
    # a reranker fine-tune near its floor: a jump to 2.1x its start, higher still (spike_climbs,
    # already above its first loss), then the level follows it up (critical, same alert)
    losses = [0.2524, 0.2185, 0.2577, 0.2168, 0.298, 0.3283, 0.2134, 0.5352, 0.591, 0.62, 0.6, 0.61]
    records = [Record(s, x) for s, x in enumerate(losses)]
    alerts = _engine_divergence(records)
    assert alerts == _engine_divergence(records, size=4) == _driven(records)
    raised, lost = alerts
    assert (raised["event"], raised["severity"], lost["event"], lost["severity"]) == \
        ("raised", "warning", "escalated", "critical")
    assert "no need to stop" not in raised["action"]["reason"]
    assert "climbs back to" not in raised["action"]["reason"]  # it is above already
    assert "come back below it" in raised["action"]["reason"]
    assert "has stayed above its first loss" in lost["message"] and "back above" not in lost["message"]
    # the ratio the raise quoted, not one from the later loss
    assert f"{raised['evidence']['raised_ratio']:.2g}x its best" in raised["message"]
    assert "it was 2.4x its best when the alert was raised at step 8" in lost["message"]
    assert "roll back to a checkpoint near step 3" in lost["action"]["reason"]
    assert "no need to stop" not in lost["action"]["reason"]
    assert {k: v for k, v in lost["action"].items() if k != "reason"} == \
        {k: v for k, v in raised["action"].items() if k != "reason"}  # the same cut


def test_a_run_away_below_the_start_that_climbs_back_is_said_to_be_back_above_it():
    alerts = _driven(RUNS["unstable"])
    raised, lost = alerts[0], alerts[1]
    assert (raised["severity"], lost["severity"], lost["event"]) == ("warning", "critical", "escalated")
    assert "no need to stop" in raised["action"]["reason"]  # below its first loss: it holds progress
    assert "is back above its first loss" in lost["message"]
    assert "no need to stop" not in lost["action"]["reason"]


def test_a_loss_below_zero_is_said_to_be_a_difference_above_its_best_not_a_multiple():
    # a normalising flow's negative log-likelihood (bench/real/issues/bayesflow-org__bayesflow__23.csv,
    # tune part): -7.93 at its best, then 719 and 3.5e6. "4.56e+05x its best (-7.78)" is no
    # multiple of anything; the difference is what the data shows
    nll = [-7.752036, -7.820761, -7.7039595, -7.6541286, -7.866893, -7.6999016, -7.7101583,
           -7.876931, -7.926651, 718.84845, 3543009.5]
    records = [Record(s, x) for s, x in enumerate(nll)]
    alerts = _engine_divergence(records)
    assert alerts == _engine_divergence(records, size=4) == _driven(records)
    raised = alerts[0]
    assert "x its best" not in raised["message"] and "x its best" not in raised["action"]["reason"]
    assert "3.54e+06 above its best (-7.88 at step 8)" in raised["message"]
    # a positive best keeps its multiple
    plain = [Record(s, x) for s, x in enumerate([2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3, 1.2, 300.0, 9e5])]
    assert "x its best" in _engine_divergence(plain)[0]["message"]


def test_the_level_and_the_escalation_say_a_negative_best_as_a_difference_too():
    # the same alert quotes how far above its best the loss is in several places; with a best
    # below zero every one of them is a difference, never "x its best" nor "x above it"
    shift = -1.5
    climb = [1.0] * 20 + [1.0 + 0.05 * k + (0.04 if k % 2 else -0.04) for k in range(1, 40)]
    sustained = [Record(s, x + shift) for s, x in enumerate(climb)]
    cut = [2.5, 2.4, 2.6, 3.1, 4.2] + [4.2] * 60
    lrs = [1e-3] * 5 + [1e-4] * 60
    escalated = [Record(s, x + 3 * shift, None, lr) for s, (x, lr) in enumerate(zip(cut, lrs, strict=True))]
    for records, events in ((sustained, ["raised"]), (escalated, ["raised", "escalated"])):
        alerts = _engine_divergence(records)
        assert alerts == _engine_divergence(records, size=7) == _driven(records)
        assert [a["event"] for a in alerts] == events
        for a in alerts:
            text = a["message"] + " " + a["action"]["reason"]
            assert "x its best" not in text and "x above it" not in text
            assert "above its best" in text


def test_an_excerpt_above_its_first_loss_is_a_warning_when_raised_as_when_it_would_escalate():
    # the same run-away logged from step 0 and as an excerpt beginning at step 10,000: the
    # excerpt's first loss is not the untrained model's, so neither the raising alert nor a later
    # record calls the run lost; the cut is advised either way
    r = random.Random(3)
    losses = [2.0 + 0.02 * r.uniform(-1, 1) for _ in range(40)]
    losses += [2.1, 2.3, 2.6, 3.0, 3.5, 4.1, 4.8, 5.6, 6.5] + [6.5] * 20
    for start, severity in ((0, "critical"), (10_000, "warning")):
        records = [Record(start + 10 * k, x) for k, x in enumerate(losses)]
        alerts = _engine_divergence(records)
        assert alerts == _engine_divergence(records, size=9) == _driven(records)
        assert [(a["event"], a["severity"]) for a in alerts] == [("raised", severity)]
        assert alerts[0]["action"]["factor"] < 1
