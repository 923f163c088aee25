"""The detection benchmark: its labelling rules, the committed runs, and the regression guard.

Three parts:

* the objective labelling rules of bench/labels.py on small synthetic curves whose answer is
  known by construction, and the scorer's bookkeeping on hand-made alert episodes;
* the committed runs and labels are consistent (enough runs, families and scenarios; labels are
  what the rules give on the CSVs; replay in chunks equals replay one record at a time);
* the regression guard: the scorer's figures on the committed benchmark meet the targets (bench/score.py TARGETS),
  and the public logs draw no LR action where none is needed while every divergence is caught.

Needs numpy and losswatch.detectors, not torch: the runs are committed CSVs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from detector_helpers import BENCH, load_bench_script

labels = load_bench_script("labels")
score = load_bench_script("score")
gen_runs = load_bench_script("gen_runs")
public_logs = load_bench_script("public_logs")
PUBLIC = public_logs.DEFAULT_DIR  # ../shared/data/public-logs, or $LOSSWATCH_PUBLIC_LOGS
from gen.policies import lr_at  # noqa: E402  (bench/ is on sys.path now)


def decay(n=400, start=2.3, end=0.3, tau=60.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = end + (start - end) * np.exp(-t / tau)
    return list(y * (1 + noise * rng.standard_normal(n)))


# --------------------------------------------------------------------------- labelling rules
def test_first_nonfinite_finds_nan_and_inf_only():
    assert labels.first_nonfinite([1.0, 2.0, 3.0]) == None  # noqa: E711
    assert labels.first_nonfinite([1.0, float("inf"), float("nan")]) == 1
    assert labels.first_nonfinite([1.0, 0.5, float("nan"), 0.4]) == 2


def test_healthy_decay_is_not_lost_even_when_noisy():
    assert labels.lost_step(decay()) is None
    # minibatch noise of 30 %: a lucky low must not become the "best" the run is held to
    assert labels.lost_step(decay(noise=0.3, seed=3)) is None


def test_divergence_is_lost_where_the_loss_leaves_for_good():
    y = decay(n=400)
    y[250:] = list(0.3 + np.linspace(0, 5, 150))  # climbs steadily from step 250
    d = labels.lost_step(y)
    assert d is not None and 250 <= d <= 300


def test_a_run_far_worse_than_its_start_is_lost_however_noisy():
    rng = np.random.default_rng(1)
    y = [4.6, 4.3, 3.9] + list(10 + 3 * rng.standard_normal(397))  # an RNN blown up at step 3
    assert labels.lost_step(y) == 3
    # the same noise around a level below the start is not lost
    assert labels.lost_step([4.6, 4.3, 3.9] + list(3.5 + 0.5 * rng.standard_normal(397))) is None


def test_jump_to_nan_is_lost_at_the_first_nan():
    y = decay(n=300)
    y[200:] = [float("nan")] * 100
    assert labels.lost_step(y) == 200


def test_recovered_spike_is_not_lost_but_is_a_transient_spike():
    y = decay(n=400, noise=0.02)
    y[200] = 6.0
    y[201:206] = [3.0, 1.5, 0.8, 0.5, 0.4]
    assert labels.lost_step(y) is None
    assert labels.spike_steps(y) == [200]


def test_spike_that_never_recovers_is_not_transient():
    y = decay(n=400, noise=0.02)
    y[200:] = [4.0] * 200
    assert labels.spike_steps(y) == []
    assert labels.lost_step(y) is not None


def test_clearly_lower_needs_a_real_gap():
    l0 = 2.3
    assert labels.clearly_lower(0.2, 0.5, l0)  # 2.5x lower
    assert not labels.clearly_lower(0.49, 0.5, l0)  # within noise
    assert not labels.clearly_lower(0.5, 0.2, l0)  # higher, not lower
    assert labels.clearly_lower(0.5, math.inf, l0)  # anything finite beats a lost run
    assert not labels.clearly_lower(math.inf, math.inf, l0)
    # halving is clear whatever the noise; a 40 % gap only when it stands 3 se above the noise
    assert labels.clearly_lower(0.2, 0.45, l0, se=1.0)
    assert not labels.clearly_lower(0.3, 0.5, l0, se=0.1)
    assert labels.clearly_lower(0.3, 0.5, l0, se=0.01)
    assert not labels.clearly_lower(0.45, 0.5, l0, se=0.0)  # 10 %: neither a tenth of the progress nor 1.5x
    # an absolute floor: tiny losses a factor apart are not a meaningful difference
    assert not labels.clearly_lower(0.001, 0.003, l0)


def test_lr_labels_follow_the_siblings():
    ladder = ["d10", "x1", "x10", "x100"]
    cfg = {"ladder": ladder}
    finals = {"d10": 1.5, "x1": 0.4, "x10": 0.5, "x100": math.inf}
    assert labels.lr_labels("d10", cfg, finals, 2.3)["condition"] == "lr_too_low"
    assert "condition" not in labels.lr_labels("x1", cfg, finals, 2.3)
    assert "condition" not in labels.lr_labels("x10", cfg, finals, 2.3)  # 0.4 vs 0.5: not clear
    assert labels.lr_labels("x100", cfg, finals, 2.3)["condition"] == "lr_too_high"
    # a lost /10 sibling is skipped: the nearest lower rung that is not lost decides
    finals2 = {"d10": 1.5, "x1": 0.4, "x10": math.inf, "x100": math.inf}
    out = labels.lr_labels("x100", cfg, finals2, 2.3)
    assert out["condition"] == "lr_too_high" and "x1" in out["rule"]
    # raising by 10x kills the run: not "too low"
    assert "condition" not in labels.lr_labels("x1", cfg, finals2, 2.3)
    # a lower rung dead at chance (ends at its start) is skipped too: x100 and x10 both sat at
    # 2.3 while x1 learned; x100 is "too high", not healthy
    finals3 = {"d10": 1.5, "x1": 0.4, "x10": 2.29, "x100": 2.31}
    out = labels.lr_labels("x100", cfg, finals3, 2.3)
    assert out["condition"] == "lr_too_high" and "x1" in out["rule"]


def test_schedule_bug_rule_on_the_generators_policies():
    n = 600
    for policy in ("constant", "cyclic", "one_cycle", "warmup_cosine", "multistep"):
        lr = [lr_at(policy, 0.1, n, s) for s in range(n)]
        assert labels.schedule_bug(lr) is None, policy
    jump = labels.schedule_bug([lr_at("lr_jump", 0.1, n, s) for s in range(n)])
    assert jump["kind"] == "jump" and jump["onset"] == n // 2 and jump["direction"] == "down"
    for policy in ("step_per_batch", "linear_short"):
        bug = labels.schedule_bug([lr_at(policy, 0.1, n, s) for s in range(n)])
        assert bug["kind"] == "early_zero" and bug["onset"] < 0.6 * n and bug["direction"] == "up", policy


def test_overfitting_needs_falling_train_and_rising_val():
    steps = list(range(400))
    loss = decay(n=400, end=0.05)
    val_curve = {s: 2.3 * math.exp(-s / 40) + 0.2 + max(0, s - 150) * 0.004 for s in range(0, 400, 25)}
    val = [val_curve.get(s) for s in steps]
    of = labels.overfitting_onset(steps, val, loss)
    assert of is not None and 125 <= of["onset_step"] <= 175
    flat_val = [None if v is None else 2.3 * math.exp(-s / 40) + 0.2 for s, v in zip(steps, val)]
    assert labels.overfitting_onset(steps, flat_val, loss) is None


def _write(path: Path, loss, lr=0.1, val_every=25):
    with open(path, "w") as f:
        f.write("step,loss,grad_norm,lr,val_loss\n")
        for s, v in enumerate(loss):
            val = "" if s % val_every else "%.6g" % v
            f.write(f"{s},{v:.6g},1,{lr},{val}\n")


def test_label_runs_end_to_end_on_a_synthetic_ladder(tmp_path):
    n = 300
    slow = decay(n=n, end=1.2, tau=400)  # LR too low: barely moves
    good = decay(n=n, end=0.2, tau=40)
    bad = decay(n=n, end=0.2, tau=40)
    bad[150:] = [float("nan")] * (n - 150)
    ids = ["t-d10", "t-x1", "t-x10"]
    for rid, y, lr in zip(ids, (slow, good, bad), (0.01, 0.1, 1.0)):
        _write(tmp_path / f"{rid}.csv", y, lr=lr)
    cfgs = [{"run_id": rid, "family": "t", "optimizer": "sgd", "scenario": "lr_ladder", "policy": "constant",
             "base_lr": 0.1, "lr_mult": m, "lr": 0.1 * m, "seed": 0, "declared_schedule": None, "ladder": ids,
             "siblings": {}, "injection": None} for rid, m in zip(ids, (0.1, 1, 10))]
    out = labels.label_runs(cfgs, tmp_path)
    assert out["t-d10"]["conditions"] == ["lr_too_low"] and out["t-d10"]["expected_direction"] == "up"
    assert out["t-x1"]["conditions"] == ["healthy"] and out["t-x1"]["expected_direction"] == "none"
    assert "nan" in out["t-x10"]["conditions"] and "lr_too_high" in out["t-x10"]["conditions"]
    assert out["t-x10"]["nan_step"] == 150 and out["t-x10"]["deadline_step"] == 150
    assert out["t-x10"]["expected_direction"] == "down"


# --------------------------------------------------------------------------- the scorer's bookkeeping
def _ep(kind, step, sev="warning", action=None):
    return {"id": f"r:{kind}:{step}", "kind": kind, "step": step, "max_sev": sev,
            "warn_at": step if sev != "info" else None, "warn_action": action if sev != "info" else None,
            "message": "", "first_action": action}


def test_direction_of_actions():
    assert score.direction_of({"type": "scale_lr", "factor": 0.1}) == "down"
    assert score.direction_of({"type": "scale_lr", "factor": 3}) == "up"
    assert score.direction_of({"type": "rollback", "to_step": 10}) == "down"
    assert score.direction_of({"type": "clip_grad_norm", "max_norm": 1}) == "none"
    assert score.direction_of(None) == "none"


def test_score_run_nan_must_fire_on_the_very_step():
    lab = {"conditions": ["nan"], "nan_step": 100, "evidence": {}}
    hit = score.score_run(lab, {"a": _ep("nan", 100, "critical", {"type": "stop"})})
    late = score.score_run(lab, {"a": _ep("nan", 101, "critical", {"type": "stop"})})
    assert hit["detected"]["nan"] == 100 and late["detected"]["nan"] is None


def test_score_run_unexplained_alerts_are_false_positives_and_wrong_direction_counts():
    lab = {"conditions": ["lr_too_high"], "nan_step": None, "evidence": {}}
    res = score.score_run(lab, {"a": _ep("plateau", 50, action={"type": "scale_lr", "factor": 3.0}),
                                "b": _ep("oscillation", 80, action={"type": "scale_lr", "factor": 0.3})})
    assert res["detected"]["lr_too_high"] == 80
    assert "lr_too_low" in res["predicted"]  # a plateau on a too-high run is a wrong diagnosis
    assert [e["kind"] for e in res["false_alarms"]] == ["plateau"]
    assert res["direction"][0] == "up"  # the first LR advice pointed the wrong way
    healthy = {"conditions": ["healthy"], "nan_step": None, "evidence": {}}
    res = score.score_run(healthy, {"a": _ep("spike", 10, "info")})
    assert res["false_alarms"] == [] and res["predicted"] == {"spike_transient"}


# --------------------------------------------------------------------------- committed data
@pytest.fixture(scope="module")
def committed():
    return json.loads((BENCH / "runs" / "labels.json").read_text())["runs"]


def test_committed_runs_cover_every_condition(committed):
    assert len(committed) >= 150
    assert len({r["family"] for r in committed.values()}) >= 5
    assert {"softmax", "rnn", "gpt"} <= {r["family"] for r in committed.values()}
    scenarios = {r["scenario"] for r in committed.values()}
    assert {"lr_ladder", "look_sick", "schedule_bug", "nan_batch", "nan_batch_skipped", "spike"} <= scenarios
    conds = {c for r in committed.values() for c in r["conditions"]}
    assert {"healthy", "nan", "divergence", "lr_too_high", "lr_too_low", "spike_transient", "lr_schedule_bug"} <= conds
    policies = {r["policy"] for r in committed.values() if "healthy" in r["conditions"]}
    assert {"cyclic", "one_cycle", "warmup_cosine", "multistep"} <= policies  # look-sick runs that are healthy
    csvs = list((BENCH / "runs").glob("*.csv"))
    assert {p.stem for p in csvs} >= set(committed)
    assert sum(p.stat().st_size for p in csvs) < 15e6


holdout = load_bench_script("holdout")


@pytest.mark.parametrize("seeds", [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11)])
def test_held_out_runs_and_labels_are_committed_and_consistent(seeds):
    tag = "s" + "-s".join(map(str, seeds))
    committed_labels = json.loads((BENCH / "holdout" / f"labels-{tag}.json").read_text())["runs"]
    configs = holdout.holdout_plan(seeds)
    assert len(committed_labels) == len(configs) == 288  # every planned run was trained and labelled
    fresh = json.loads(json.dumps(labels._json_safe(labels.label_runs(configs, holdout.RUNS_DIR))))
    for rid, lab in committed_labels.items():
        assert fresh[rid]["conditions"] == lab["conditions"], rid
    # the committed results are today's: a detector change that moves them must re-run the
    # held-out check and commit what it says (never a silent change)
    with_meta = score.score(committed_labels, runs_dir=holdout.RUNS_DIR)
    without = score.score(committed_labels, runs_dir=holdout.RUNS_DIR, optimizer_meta=False)
    md = holdout.report(with_meta, without, len(committed_labels), seeds)
    assert md == (BENCH / "results" / f"holdout-{tag}.md").read_text()


def test_committed_labels_are_what_the_rules_give(committed):
    fresh = labels.label_runs(gen_runs.plan())
    fresh = json.loads(json.dumps(labels._json_safe(fresh)))
    assert set(fresh) == set(committed)
    for rid in committed:
        for key in ("conditions", "deadline_step", "nan_step", "lost_step", "expected_direction"):
            assert fresh[rid][key] == committed[rid][key], (rid, key)


def test_chunked_replay_equals_one_record_at_a_time(committed):
    # one run per kind of trouble: the Engine contract says update_batch == update one by one,
    # which is what makes the scorer's chunked replay causal
    picks = {}
    for rid, r in sorted(committed.items()):
        for c in ("nan", "divergence", "lr_schedule_bug", "spike_transient", "healthy"):
            if c in r["conditions"] and c not in picks:
                picks[c] = rid
    # and an SGD run the optimizer-metadata rule (sgd_efficiency) fires on
    picks["lr_too_low"] = next(rid for rid, r in sorted(committed.items())
                               if "lr_too_low" in r["conditions"] and r["optimizer"] == "sgd")
    for rid in picks.values():
        cols = labels.read_run(BENCH / "runs" / f"{rid}.csv")
        meta = score.run_meta(committed[rid])
        a = score._final_state(score.replay(rid, cols, meta, chunk=64))
        b = score._final_state(score.replay(rid, cols, meta, chunk=1))
        assert a == b, rid


# --------------------------------------------------------------------------- regression guard
@pytest.fixture(scope="module")
def figures(committed):
    return score.score(committed)


# Targets the detectors do not reach yet, with the figure committed when that was
# found (bench/results/detection.md says so in words). Their target test is a STRICT xfail: the
# day a change reaches the target it turns red, and the entry must go. Meanwhile the figure may
# not fall below what was committed: a later change cannot make it worse without saying so here.
NOT_YET_MET: dict[str, float] = {}
# lr_too_low_f1 (0.735) left it with sgd_efficiency; false_alarms_per_10k (1.038) once ten times the
# first loss waited through a bad batch's kick (0.83: 4 episodes on 48,200 healthy steps)
#: figures where lower is better: "no worse" means "not above the committed figure"
LOWER_IS_BETTER = {"false_alarms_per_10k"}

#: LR too low without optimizer metadata (the SGD-efficiency rule needs it): the figure before
#: that rule. A user who passes no optimizer must not get worse detection than that.
LR_TOO_LOW_F1_WITHOUT_OPTIMIZER_META = 0.735


def _target_param(name):
    if name in NOT_YET_MET:
        return pytest.param(name, marks=pytest.mark.xfail(
            strict=True, reason=f"{name}: target not reached yet (committed {NOT_YET_MET[name]})"))
    return name


@pytest.mark.parametrize("target", [_target_param(t) for t in list(score.TARGETS) + ["divergence_median_lead_positive"]])
def test_detection_meets_the_target(figures, target):
    t = figures["targets"][target]
    assert t["met"], f"{target}: {t['value']} (required {t['target']}); see bench/results/detection.md"


@pytest.mark.parametrize("target", sorted(NOT_YET_MET) or [
    pytest.param(None, marks=pytest.mark.skip(reason="every target is met on the benchmark: no floor to keep"))])
def test_unmet_target_is_no_worse_than_committed(figures, target):
    t = figures["targets"][target]
    if target in LOWER_IS_BETTER:
        assert t["value"] <= NOT_YET_MET[target], f"{target} rose to {t['value']} (committed {NOT_YET_MET[target]})"
    else:
        assert t["value"] >= NOT_YET_MET[target], f"{target} fell to {t['value']} (committed {NOT_YET_MET[target]})"


def test_lr_too_low_without_optimizer_metadata_is_no_worse_than_before_it(committed):
    fig = score.score(committed, optimizer_meta=False)
    f1 = fig["targets"]["lr_too_low_f1"]["value"]
    assert f1 >= LR_TOO_LOW_F1_WITHOUT_OPTIMIZER_META, f1
    # the rule stays out without the metadata: recall is the loss-shape rules' alone (0.59; 0.77 with it)
    assert fig["conditions"]["lr_too_low"]["recall"] < 0.65


@pytest.fixture(scope="module")
def public():
    if not PUBLIC.is_dir():
        pytest.skip(f"public logs not present at {PUBLIC}")
    return public_logs.run_all(PUBLIC)


def test_public_logs_no_lr_action_on_healthy_or_self_recovering(public):
    assert public["no_scale_lr_on_healthy_or_recovered"], public["healthy_or_recovered_with_scale_lr"]


def test_public_logs_every_bloom_divergence_caught(public):
    assert public["all_divergences_caught"], public["divergences_missed"]
    assert not public["unknown_files"]
