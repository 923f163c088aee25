"""Healthy runs that look sick to a loss-only rule, on real logs from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): what in the log says the run is fine. The
holdout part is never read here."""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

PPO_CHESS = "histories/reddyn12__sb3test__logs-progress-csv.csv"  # PPO loss 4601 -> 133, one-row jumps to ~1e4
BRATS = "histories/4hmetcakmak__brats2020capstoneproject__training-log.csv"  # ReduceLROnPlateau to min_lr 1e-6


def _lr_changing(alerts):
    return [a for a in raised(alerts, min_severity="warning")
            if a.action.type in ("scale_lr", "rollback", "stop")]


def test_spikes_that_each_come_back_to_the_level_are_a_spike_rate_not_a_divergence():
    # Stable-Baselines3 PPO: the combined loss falls 4601 -> 133 while single rows jump to
    # ~10,700 (steps 480, 500, 530) and 7,900-10,300 (720, 750, 780), each back on the next
    # row. Three counted spikes within 5 records raised "spiked 3 times: cut the LR 10x" at
    # step 530; the level never left its descent, so each spike is a note and nothing cuts the LR.
    recs = [r for r in tune_records(PPO_CHESS) if r.step <= 880]  # before the stretch it stays up
    alerts = one_at_a_time(recs)[1]
    assert _lr_changing(alerts) == []
    spikes = raised(alerts, "spike")
    assert {480, 500, 530} <= {a.step for a in spikes} and {a.severity for a in spikes} == {"info"}


def test_a_reduce_lr_on_plateau_floor_held_exactly_is_not_a_zero_lr():
    # Keras CSVLogger: ReduceLROnPlateau cuts 1e-3 -> 2e-4 -> 4e-5 -> 8e-6 -> 1.6e-6 -> 1e-6 (its
    # min_lr, exactly 1e-3 x the peak) and holds it while the loss flattens at 0.0258: "LR ~0,
    # raise it x100" was the alarm at epoch 20.
    alerts = one_at_a_time(tune_records(BRATS))[1]
    assert raised(alerts, "lr_anomaly") == []
    assert _lr_changing(alerts) == []


def _zero_lr_alerts(lrs):
    eng = Engine("r")
    return [a for s, lr in enumerate(lrs) for a in eng.update(Record(s, 1.0, lr=lr))
            if a.kind == "lr_anomaly" and a.event == "raised"]


def test_an_lr_that_decays_to_zero_or_keeps_shrinking_below_the_floor_is_still_flagged():
    # the exemption is for a positive floor held on every record: a schedule that reaches 0, or
    # one still shrinking far below its peak, is not training and gets the warning as before
    decay = [1e-3 * 0.5 ** k for k in range(10)]
    assert [a.step for a in _zero_lr_alerts(decay + [0.0] * 10)] == [12]
    assert _zero_lr_alerts(decay + [1e-6 * 0.9 ** k for k in range(10)])
    assert _zero_lr_alerts(decay + [1e-6] * 10) == []


# issues/thilinarajapakse__simpletransformers__12.csv: a transformer classifier fine-tune's
# per-batch "Running loss", iterations 1,321-1,333, jumping 0.40-1.74 about ~0.8 ("why does the
# loss fluctuate so much?"). Label healthy.
FLUCTUATING = "issues/thilinarajapakse__simpletransformers__12.csv"


def test_a_jump_then_a_higher_draw_inside_the_range_the_loss_already_held_is_not_a_climb():
    # 0.496, 0.607, 0.981, 0.564, 0.814, 0.495, then the counted spike 0.877 and 0.936: higher
    # than the spike, but below the 0.981 of two records back. It was "LR too high, the loss is
    # unstable: cut the LR 10x" on the eighth line of a healthy paste.
    recs = tune_records(FLUCTUATING)
    for alerts in (one_at_a_time(recs)[1], in_batches(recs, 5)[1]):
        assert _lr_changing(alerts) == []
        assert {a.severity for a in raised(alerts, "spike")} == {"info"}
    # the same spike followed by a value the run never held is still a spike that climbs on
    climbs = recs[:7] + [Record(recs[6].step + 1, 1.2)]
    got = raised(one_at_a_time(climbs)[1], "divergence", "warning")
    assert [(a.step, a.evidence["rule"], a.action.params["factor"]) for a in got] == [(1328, "spike_climbs", 0.1)]
