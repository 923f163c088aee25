"""NaN detector: alert on the very step, roll back to the last healthy step, one per episode."""

import math

from detector_helpers import raised, replay


def test_nan_loss_fires_on_the_very_step_with_rollback_to_the_last_finite_step():
    losses = [2.0, 1.9, 1.8, math.nan, math.nan, 1.7]
    _, alerts = replay(losses)
    nan = raised(alerts, "nan")
    assert len(nan) == 1  # one alert per episode, not per NaN step
    assert nan[0].step == 3 and nan[0].severity == "critical"
    assert nan[0].action.type == "rollback" and nan[0].action.params == {"to_step": 2}


def test_nan_after_the_loss_ran_away_rolls_back_to_the_best_level_not_the_last_finite_step():
    # a healthy descent to ~0.5 by step 59, then 40 steps of blow-up, then overflow
    losses = [2.0 * 0.97 ** t + 0.5 for t in range(60)] + [0.6 * 1.5 ** k for k in range(40)] + [math.nan]
    _, alerts = replay(losses)
    nan = raised(alerts, "nan")[0]
    to = nan.action.params["to_step"]
    assert nan.action.type == "rollback" and to < 62, to  # before the blow-up, not step 99
    assert nan.evidence["rollback_reason"] == "ran_away"
    assert f"step {to}" in nan.action.reason


def test_infinite_loss_counts_and_nan_from_the_start_says_stop():
    _, alerts = replay([math.inf])
    assert raised(alerts, "nan")[0].action.type == "stop"


def test_episode_rearms_after_recovery_and_a_second_nan_is_a_new_alert():
    losses = [2.0, math.nan] + [1.9] * 6 + [math.nan]
    _, alerts = replay(losses)
    nan = raised(alerts, "nan")
    assert [a.step for a in nan] == [1, 8]
    resolved = [a for a in alerts if a.kind == "nan" and a.resolved_step is not None]
    assert resolved and resolved[0].resolved_step == 6  # 5 finite records after the NaN


def test_an_isolated_nonfinite_grad_norm_is_a_warning_without_action_repeated_ones_are_critical():
    # one fp16 overflow (grad-norm inf, loss finite) is routine: a warning on the record, no action
    _, alerts = replay([2.0] * 10, gns=[1.0] * 4 + [math.inf] + [1.0] * 5)
    nan = raised(alerts, "nan")
    assert [(a.step, a.severity, a.action.type) for a in nan] == [(4, "warning", "none")]
    # three in a row: the scaler is not recovering -> the same alert turns critical, rollback to
    # before the first of them
    _, alerts = replay([2.0] * 10, gns=[1.0] * 4 + [math.inf] * 3 + [1.0] * 3)
    nan = [a for a in alerts if a.kind == "nan" and a.resolved_step is None]
    assert len({a.id for a in nan}) == 1
    assert [(a.last_step, a.severity) for a in nan] == [(4, "warning"), (6, "critical")]
    assert nan[-1].action.type == "rollback" and nan[-1].action.params == {"to_step": 3}


def test_a_loss_of_exactly_zero_with_a_nan_grad_norm_is_critical_on_the_record():
    _, alerts = replay([2.1, 2.0, 0.0], gns=[1.0, 1.0, math.nan])
    nan = raised(alerts, "nan")
    assert [(a.step, a.severity, a.action.type) for a in nan] == [(2, "critical", "rollback")]
    assert "exactly 0" in nan[0].message


def test_missing_loss_is_not_nan():
    _, alerts = replay([2.0, None, None, 1.9])
    assert raised(alerts, "nan") == []


def test_a_nan_validation_loss_beside_a_finite_training_loss_is_a_warning_without_action():
    # an evaluation that overflows (fp16/AMP) while training goes on: the eval is broken, not
    # the weights; a later finite evaluation ends the episode
    _, alerts = replay([2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3, 1.2],
                       vals=[2.5, math.nan, math.nan, 2.2, None, None, None, None, None])
    nan = raised(alerts, "nan")
    assert [(a.step, a.severity, a.action.type) for a in nan] == [(1, "warning", "none")]
    assert nan[0].message.startswith("validation loss is NaN at step 1")
    resolved = [a.resolved_step for a in alerts if a.kind == "nan" and a.resolved_step is not None]
    assert resolved == [7]  # 5 records after the last bad one, the last evaluation finite


def test_a_sparse_nan_validation_loss_is_one_episode_until_an_evaluation_comes_back_finite():
    # evaluated every 10th record, NaN each time: one warning, not one per evaluation, and it
    # does not resolve between evaluations however many finite training losses come
    n = 40
    vals = [math.nan if s % 10 == 0 else None for s in range(n)]
    _, alerts = replay([2.0 - 0.01 * s for s in range(n)], vals=vals)
    nan = [a for a in alerts if a.kind == "nan"]
    assert [(a.step, a.severity, a.resolved_step) for a in nan] == [(0, "warning", None)]
    vals[30] = 1.5  # the fourth evaluation is finite, 10 records after the last NaN: it ends there
    _, alerts = replay([2.0 - 0.01 * s for s in range(n)], vals=vals)
    assert [a.resolved_step for a in alerts if a.kind == "nan" and a.resolved_step is not None] == [30]


def test_a_nan_validation_loss_beside_a_training_loss_of_exactly_zero_is_critical():
    _, alerts = replay([2.1, 2.0, 0.0, 0.0], vals=[None, None, None, math.nan])
    nan = raised(alerts, "nan")
    assert [(a.step, a.severity, a.action.type) for a in nan] == [(3, "critical", "stop")]
    assert "exactly 0" in nan[0].message


def test_a_nan_training_loss_escalates_a_validation_warning_to_the_same_alert():
    _, alerts = replay([2.0, 1.9, math.nan], vals=[math.nan, None, None])
    nan = [a for a in alerts if a.kind == "nan"]
    assert len({a.id for a in nan}) == 1
    assert [(a.last_step, a.severity) for a in nan] == [(0, "warning"), (2, "critical")]
