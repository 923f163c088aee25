"""LR too high from the first epochs: the divergence rule ``never_learnt`` on a real epoch log of
the tune part (bench/real/, provenance in bench/real/SOURCES.md) and on the shapes it must leave
alone. The holdout part is never read here."""

from detector_helpers import raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

# an i2dl grid-search member whose report calls its LR too high: training 16.6 -> 30.7 and
# validation 24.2 -> 48.8 over 8 epochs, with dips between (never 5 rises in a row)
I2DL = "histories/timothyquark__i2dl__grid-search1__config1.csv"


def _replay(records, batch=False):
    eng = Engine("r")
    if batch:
        eng.SMALL_BATCH = 0  # force the vectorised path
        return eng.update_batch(list(records))
    return [a for rec in records for a in eng.update(rec)]


def _rules(alerts):
    return [(a.step, a.evidence.get("rule")) for a in raised(alerts, "divergence", "warning")]


def test_an_epoch_log_whose_training_and_validation_losses_rise_from_the_start_gets_an_lr_cut():
    alerts = _replay(tune_records(I2DL))
    div = raised(alerts, "divergence", "warning")
    assert [(a.step, a.evidence["rule"]) for a in div] == [(6, "never_learnt")]
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1.0


def test_the_batch_path_raises_the_same_alert():
    recs = tune_records(I2DL)
    assert _rules(_replay(recs, batch=True)) == _rules(_replay(recs))


def test_a_validation_loss_rising_while_the_training_loss_falls_is_not_this_rule():
    # memorisation: the same validation losses, the training loss falling from its start
    train = [16.6, 12.0, 9.0, 7.0, 5.5, 4.5, 3.8, 3.2]
    val = [24.2, 22.5, 22.5, 35.7, 32.3, 43.9, 48.8, 36.7]
    recs = [Record(s, x, None, None, v) for s, x, v in zip(range(1, 9), train, val)]
    assert "never_learnt" not in [r for _, r in _rules(_replay(recs))]


def test_a_training_loss_above_its_start_with_a_falling_validation_loss_is_not_this_rule():
    # the training loss rises (regularisation ramping up, augmentation switched on) while the
    # held-out loss keeps improving: the weights are not moving the wrong way
    train = [16.6, 21.6, 20.0, 23.7, 28.3, 28.2, 30.7, 29.8]
    val = [24.2, 22.5, 21.0, 20.1, 19.5, 19.0, 18.7, 18.2]
    recs = [Record(s, x, None, None, v) for s, x, v in zip(range(1, 9), train, val)]
    assert "never_learnt" not in [r for _, r in _rules(_replay(recs))]


def test_a_log_that_learnt_before_it_rose_is_left_to_the_other_rules():
    # the training loss held below its start for two records: the rise is measured from its
    # best by the climb and level rules, not as "never learnt"
    train = [16.6, 12.0, 11.0, 23.7, 28.3, 28.2, 30.7, 29.8]
    val = [24.2, 22.5, 22.5, 35.7, 32.3, 43.9, 48.8, 36.7]
    recs = [Record(s, x, None, None, v) for s, x, v in zip(range(1, 9), train, val)]
    assert "never_learnt" not in [r for _, r in _rules(_replay(recs))]


def test_a_fine_tune_coming_down_from_above_a_lucky_first_batch_is_not_this_rule():
    # the first logged loss a lucky low batch (0.20); the loss then falls steadily from 0.50 while
    # a noisy validation loss ends 1.5x its lowest: a loss coming down is not one that never learnt
    train = [0.20, 0.50, 0.46, 0.44, 0.41, 0.40, 0.38, 0.36, 0.35]
    val = {100: 0.40, 200: 0.30, 300: 0.33, 400: 0.46}
    recs = [Record(50 * (k + 1), x, None, None, val.get(50 * (k + 1))) for k, x in enumerate(train)]
    for batch in (False, True):
        assert not [a for a in _replay(recs, batch) if a.evidence.get("rule") == "never_learnt"]
