"""Spike detector: one alert per one-step jump, clip advice sized from the run's grad-norms."""

from detector_helpers import healthy_curve, raised, replay


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


def test_the_first_records_show_a_jump_to_twice_the_level_without_a_noise_estimate():
    # a log excerpt that begins three records before the jump (BLOOM-13B: 2.77 -> 7.34)
    spikes = raised(replay([2.776, 2.773, 2.768, 7.344, 8.716, 7.654])[1], "spike")
    assert [a.step for a in spikes] == [3]
    assert raised(replay([2.776, 2.773, 2.768, 3.9, 2.8, 2.7])[1], "spike") == []  # +40%: noise?
