"""A logger that writes each row several times, on real excerpts from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): the dead rules count measurements, not lines
(losswatch.detectors.copies). The holdout part is never read here."""

import random

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.base import drive
from losswatch.detectors.dead import DeadDetector
from losswatch.detectors.types import Record

GAN = "histories/0111yoyo__gan1202__training-log-csv.csv"  # healthy: a generator loss near ln 2, then 1-6
FROZEN = "issues/deeplabcut__deeplabcut__2922__lr0.001.csv"  # 0.01463, then 0.01462 on every line


def _written(recs, k, advance):
    """Every record written ``k`` times: on ``k`` steps in a row, or with the same step (the
    engine keeps the first line of a step)."""
    out = []
    for r in recs:
        for j in range(k):
            step = r.step * k + j if advance else r.step
            out.append(Record(step, r.loss, r.grad_norm, r.lr, r.val_loss))
    return out


@pytest.mark.parametrize("k", [2, 4])
def test_a_healthy_log_written_k_times_is_not_dead(k):
    recs = tune_records(GAN)
    assert raised(one_at_a_time(recs)[1], "dead") == []
    lines = _written(recs, k, advance=True)
    out = one_at_a_time(lines)[1]
    assert raised(out, "dead") == [], [a.message for a in raised(out, "dead")]
    for size in (3, 64, 1000):
        assert [(a.id, a.event, a.message) for a in in_batches(lines, size)[1]] == \
            [(a.id, a.event, a.message) for a in out], size


@pytest.mark.parametrize("k", [2, 4])
def test_a_dead_log_written_k_times_is_still_dead(k):
    # written once: flat on record 6 (no action), the same four digits on record 7 (stop); written
    # k times: the same verdicts on the same measurements, at line k * 7
    lines = _written(tune_records(FROZEN), k, advance=True)
    dead = [a for a in one_at_a_time(lines)[1] if a.kind == "dead"]
    assert [(a.event, a.action.type) for a in dead[:2]] == [("raised", "none"), ("escalated", "stop")]
    # its words say what a record is: a measurement written k times
    assert dead[1].message == f"run is dead at step {7 * k}: the loss has been 0.0146 for 6 records in a " \
        f"row, each written {k} times"


def test_copies_count_once_but_a_value_printed_on_every_line_from_the_start_counts_every_line():
    moving = [0.7203, 0.7451, 0.6931, 0.69312, 0.69309, 0.7608, 0.8113]
    once = [Record(s, x) for s, x in enumerate(moving)]
    # written once, five lines at ln 2 within the chance band after a move are not six
    assert drive(DeadDetector(), once) == []
    four = [Record(s, x) for s, x in enumerate(v for v in moving for _ in range(4))]
    assert drive(DeadDetector(), four) == []
    # a network dead from its first line: no run has ended, so every line counts
    stuck = [Record(s, 0.6931) for s in range(6)]
    assert [a.step for a in drive(DeadDetector(), stuck)] == [5]
    # a logger shown to write every value four times: its dead run counts in measurements
    # (frozen on its sixth measurement at one value, the eighth since the first: line 7 * 4)
    copied = [Record(s, x) for s, x in enumerate([0.9] * 4 + [0.8] * 4 + [0.5432] * 24)]
    assert [a.step for a in drive(DeadDetector(), copied)] == [7 * 4]


LSTM = "histories/devilmayhide__lstm-bade03_assignment__lightning-logs-version-2-metrics-csv.csv"  # val 0.229749 from 1500


@pytest.mark.parametrize("k", [1, 2, 4])
def test_separate_evaluations_of_frozen_weights_written_k_times_are_still_dead(k):
    # the same six digits on separate evaluations; each evaluation line written k times is one
    # evaluation, neither a seventh repeat nor a break of the run
    lines = _written(tune_records(LSTM), k, advance=True)
    dead = raised(one_at_a_time(lines)[1], "dead")
    assert dead and dead[0].step >= 1500 * k and "separate evaluations" in dead[0].message
    assert dead[0].action.type == "stop"


@pytest.mark.parametrize("k", [2, 4])
def test_a_log_that_begins_inside_a_run_of_copies_is_not_dead(k):
    # an excerpt or a log whose first lines were lost may cut its first run of copies short: a
    # first run of one line does not make every later line a measurement
    lines = _written(tune_records(GAN), k, advance=True)
    for offset in range(k):
        out = one_at_a_time(lines[offset:])[1]
        assert raised(out, "dead") == [], (offset, [a.message for a in raised(out, "dead")])
    moving = [0.7203, 0.7451, 0.6931, 0.69312, 0.7608, 0.8113]
    copied = [x for x in moving for _ in range(k)]
    for offset in range(1, k):
        recs = [Record(s, x) for s, x in enumerate(copied[offset:])]
        assert drive(DeadDetector(), recs) == [], offset


def test_one_dropped_copy_does_not_make_every_line_a_measurement():
    # a logger that writes each value four times and once wrote a value three times: k stays 4,
    # so two measurements that agree to four digits at ln 2 are not three records of it
    moving = [0.9, 0.85, 0.8, 0.78, 0.75, 0.72, 0.7203, 0.7451, 0.6931, 0.69312, 0.7608, 0.8113]
    lines = [x for x in moving for _ in range(4)]
    del lines[9]  # 0.8 written three times
    d = DeadDetector()
    assert drive(d, [Record(s, x) for s, x in enumerate(lines)]) == []
    assert d.cp_k == 4
    # runs of one line in a row: a log that writes each value once (k 1 from then on)
    d = DeadDetector()
    drive(d, [Record(s, x) for s, x in enumerate([0.9, 0.9, 0.85, 0.8, 0.78])])
    assert d.cp_k == 1


@pytest.mark.parametrize("k", [2, 4])
def test_an_evaluation_forward_filled_on_copied_lines_is_one_evaluation(k):
    # the untrained model's evaluation at ln 2, forward-filled on every training line of a run
    # that learns, each line written k times: one evaluation, not ln 2 on separate evaluations
    r = random.Random(1)
    train = [0.70 * 0.995 ** s * (1 + r.gauss(0, 0.02)) for s in range(40)]
    recs = [Record(s, x, val_loss=0.693147) for s, x in enumerate(x for x in train for _ in range(k))]
    out = one_at_a_time(recs)[1]
    assert raised(out, "dead") == [], [a.message for a in raised(out, "dead")]
    assert [(a.id, a.event) for a in in_batches(recs, 7)[1]] == [(a.id, a.event) for a in out]


def test_a_copied_line_is_no_record_off_the_dead_value():
    # frozen at 0.5432, each value written twice; once it moves, the second line carries an
    # evaluation of its own: the episode closes on the third measurement that moved, not on the
    # second (two lines each)
    values = [0.9, 0.8, 0.7] + [0.5432] * 8 + [0.45, 0.41, 0.38, 0.35]
    recs = []
    for j, x in enumerate(values):
        recs += [Record(2 * j, x), Record(2 * j + 1, x, val_loss=1.5 - 0.1 * j if j > 10 else None)]
    events = [(a.event, a.last_step) for a in drive(DeadDetector(), recs)]
    assert [e for e, _ in events] == ["raised", "resolved"]
    assert events[1][1] == 2 * (11 + 2)  # the first line of the third moving measurement
