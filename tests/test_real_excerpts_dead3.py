"""Dead runs in short excerpts (a few lines of a thread, an epoch table), on verbatim excerpts from
the tune part of the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part
is never read here.

- a loss that moved off its first value and then prints one value to six significant digits on
  three records in a row, at or above where it started: a saturated, constant output
  (:mod:`losswatch.detectors.dead_rules.frozen`);
- evaluations within 0.2 % of ln(k), none ever below ln(k) as far as their printed digits tell:
  a classifier no better than the uniform guess
  (:mod:`losswatch.detectors.dead_rules.evaluations_at_chance`); a BERT classifier at chance
  whose evaluations wander 1 % around ln 2 is out of reach, because a classifier that starts
  slowly looks the same for its first evaluations.
"""

from detector_helpers import in_batches, one_at_a_time, raised
from losswatch.detectors.base import drive
from losswatch.detectors.dead import DeadDetector
from losswatch.detectors.types import Record

# issues/hszhao__pspnet__52.csv: PSPNet fine-tuned in Caffe, "Iteration N, loss = X" for
# iterations 0-60: 92.0984, then 122.271 (= 1.4 x 87.3365, Caffe's saturated softmax) on every
# print. Label dead, onset 20.
PSPNET = [(0, 92.0984, 1e-4), (20, 122.271, 1e-4), (40, 122.271, 1e-4), (60, 122.271, None)]

# histories/wenxin-jiang__cs577-nlp__model-card-raychanan-bert-bert-cased-first512-conflict.csv:
# a BERT binary classifier's model-card table (step, training loss, validation loss); accuracy
# exactly 0.5 throughout. Label dead, onset 685.
BERT_LN2 = [(685, 0.7098, 0.6945), (1370, 0.7046, 0.6997), (2055, 0.7013, 0.6949), (2740, 0.7027, 0.6931),
            (3425, 0.702, 0.6932)]


def _pspnet():
    return [Record(s, x, lr=lr) for s, x, lr in PSPNET]


def _bert():
    return [Record(s, x, val_loss=v) for s, x, v in BERT_LN2]


def test_a_loss_that_moved_and_froze_to_six_digits_is_dead_on_its_third_print():
    got = raised(one_at_a_time(_pspnet())[1], "dead")
    assert [(a.step, a.action.type) for a in got] == [(60, "stop")]
    assert "122.271" in got[0].message and "six significant digits for 3 records" in got[0].message
    # two prints of the value are not enough
    assert raised(one_at_a_time(_pspnet()[:3])[1], "dead") == []


def test_both_paths_agree_on_the_six_digit_freeze():
    for recs in (_pspnet(), _bert()):
        ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
        for size in (1, 2, 3, 100):
            assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size


def test_six_digit_repeats_of_a_healthy_shape_are_not_dead():
    # a full-batch optimisation converged at its floor prints one value to all its digits, far
    # below its first loss
    floor = [5.0, 2.0, 0.9, 0.413527] + [0.413527] * 4  # (six in a row: the four-digit rule)
    assert drive(DeadDetector(), [Record(s, x) for s, x in enumerate(floor)]) == []
    # a logger that writes each line three times: its first value three times is its first
    # measurement (the rule waits for the loss to have moved), then its copies are counted
    copied = [v for v in (2.31847, 2.20113, 2.10452, 2.01936) for _ in range(3)]
    assert drive(DeadDetector(), [Record(s, x) for s, x in enumerate(copied)]) == []
    # four decimals of a loss below 10 are five significant digits at most: the four-digit rule's
    # longer run judges those
    four = [1.5, 1.2345, 1.2345, 1.2345]
    assert drive(DeadDetector(), [Record(s, x) for s, x in enumerate(four)]) == []


def test_a_classifier_that_starts_slowly_just_above_chance_is_not_dead():
    # evaluations 0.25-0.5 % above ln 2 (ln 10) for four epochs, then learning: a band of 1 %
    # around ln(k) told these to stop; the BERT excerpt at chance (within 1 % of ln 2) reads the
    # same for as long, so it stays out of reach
    for train, val in (([.7012, .6998, .6990, .6989, .6901, .62, .50, .45, .40, .36],
                        [.6968, .6952, .6949, .6951, .6890, .61, .52, .48, .45, .43]),
                       ([2.32, 2.312, 2.308, 2.304, 2.25, 1.9, 1.6],
                        [2.3160, 2.3120, 2.3100, 2.3090, 2.25, 1.95, 1.7])):
        recs = [Record(100 * (k + 1), x, val_loss=v) for k, (x, v) in enumerate(zip(train, val))]
        assert raised(one_at_a_time(recs)[1], "dead") == []
    assert raised(one_at_a_time(_bert())[1], "dead") == []


def test_a_forward_filled_export_repeating_values_unevenly_is_not_frozen():
    # a loss logged every 50 steps merged with an LR logged every 30, the loss filled forward:
    # each six-digit value on 2 or 3 rows, a healthy run's noise around 0.4
    rows = [(0, .395244, 1e-4), (30, .395244, 1e-4), (50, .395889, None), (60, .395889, 1e-4),
            (90, .395889, 1e-4), (100, .434059, None), (120, .434059, 1e-4), (150, .371828, 1e-4),
            (180, .371828, 1e-4), (200, .416989, None), (210, .416989, 1e-4), (240, .416989, 1e-4)]
    recs = [Record(s, x, lr=lr) for s, x, lr in rows]
    assert raised(one_at_a_time(recs)[1], "dead") == []
    assert raised(in_batches(recs, 5)[1], "dead") == []
    # the same export whose loss then stops moving is still told (five records of one value)
    frozen = recs + [Record(240 + 30 * k, .416989, lr=1e-4) for k in range(1, 7)]
    assert [a.step for a in raised(one_at_a_time(frozen)[1], "dead")] == [300]


def test_a_six_digit_run_must_outlast_twice_the_logs_earlier_repeats():
    # a value printed three times after the loss moved is a freeze ...
    fresh = [2.4, 1.90113, 1.80452, 2.0112, 2.51936, 2.51936, 2.51936]
    got = raised(one_at_a_time([Record(s, x) for s, x in enumerate(fresh)])[1], "dead")
    assert [a.step for a in got] == [6] and "six significant digits for 3 records" in got[0].message
    # ... but not in a log that already wrote one value twice: it needs five
    twice = [2.4, 2.31847, 2.31847, 1.90113, 1.80452, 2.0112, 2.51936, 2.51936, 2.51936]
    assert raised(one_at_a_time([Record(s, x) for s, x in enumerate(twice)])[1], "dead") == []
    got = raised(one_at_a_time([Record(s, x) for s, x in enumerate(twice + [2.51936] * 2)])[1], "dead")
    assert [a.step for a in got] == [10]
