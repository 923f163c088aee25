"""LR too high at epoch cadence: the divergence rule ``climb`` on a training loss that climbs back
on every epoch until it is above its first loss, in a run that made little progress against its
level (so "half its level again" never comes). A verbatim excerpt of the tune part of the real
corpus (bench/real/, provenance in bench/real/SOURCES.md); the holdout part is never read here."""

import pytest

from detector_helpers import one_at_a_time, raised
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

# bench/real/histories/zhengzheren77__cifar10-classification__model-history-csv__rmsprop-bs32-lr0-005-vgg1.csv
# (Zhengzheren77/CIFAR10-Classification model_history.csv, lines 428-437: RMSProp, batch 32, lr
# 0.005, VGG depth 1; EarlyStopping on val_loss ends it). The loss falls once, then climbs on
# every epoch back above where it started; RMSProp at lr 0.001 in the same grid reaches ~1.13-1.22.
RMSPROP = [  # epoch, loss, lr, val_loss (digits as logged)
    (1, 1.819008708000183, 0.005, 2.219170093536377),
    (2, 1.6226942539215088, 0.005, 1.6523432731628418),
    (3, 1.625345230102539, 0.005, 1.684478759765625),
    (4, 1.6771528720855713, 0.005, 1.635287523269653),
    (5, 1.6992356777191162, 0.005, 1.544621229171753),
    (6, 1.7278616428375244, 0.005, 1.5717277526855469),
    (7, 1.7566165924072266, 0.005, 1.5894598960876465),
    (8, 1.7848162651062012, 0.005, 1.6972880363464355),
    (9, 1.8305392265319824, 0.005, 2.2042713165283203),
    (10, 1.823193311691284, 0.005, 1.746972918510437),
]


def _records(rows, val=True, offset=0.0):
    return [Record(s, x + offset, None, lr, v if val else None) for s, x, lr, v in rows]


def _batch(recs):
    eng = Engine("r")
    eng.SMALL_BATCH = 0  # force the vectorised path
    return eng.update_batch(list(recs))


def _climbs(alerts):
    return [(a.step, a.action.type, a.action.params.get("factor")) for a in raised(alerts, "divergence", "warning")
            if a.evidence.get("rule") == "climb"]


@pytest.mark.parametrize("val,offset", [(True, 0.0), (False, 0.0), (True, 1.0), (True, 5.0)])
def test_an_epoch_loss_that_climbs_back_above_its_first_loss_gets_an_lr_cut(val, offset):
    # seven rises in a row (1.623 -> 1.831), 13 % of the level: below "half the level again",
    # but the whole progress of the run (1.819 -> 1.623) is undone; a constant added to the loss
    # (another loss scale's offset) changes nothing
    recs = _records(RMSPROP, val, offset)
    alerts = one_at_a_time(recs)[1]
    assert _climbs(alerts) == [(9, "scale_lr", 0.1)]
    assert "back above its first loss" in raised(alerts, "divergence", "warning")[0].message
    assert _climbs(_batch(recs)) == _climbs(alerts)


def test_a_climb_that_stays_below_the_first_loss_is_not_all_the_progress_undone():
    # the same climb stopped one epoch earlier (1.785 < 1.819): no alarm from it yet
    assert _climbs(one_at_a_time(_records(RMSPROP[:8]))[1]) == []


def test_a_training_loss_climbing_back_while_the_evaluations_reach_their_best_is_not_this_rule():
    # the same training losses, the evaluations improving on every epoch (regularisation or
    # augmentation switched on: the training loss rises by design, the model gets better)
    rows = [(s, x, lr, 2.3 - 0.1 * s) for s, x, lr, _ in RMSPROP]
    for alerts in (one_at_a_time(_records(rows))[1], _batch(_records(rows))):
        assert _climbs(alerts) == []


# bench/real/histories/yc1999__stanford_alpaca__output-trainer-state.csv (yc1999/stanford_alpaca
# output/trainer_state.json, healthy: an Alpaca fine-tune at its first epoch's noise floor,
# ~1.05 +- 0.05 per batch), steps 244-256 as logged
ALPACA_244 = [1.0518, 0.9632, 1.019, 1.0758, 1.1212, 1.1266, 1.159, 1.0623, 1.0799, 1.071, 1.1166, 1.1037,
              1.0882]


@pytest.mark.parametrize("first_step", [244, 1])
def test_five_chance_rises_past_the_first_draw_of_a_flat_loss_are_not_all_progress_undone(first_step):
    # from step 244 (the tail of the run cut to its last 80 %) or renumbered from step 1: the
    # loss rises on five records in a row from its second one, past its first; the fall before
    # the climb (1.052 -> 1.019, the higher of the lucky record and the raw best) is no real
    # progress against the loss's noise, and a flat loss's first draw is no start
    recs = [Record(first_step + k, x, None, 1.85e-05, None) for k, x in enumerate(ALPACA_244)]
    assert _climbs(one_at_a_time(recs)[1]) == []
    assert _climbs(_batch(recs)) == []


# bench/runs/linreg-sgd-one_cycle-x10-s0.csv (the benchmark's healthy least-squares run under a
# one-cycle LR at 10x, +-0.15 per record), steps 200-212: bench/cadence.py's excerpt of it begins at
# its middle. A dip to 0.445, then five rises to 0.711, past the excerpt's first loss (0.625)
LINREG_200 = [  # loss, grad_norm, lr (val_loss 0.600473 at step 200)
    (0.624808, 1.05062, 0.080734), (0.70367, 0.854105, 0.0802896), (0.781823, 1.26851, 0.0798413),
    (0.771213, 1.03856, 0.0793893), (0.753686, 1.1725, 0.0789336), (0.620898, 1.11266, 0.0784743),
    (0.444731, 0.681489, 0.0780114), (0.475915, 1.17782, 0.0775449), (0.611, 0.819249, 0.077075),
    (0.644954, 1.15701, 0.0766017), (0.667041, 0.966757, 0.076125), (0.711053, 1.45418, 0.0756451),
    (0.610411, 0.79586, 0.0751619),
]


def test_an_excerpts_first_loss_is_no_start_to_climb_back_to():
    # 12 records in, the usual change (an average that starts at 0) is a third of the noise's:
    # the dip (0.149 below the first loss) and the climb (0.235) both pass for 5 of them. The
    # first loss of a log that begins at step 200 is one draw of the level the run had reached
    recs = [Record(200 + k, x, g, lr, 0.600473 if k == 0 else None) for k, (x, g, lr) in enumerate(LINREG_200)]
    assert _climbs(one_at_a_time(recs)[1]) == []
    assert _climbs(_batch(recs)) == []


def test_a_bump_above_the_first_loss_while_the_lr_still_warms_up_is_not_all_progress_undone():
    # a fine-tune falls 1.00 -> 0.86, then bumps back to 1.06 over ten records while its LR is
    # still ramping up (a 40-record warm-up), then trains on: the streak rule exempts a warm-up,
    # and so does the climb back above the first loss
    import math
    import random

    rng = random.Random(1)
    recs = []
    for s in range(200):
        lr = 2e-5 * min(1.0, (s + 1) / 40) * (1 - s / 220)
        level = 1.0 - 0.01 * s if s < 15 else (0.86 + 0.02 * (s - 15) if s < 25 else
                                               0.53 * math.exp(-(s - 25) / 60) + 0.5)
        recs.append(Record(step=s * 10, loss=level + rng.gauss(0, 0.004), lr=lr))
    _, alerts = one_at_a_time(recs)
    assert raised(alerts, "divergence") == []
