"""Overfitting: validation loss rising while the training loss keeps falling."""

from detector_helpers import raised, replay


def _run(val_of_step, n=1000, every=25):
    losses = [2.0 * 0.998 ** s + 0.05 for s in range(n)]
    vals = [val_of_step(s) if s % every == 0 else None for s in range(n)]
    return replay(losses, vals=vals)[1]


def test_val_rising_while_train_falls_warns_with_rollback_to_the_best_val_step():
    alerts = _run(lambda s: 1.0 - s / 1000 if s <= 400 else 0.6 + (s - 400) / 300)
    of = raised(alerts, "overfitting")
    assert len(of) == 1 and of[0].severity == "warning"
    assert of[0].action.type == "rollback" and of[0].action.params["to_step"] == 400


def test_noisy_but_flat_val_is_not_overfitting():
    noise = [0.0, 0.08, -0.05, 0.1, -0.08, 0.06, 0.0, -0.02]
    assert raised(_run(lambda s: 0.6 + noise[(s // 25) % 8]), "overfitting") == []


def test_val_rising_with_the_train_loss_is_not_overfitting():
    n = 1000
    losses = [1.0 + s / 200 for s in range(n)]
    vals = [1.0 + s / 150 if s % 25 == 0 else None for s in range(n)]
    assert raised(replay(losses, vals=vals)[1], "overfitting") == []


def _epochs(train, val, first_step=1):
    return replay(train, vals=val, steps=list(range(first_step, first_step + len(train))))[1]


def test_three_rises_from_the_best_while_the_training_loss_falls_at_each_warn_on_a_short_log():
    alerts = _epochs([0.68, 0.47, 0.35, 0.28, 0.22, 0.16], [0.57, 0.49, 0.51, 0.56, 0.64, 0.77])
    of = raised(alerts, "overfitting")
    assert [(a.step, a.evidence["rule"], a.action.params["to_step"]) for a in of] == [(5, "steady_rise", 2)]


def test_rises_while_the_training_loss_does_not_fall_at_each_evaluation_are_not_overfitting():
    # an unstable run: its training loss wanders (0.45, 0.58, 0.54, 0.57) while the val rises
    assert raised(_epochs([2.3, 0.45, 0.58, 0.54, 0.57], [2.3, 0.63, 0.66, 0.75, 1.06]), "overfitting") == []


def test_a_val_that_only_rose_from_the_untrained_evaluation_at_step_0_is_not_overfitting():
    # evaluated at step 0, before any update, then every 10 steps with training records between
    train, val = [0.68, 0.47, 0.35, 0.28, 0.22], [0.5, 0.52, 0.56, 0.64, 0.77]
    losses = [train[0] - (train[0] - train[-1]) * s / 40 for s in range(41)]
    vals = [val[s // 10] if s % 10 == 0 else None for s in range(41)]
    assert raised(replay(losses, vals=vals)[1], "overfitting") == []
    # evaluation lines every 10 steps, each printing the training and validation loss measured
    # on the same weights: at step 0 both are the untrained model's (equal to 1 %)
    lines = [0.503] + train[1:]
    assert raised(replay(lines, vals=val, steps=[0, 10, 20, 30, 40])[1], "overfitting") == []
    assert raised(_epochs(train, val, first_step=1), "overfitting")  # evaluated after an epoch
    # a table whose step-0 row prints an epoch's running training loss (0.68) beside its
    # evaluation (0.5) is a table of epochs, whatever unit its steps count in
    for steps in ([0, 1, 2, 3, 4], [0, 10, 20, 30, 40]):
        assert raised(replay(train, vals=val, steps=steps)[1], "overfitting"), steps


def test_a_table_whose_training_loss_rose_over_its_first_interval_has_an_untrained_first_row():
    # an SGD run at 100x its LR logged every 50th step (the benchmark's softmax, warm-up and
    # cosine): the first interval blew the model up, training 2.38 -> 7.48 and validation
    # 2.32 -> 8.33, which then settles 2.7x above the untrained model's evaluation
    train = [2.38, 7.48, 4.43, 4.53, 0.49, 4.01, 0.0, 2.28, 0.0, 0.35, 0.0, 0.0]
    val = [2.32, 8.33, 8.09, 13.15, 8.04, 8.09, 6.22, 6.41, 6.31, 6.59, 6.27, 6.36]
    steps = [50 * k for k in range(len(train))]
    assert raised(replay(train, vals=val, steps=steps)[1], "overfitting") == []
    # the same table with its first interval lowering the training loss is judged from row 0
    fell = [2.5] + train[1:]
    fell[1] = 2.4
    assert raised(replay(fell, vals=val, steps=steps)[1], "overfitting")


def test_a_table_of_epochs_numbered_from_0_has_a_trained_model_at_epoch_0():
    # Keras numbers epochs from 0 (a model card's "Epoch 0" row is the first epoch's result):
    # a distilgpt2 fine-tune of the tune part, val lowest after epoch 0 and rising on each epoch
    # while the training loss falls
    train, val = [3.4903, 2.591, 2.1133, 1.5857, 1.0852], [2.4602, 2.5912, 2.8207, 3.1597, 3.3317]
    of = raised(_epochs(train, val, first_step=0), "overfitting")
    assert [(a.step, a.action.params["to_step"]) for a in of] == [(3, 0)]


def test_an_evaluation_logged_alone_as_epoch_0_is_of_the_untrained_model():
    # a hand-written loop evaluates before it trains and logs it as epoch 0, with no training
    # loss on that row; the val only rose from there: not overfitting
    train, val = [None, 0.47, 0.35, 0.28, 0.22], [0.5, 0.52, 0.56, 0.64, 0.77]
    assert raised(_epochs(train, val, first_step=0), "overfitting") == []


def test_a_small_drift_against_the_progress_made_is_not_overfitting():
    # val fell 2.3 -> 0.19, then drifts 0.19 -> 0.2 -> 0.21 -> 0.22: 1.3 % of its progress
    train = [2.3, 0.5, 0.2, 0.15, 0.12, 0.1, 0.08]
    assert raised(_epochs(train, [2.3, 0.6, 0.19, 0.2, 0.21, 0.22, 0.22]), "overfitting") == []


def _drift_run(val_after_best):
    train = [0.7 * 0.9 ** e for e in range(1, 3 + len(val_after_best))]
    return _epochs(train, [1.35, 1.33] + val_after_best)


def test_a_slow_creep_far_outside_the_evaluations_noise_warns_after_the_steady_rise_rule_missed_it():
    # up 0.03 every other epoch, down 0.01 in between: never three rises in a row
    creep = [1.35 + 0.01 * k + (0.01 if k % 2 else 0.0) for k in range(14)]
    of = raised(_drift_run(creep), "overfitting")
    assert [(a.evidence["rule"], a.action.params["to_step"]) for a in of] == [("drift", 2)]
    assert of[0].evidence["val_fitted"] >= 1.1 * 1.33


def test_a_validation_loss_wandering_above_a_lucky_best_is_not_a_drift():
    # 15-25 % above a lucky best for 14 evaluations while the training loss falls 4x: no slope
    wander = [1.55, 1.62, 1.58, 1.66, 1.54, 1.6, 1.64, 1.57, 1.61, 1.55, 1.63, 1.59, 1.56, 1.62]
    assert raised(_drift_run(wander), "overfitting") == []


def test_the_drift_line_survives_a_saved_state():
    from losswatch.detectors.base import drive
    from losswatch.detectors.overfitting import OverfittingDetector
    from losswatch.detectors.types import Record
    creep = [1.35 + 0.01 * k + (0.01 if k % 2 else 0.0) for k in range(14)]
    recs = [Record(e, 0.7 * 0.9 ** e, val_loss=v) for e, v in enumerate([1.35, 1.33] + creep, 1)]
    whole = [(a.step, a.message) for a in drive(OverfittingDetector(), recs)]
    first = OverfittingDetector()
    drive(first, recs[:9])
    second = OverfittingDetector()
    second.set_state(first.get_state())
    assert [(a.step, a.message) for a in drive(second, recs[9:])] == whole != []


def test_a_drift_exactly_on_a_line_is_reported_without_an_infinite_ratio():
    # the training loss halves once and stays flat (no steady_rise); the val climbs a straight line
    val = [1.35, 1.33] + [1.35 + 0.02 * k for k in range(10)]
    train = [0.7, 0.6] + [0.3] * 10
    of = raised(_epochs(train, val), "overfitting")
    assert [a.evidence["rule"] for a in of] == ["drift"]
    assert of[0].evidence["slope_t"] is None and "no scatter" in of[0].message


def test_an_evaluation_so_large_that_the_drift_sums_overflow_is_no_drift():
    # one evaluation near 1e200 overflows the squared sums: no line can be fitted, so no alert
    # (it read as "a straight line, no scatter" drifting up to 3e199 while the val loss was 1.02)
    from losswatch.detectors.base import drive
    from losswatch.detectors.overfitting import OverfittingDetector
    from losswatch.detectors.types import Record
    val = [1.4, 1.0, 1.02, 1.01, 1.03, 1.02, 1.01, 1.02, 1.03, 1e200, 1.02]
    recs = [Record(e, 0.7 * 0.8 ** e, val_loss=v) for e, v in enumerate(val, 1)]
    assert [a for a in drive(OverfittingDetector(), recs) if a.evidence.get("rule") == "drift"] == []


def _bench_run(name):
    from pathlib import Path

    from losswatch.service.readers import read_run
    return list(read_run(Path(__file__).resolve().parent.parent / "bench" / "runs" / f"{name}.csv"))


def test_evaluations_that_stay_up_after_a_validation_spike_has_passed_are_overfitting():
    # a benchmark run (softmax, SGD, an injected spike; labelled overfitting: its last three
    # evaluations average 25 % above its best): val 0.164 at its best, a spike to 1.0, then the
    # evaluations settle near 0.21-0.23, up and down around the bar, not falling back
    from detector_helpers import in_batches, one_at_a_time
    recs = _bench_run("softmax-sgd-spike-x1-s0")
    evals = [(r.step, r.val_loss) for r in recs if r.val_loss is not None]
    spike_step = max(evals, key=lambda e: e[1])[0]
    ov = raised(one_at_a_time(recs)[1], "overfitting")
    assert [(a.evidence["rule"], a.action.type) for a in ov] == [("held_above", "rollback")]
    # judged after the spike's own evaluation left the last three
    assert sum(1 for s, _ in evals if spike_step < s <= ov[0].step) >= 3
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 7, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


def test_a_passed_spike_survives_a_saved_state():
    from losswatch.detectors.base import drive
    from losswatch.detectors.overfitting import OverfittingDetector
    recs = _bench_run("softmax-sgd-spike-x1-s0")
    first = OverfittingDetector()
    drive(first, recs[:500])  # inside the streak that follows the spike
    state = first.get_state()
    assert state["since_peak"] >= 3 and state["peak"] > 0.9
    second = OverfittingDetector()
    second.set_state(state)
    assert second.get_state() == state
    older = {k: v for k, v in state.items() if k not in ("peak", "since_peak", "last_raw", "falls")}
    second.set_state(older)  # a state saved before the rule judged a passed spike: no passed spike
    assert second.since_peak == 0


def test_the_advice_says_memorising_only_when_it_saw_the_training_loss_fall():
    val = [0.57, 0.49, 0.51, 0.56, 0.64, 0.77]
    without = raised(replay(vals=val)[1], "overfitting")
    with_train = raised(replay([1.0 - 0.1 * k for k in range(6)], vals=val)[1], "overfitting")
    assert without and with_train
    assert "memorising" not in without[0].action.reason and "no training loss" in without[0].action.reason
    assert "memorising" in with_train[0].action.reason
