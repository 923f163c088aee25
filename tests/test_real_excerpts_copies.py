"""A logger that writes each row several times, on real excerpts from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): the dead rules count measurements, not lines
(losswatch.detectors.copies). The holdout part is never read here."""

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
    assert dead[1].message.startswith(f"run is dead at step {7 * k}: the loss has been 0.0146 for 6 records")


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
