"""Detectors on real log excerpts from the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md): each test is one class of failure the corpus taught, checked on a file a
user really posted. The holdout part is never read here."""

import sys
from pathlib import Path

import pytest

from detector_helpers import raised
from losswatch.detectors import Engine
from losswatch.service.readers import read_run

REAL = Path(__file__).resolve().parent.parent / "bench" / "real"
sys.path.insert(0, str(REAL))
from split import part_of  # noqa: E402


def _replay(rel: str):
    assert part_of(rel) == "tune", f"{rel} is in the untouched holdout part"
    eng = Engine("r")
    alerts = []
    for rec in read_run(REAL / rel):
        alerts += eng.update(rec)
    return alerts


def test_a_cnn_frozen_at_ln_10_every_epoch_is_dead_from_its_sixth_identical_epoch():
    alerts = _replay("histories/unknown__ship-cnn-jekyll-post__model-7.csv")
    dead = raised(alerts, "dead", "warning")
    assert dead and dead[0].step <= 7 and "2.3" in dead[0].message
    assert dead[0].action.type == "stop"  # it never blew up: check the data and the init


def test_a_log_that_repeats_the_last_evaluation_on_every_line_is_not_a_dead_run():
    # litgpt: the val loss 2.861 is printed with each training line while the training loss moves
    assert raised(_replay("issues/lightning-ai__litgpt__1607.csv"), min_severity="warning") == []


def test_a_loss_that_explodes_past_10x_its_first_value_is_a_divergence_on_the_next_record():
    # 0.14 -> 25,238 -> 75,835: the lowest verdicts were spike warnings with "skip the batch"
    alerts = _replay("issues/tensorflow__models__8423.csv")
    div = raised(alerts, "divergence", "critical")
    assert div and div[0].step == 410 and div[0].evidence["rule"] == "first_loss"
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1


def test_a_nan_grad_norm_with_a_finite_loss_is_a_warning_on_its_record():
    nan = raised(_replay("issues/zai-org__glm-4__174.csv"), "nan")
    assert nan and nan[0].step == 5 and nan[0].severity == "warning"


CS336_LR_01 = "histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv"


def test_a_loss_that_climbs_back_as_the_warm_up_passes_the_stable_lr_is_an_lr_too_high():
    # CS336 sweep at peak LR 0.1: 5.17 -> 4.09 at step 90 (LR 0.036), back up to ~4.8 as the LR
    # reaches 0.1, and there until the cosine decay; it was told "raise the LR x10"
    alerts = _replay(CS336_LR_01)
    osc = raised(alerts, "oscillation", "warning")
    assert len(osc) == 1 and osc[0].evidence["rule"] == "relapse"
    assert osc[0].action.type == "scale_lr" and osc[0].action.params["factor"] < 1
    assert osc[0].step <= 1000 and osc[0].evidence["best_lr"] < 0.05 <= osc[0].evidence["lr"]
    assert "LR too high: unstable" in osc[0].message and "not lost" in osc[0].message
    assert not [a for a in alerts if a.action.direction == "up"]  # no "the LR is too small"
    # the episode ends once the cosine decay has brought the LR back down
    end = [a for a in alerts if a.id == osc[0].id and a.resolved_step is not None]
    assert len(end) == 1 and end[0].evidence["resolution"].startswith("LR back down")


def test_a_restored_engine_keeps_where_the_loss_was_lowest():
    # the relapse rule keeps the LR at the raw best in the oscillation detector's own state
    recs = list(read_run(REAL / CS336_LR_01))
    eng, out = Engine("r"), []
    for k in range(0, len(recs), 37):
        eng = Engine.from_bytes(eng.to_bytes())
        out += eng.update_batch(recs[k:k + 37])
    assert [(a.id, a.event, a.last_step) for a in out] == [(a.id, a.event, a.last_step) for a in _replay(CS336_LR_01)]


@pytest.mark.parametrize("rel", ["histories/unknown__ship-cnn-jekyll-post__model-7.csv",
                                 "issues/tensorflow__models__8423.csv", CS336_LR_01])
def test_the_batch_path_gives_the_same_alerts_on_real_excerpts(rel):
    one = [(a.id, a.severity, a.last_step) for a in _replay(rel)]
    eng = Engine("r")
    eng.SMALL_BATCH = 0  # these excerpts are short: force the vectorised path
    batch = [(a.id, a.severity, a.last_step) for a in eng.update_batch(list(read_run(REAL / rel)))]
    assert batch == one


def test_a_validation_loss_rising_every_epoch_while_the_training_loss_falls_is_overfitting():
    # an LSTM's epoch log: val 1.87 at epoch 4, then up on every epoch while train falls; the
    # smoothed rule needs the val 25 % up for three evaluations, which came only at the last row
    alerts = _replay("histories/derekchen14__snippet_rnn__results-0508-results__lstm64-multi-adam-droprec02.csv")
    of = raised(alerts, "overfitting", "warning")
    assert of and of[0].step <= 8 and of[0].evidence["rule"] == "steady_rise"
    assert of[0].action.type == "rollback" and of[0].action.params["to_step"] == 4


def test_an_epoch_log_whose_first_evaluation_is_its_best_still_overfits():
    # six epochs of a Keras model: val lowest after epoch 1, then up every epoch while the
    # training loss falls 0.44 -> 0.04; epoch 1 is a trained model, not the untrained one
    alerts = _replay("issues/lyhue1991__eat_tensorflow2_in_30_days__69__original.csv")
    of = raised(alerts, "overfitting", "warning")
    assert of and of[0].step == 4 and of[0].action.params["to_step"] == 1


def test_a_converged_loss_printed_with_four_decimals_is_not_a_frozen_run():
    # a CodeBERT fine-tune's trainer_state: the logged loss (rounded to 4 decimals) reads 0.0003
    # for six lines while the model memorises; 0.0003 has one significant digit, no frozen output
    alerts = _replay("histories/diegoarteagamendoza__analisisdetacticasensoftwareclinicoutilizandocodebert__trainer-state.csv")
    assert raised(alerts, "dead") == []


def test_a_fine_tunes_warm_up_noise_under_a_calm_grad_norm_is_not_a_divergence():
    # Qwen3 LoRA warm-up lines: loss 1.13 -> 1.57 in three records while the grad-norm stays
    # 0.48-0.75 and the LR ramps; the loss is back at 1.26 two lines later
    alerts = _replay("issues/unslothai__unsloth__2955.csv")
    assert [a for a in alerts if a.severity != "info" and a.action.direction != "none"] == []


def test_the_drop_at_an_epoch_boundary_of_a_fine_tune_is_not_a_too_slow_lr():
    # a 3-epoch instruction fine-tune: flat ~1.05 in epoch 1, a step down to ~0.7 at the epoch
    # boundary (step 406), the usual memorisation of a fixed set; between steps 256 and 512 the
    # loss fell 1.09 -> 0.72, which read as "the LR is limiting training, raise it x3"
    rel = "histories/yc1999__stanford_alpaca__output-trainer-state.csv"
    alerts = _replay(rel)
    assert not [a for a in alerts if a.detector == "slow_progress"]
    assert not [a for a in alerts if a.action.direction == "up"]
    # without the steadiness test the step at the boundary is "a pace"
    eng = Engine("r", params={"slow_progress": {"steady": 0.0}})
    lumpy = [a for rec in read_run(REAL / rel) for a in eng.update(rec) if a.detector == "slow_progress"]
    assert [(a.step, a.action.params["factor"]) for a in lumpy[:1]] == [(512, 3.0)]
