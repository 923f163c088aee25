"""Spike detector: one alert per one-step jump, clip advice sized from the run's grad-norms."""

import math

import pytest

from detector_helpers import healthy_curve, in_batches, one_at_a_time, raised, replay, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record


def test_spike_fires_once_and_resolves_when_the_loss_is_back():
    losses, gns, lrs = healthy_curve(600, seed=4)
    losses[400] = losses[399] * 1.6
    _, alerts = replay(losses, gns, lrs)
    spikes = raised(alerts, "spike")
    assert [a.step for a in spikes] == [400]
    # one transient spike is a note, not an alarm
    assert spikes[0].severity == "info" and spikes[0].action.type == "clip_grad_norm"
    # max_norm from the run's own grad-norms (~1.0, log-sd ~0.15): above typical, same order
    assert 1.2 <= spikes[0].action.params["max_norm"] <= 3.0
    assert any(a.kind == "spike" and a.resolved_step == 401 for a in alerts)


def test_noise_and_gradual_rises_are_not_spikes():
    losses, gns, lrs = healthy_curve(2000, seed=5, noise=0.05)
    assert raised(replay(losses, gns, lrs)[1], "spike") == []
    ramp = [1.0 + 0.01 * s for s in range(200)]  # +100% over 200 steps: not sudden
    assert raised(replay(ramp)[1], "spike") == []


def test_spike_without_grad_norm_suggests_skipping_the_batch():
    losses = [3.0, 3.01, 2.99, 3.0, 3.02, 2.98, 3.0, 4.5, 3.0]
    spikes = raised(replay(losses)[1], "spike")
    assert [a.step for a in spikes] == [7] and spikes[0].action.type == "skip_batch"


def test_a_burst_of_spikes_well_above_the_runs_own_rate_is_a_warning():
    losses, gns, lrs = healthy_curve(1200, seed=4)
    for s in (300, 700):  # two isolated data spikes: notes
        losses[s] *= 1.6
    for s in range(1000, 1100, 20):  # then five in 100 records, with 872 records of baseline,
        losses[s] *= 3.0  # each undoing over 20 % of the progress made
    spikes = raised(replay(losses, gns, lrs)[1], "spike")
    assert [a.severity for a in spikes if a.step < 1000] == ["info", "info"]
    warned = [a for a in spikes if a.severity == "warning"]
    assert [a.step for a in warned] == [1060]  # one warning for the burst, not one per spike
    assert warned[0].evidence["spikes_in_window"] == 4


def _steady_spikes(burst_at: list[int]) -> list:
    """A 3,000-record healthy run with a data spike every 140 records (the 1.5B GPT-2 speedrun's
    rate: 72 in 10,174) up to record 1,900, then the spikes at ``burst_at``."""
    losses, gns, lrs = healthy_curve(3000, seed=4)
    for s in list(range(100, 1900, 140)) + burst_at:
        losses[s] *= 3.0
    return raised(replay(losses, gns, lrs)[1], "spike")


def test_four_spikes_in_a_window_at_the_runs_own_steady_rate_are_chance_not_a_burst():
    # 13 spikes in 1,872 records before the window: ~1 per window, so four in one window come
    # about once in 50 windows by chance (Poisson), though it is 4x the rate the run showed
    spikes = _steady_spikes([2000, 2030, 2060, 2090])
    assert len([a for a in spikes if a.step >= 2000]) == 4
    assert [a.severity for a in spikes] == ["info"] * len(spikes)
    # seven in one window: the sixth is a burst at that rate (P ~ 3e-4), one warning for them all
    warned = [a for a in _steady_spikes(list(range(2000, 2120, 18))) if a.severity == "warning"]
    assert len(warned) == 1 and warned[0].evidence["spikes_in_window"] == 6


def test_the_first_records_show_a_jump_to_twice_the_level_without_a_noise_estimate():
    # a log excerpt that begins three records before the jump (BLOOM-13B: 2.77 -> 7.34)
    spikes = raised(replay([2.776, 2.773, 2.768, 7.344, 8.716, 7.654])[1], "spike")
    assert [a.step for a in spikes] == [3]


def test_the_first_records_show_a_jump_far_outside_their_own_range_below_twice_the_level():
    # +40 % after three losses within 0.3 % of each other: 140x their range, a spike on its record
    spikes = raised(replay([2.776, 2.773, 2.768, 3.9, 2.8, 2.7])[1], "spike")
    assert [(a.step, a.severity) for a in spikes] == [(3, "info")]
    # the same +40 % after losses that already vary by 0.6: within 6x their range, no spike
    assert raised(replay([2.0, 2.6, 2.3, 3.2, 2.2, 2.1])[1], "spike") == []
    # and a jump under a fifth of the level is never a spike, however calm the losses before
    assert raised(replay([2.0, 2.0001, 2.0002, 2.35, 2.0, 2.0])[1], "spike") == []
    # one earlier loss has no range: 2x the level is still the bar
    assert raised(replay([2.0, 3.5, 2.0, 2.0])[1], "spike") == []


