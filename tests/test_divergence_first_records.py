"""A jump in the first records of a healthy log is no "LR too high": shapes that a rule judging
the first updates against the first loss alone cannot tell from an LR overshoot (the first
loss is one draw of a noisy loss, a resumed run's, a loss near zero, a GAN generator's that
rises as its discriminator learns), and one real excerpt of the tune part (bench/real/,
provenance in bench/real/SOURCES.md). The holdout part is never read here."""

import dataclasses
import math
import random

import pytest

from detector_helpers import in_batches, one_at_a_time, tune_records
from losswatch.detectors.types import Record

# healthy: a speech fine-tune with a noisy per-batch loss (0.27 at step 25, one batch at 0.975
# at step 150 while its LR already decays)
BANGLA_STT = "histories/jubaerkhan49__bangla_stt__model-trainer-state.csv"


def _records(steps, losses):
    return [Record(s, x) for s, x in zip(steps, losses)]


def _bangla_with_batches_swapped(a, b):
    """The same run's per-batch losses drawn in another order: the losses at steps a and b
    change places (the class: the same healthy run, its one bad batch earlier)."""
    recs = list(tune_records(BANGLA_STT))
    steps = [r.step for r in recs]
    i, j = steps.index(a), steps.index(b)
    recs[i], recs[j] = (dataclasses.replace(recs[i], loss=recs[j].loss),
                        dataclasses.replace(recs[j], loss=recs[i].loss))
    return recs


def _lucky_first_draw():
    rng = random.Random(1)
    losses = [0.45, 1.4, 0.8, 0.85, 0.9] + [0.8 * math.exp(-k / 300) + 0.02 * rng.gauss(0, 1) + 0.3
                                            for k in range(400)]
    return _records(range(1, len(losses) + 1), losses)


def _gan_generator_every_50():
    rng = random.Random(0)
    losses = [5.2, 17.0, 4.7, 3.9] + [max(1e-6, 3.5 + rng.gauss(0, 1.0)) for _ in range(200)]
    return _records([50 * (k + 1) for k in range(len(losses))], losses)


def _near_zero_nll():
    rng = random.Random(0)
    losses = [0.05, 0.21, -0.1, 0.02] + [-0.05 - 0.01 * k + rng.gauss(0, 0.1) for k in range(300)]
    return _records(range(1, len(losses) + 1), losses)


def _resumed_run():
    rng = random.Random(0)
    losses = [0.30, 1.0, 0.35, 0.31] + [0.29 + rng.gauss(0, 0.01) for _ in range(300)]
    return _records([5000 + 1000 * k for k in range(len(losses))], losses)


HEALTHY = {
    "a speech fine-tune whose bad batch came at step 75": lambda: _bangla_with_batches_swapped(75, 150),
    "a noisy loss whose first draw was low": _lucky_first_draw,
    "a GAN generator loss that rises as its discriminator learns": _gan_generator_every_50,
    "a loss near zero": _near_zero_nll,
    "a resumed run": _resumed_run,
}
#: the first updates: the jump and the records right after it, before any rule has history
FIRST_RECORDS = 10


def _lr_cuts(alerts):
    """Alarms (warning or critical: an info is a note) that tell the user to lower the LR, roll
    back or stop."""
    return [(a.kind, a.step, a.severity, a.evidence.get("rule")) for a in alerts
            if a.event in ("raised", "escalated") and a.severity != "info" and a.action is not None
            and (a.action.type in ("rollback", "stop")
                 or (a.action.type == "scale_lr" and a.action.params["factor"] < 1))]


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_a_jump_in_the_first_records_of_a_healthy_log_is_no_lr_too_high(name):
    recs = HEALTHY[name]()
    alerts = one_at_a_time(recs)[1]
    early = recs[FIRST_RECORDS - 1].step
    assert [a for a in _lr_cuts(alerts) if a[1] <= early] == [], name
    ref = [(a.id, a.event, a.step, a.severity) for a in alerts]
    assert [(a.id, a.event, a.step, a.severity) for a in in_batches(recs, 7)[1]] == ref


@pytest.mark.parametrize("name", ["a noisy loss whose first draw was low", "a loss near zero",
                                  "a GAN generator loss that rises as its discriminator learns"])
def test_a_healthy_log_whose_loss_comes_straight_back_gets_no_lr_cut_at_all(name):
    # (the speech fine-tune with its bad batch at step 75 and the resumed run are later called
    # lost by the lost rule, whose start level keeps their first loss: that rule's own question)
    assert _lr_cuts(one_at_a_time(HEALTHY[name]())[1]) == [], name


def test_a_blow_up_on_the_second_record_then_stuck_at_the_start_is_the_lost_rule_s():
    # the loss comes back to its first value (chance) at once and stays: one record says
    # nothing yet; what makes it a lost run is the time it stays there
    recs = _records(range(1, 253), [2.3, 10.0] + [2.3] * 250)
    alerts = one_at_a_time(recs)[1]
    div = [(a.severity, a.evidence.get("rule")) for a in alerts
           if a.kind == "divergence" and a.event in ("raised", "escalated")]
    assert div == [("critical", "lost")]
    assert [a.step for a in alerts if a.kind == "divergence" and a.event == "raised"][0] >= 200