@pytest.mark.parametrize("losses", [
    [2.0, 2.001, 2.9, 2.95, 2.0, 2.4, 5.0, 2.0, 2.0, 2.1, 6.0, 2.0],  # notes open in the first records
    [2.0, 2.001, 2.0005, 3.0, 2.0, 2.9, 2.0, 2.0, 2.0, 2.0],
    [2.0, 4.5, 5.0, 2.0, 2.0, 2.0, 2.0],  # a record of the early range while a note is open
])
def test_the_early_rule_gives_the_same_alerts_and_state_in_a_batch(losses):
    recs = [Record(s, x, grad_norm=1.0) for s, x in enumerate(losses)]
    one_eng, one = one_at_a_time(recs)
    eng = Engine("r")
    eng.SMALL_BATCH = 0  # force the vectorised path
    batch = [b for k in range(0, len(recs), 3) for b in eng.update_batch(recs[k:k + 3])]
    assert [(a.id, a.event, a.severity, a.last_step) for a in batch] == \
        [(a.id, a.event, a.severity, a.last_step) for a in one]
    assert eng.to_bytes() == one_eng.to_bytes()
    assert raised(one, "spike")  # the case is not empty


def test_a_validation_loss_that_doubles_for_one_evaluation_is_a_note_unless_training_jumped_too():
    train = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5]
    vals = [1.5, None, 3.4, None, 1.4, None]
    notes = [a for a in replay(train, vals=vals)[1] if a.detector == "val_spike"]
    assert [(a.step, a.severity, a.resolved_step) for a in notes] == [(2, "info", None), (2, "info", 4)]
    # the training loss jumped at the same record: the training-loss rules own it, no val note
    _, alerts = replay([2.0, 1.9, 4.5, 1.7, 1.6, 1.5], vals=vals)
    assert [a for a in alerts if a.detector == "val_spike"] == []


def test_a_rising_validation_curve_and_an_evaluation_after_a_nan_one_are_not_validation_spikes():
    # overfitting: +40 % per evaluation is the overfitting detector's, not a spike
    _, alerts = replay([1.0] * 6, vals=[0.5, 0.7, 0.98, 1.37, 1.9, 2.7])
    assert [a for a in alerts if a.detector == "val_spike"] == []
    # after a NaN evaluation (the NaN rule's) the next one has no previous to jump from
    _, alerts = replay([1.0] * 4, vals=[1.0, math.nan, 2.5, 1.0])
    assert [a for a in alerts if a.detector == "val_spike"] == []


PINN = "histories/macro1027__simple-pendulum-pinn__lightning-logs-version-27-metrics-csv.csv"


def test_a_spike_after_a_sparse_descent_is_measured_against_the_last_losses():
    # the PINN log (tune part) thinned to every 10th epoch, as a user logging every 10 epochs
    # would have it: 4.0 -> 0.76 in two records, then 0.19-0.35 for thirty records, so the
    # level still lags above the loss at epoch 370 (0.43) and that lag counts as its noise
    # (0.62); the jump 0.22 -> 0.82 at epoch 379 is measured against the higher of the last two
    # losses and the noise about the loss's own trend (its second differences)
    records = [r for r in tune_records(PINN) if r.step % 10 == 0 or r.step == 379]
    eng, alerts = one_at_a_time(records)
    spikes = [(a.step, a.severity) for a in raised(alerts, "spike")]
    assert (379, "info") in spikes
    # every 10th record, in batches: the same alerts
    _, batched = in_batches(records, 16)
    assert [(a.id, a.event, a.step) for a in batched] == [(a.id, a.event, a.step) for a in alerts]


def test_the_trend_free_noise_ignores_a_steady_descent_and_sees_noise():
    from losswatch.detectors.features import FeatureTracker
    steady = FeatureTracker()
    for s in range(40):  # a straight descent: no noise about its trend
        f = steady.advance_one(s, 10.0 - 0.2 * s, None, None, None)
    assert f.nsd[0] < 0.01 * f.sd[0]  # the level's lag counts as noise in sd, not in nsd
    noisy = FeatureTracker()
    for s in range(200):  # a flat loss with +-0.1 alternating noise
        f = noisy.advance_one(s, 1.0 + (0.1 if s % 2 else -0.1), None, None, None)
    assert 0.05 < f.nsd[0] and 0.05 < f.sd[0]


def test_on_a_flat_run_the_spike_rule_keeps_the_level_and_takes_the_smaller_noise():
    from losswatch.detectors.spike import recent_reference
    # the last two losses within the trend-free noise of the level: no lag, the level stays
    assert recent_reference(1.0, 0.05, 0.98, 1.01, 0.08) == (1.0, 0.05)
    # a noise that still holds an old descent's deviations (1.4) against second differences of
    # 0.3: the level caught up, the noise is the trend-free one
    assert recent_reference(1.9, 1.4, 1.74, 1.11, 0.3) == (1.9, 0.3)
    # both below it by more: the level lags a descent; the higher of the two and the smaller noise
    assert recent_reference(1.0, 0.3, 0.5, 0.45, 0.02) == (0.5, 0.02)


def test_a_burst_of_four_after_a_clean_history_warns():
    # no spike in the first 270 records: no rate to test a count against, four are news
    losses, gns, lrs = healthy_curve(370, seed=4)
    for s in (270, 280, 290, 300):
        losses[s] *= 3.0
    spikes = raised(replay(losses, gns, lrs)[1], "spike")
    assert [(a.step, a.severity) for a in spikes if a.severity == "warning"] == [(300, "warning")]
