"""Dead runs in short excerpts (a few lines of a thread, an epoch table), on verbatim excerpts from
the tune part of the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part
is never read here.

- a loss that moved off its first value and then prints one value to six significant digits on
  three records in a row, at or above where it started: a saturated, constant output
  (:mod:`losswatch.detectors.dead_rules.frozen`);
- evaluations within 1.5 % of ln(k), none below ln(k) as far as its printed digits tell, the
  training loss no better than ln(k) either, the evaluations' falls stalled: a classifier no better
  than the uniform guess (:mod:`losswatch.detectors.dead_rules.evaluations_at_chance`).
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


def test_a_classifier_whose_evaluations_never_beat_ln2_is_dead():
    got = raised(one_at_a_time(_bert())[1], "dead")
    assert [(a.step, a.action.type, a.evidence["watch"]) for a in got] == [(3425, "stop", "val_loss")]
    assert "ln(2) = 0.6931" in got[0].message
    # four epochs are not enough (the falls have not stalled twice yet)
    assert raised(one_at_a_time(_bert()[:4])[1], "dead") == []


def test_evaluations_at_ln2_with_a_training_loss_below_it_are_not_dead():
    # the network fits its training set (below ln 2) while its evaluations sit at chance: an
    # overfitting shape, not a constant output
    recs = [Record(s, x - 0.02 * (s // 685), val_loss=v) for s, x, v in BERT_LN2]
    assert raised(one_at_a_time(recs)[1], "dead") == []


def test_evaluations_that_fall_through_ln2_at_a_steady_pace_are_not_dead():
    # a network learning slowly from chance: its evaluations fall ~0.002 each time, through ln 2
    recs = [Record(685 * (k + 1), 0.705 - 0.002 * k, val_loss=0.7030 - 0.0021 * k) for k in range(7)]
    assert raised(one_at_a_time(recs)[1], "dead") == []


# histories/wenxin-jiang__cs577-nlp__model-card-allenai-bhaskara.csv (label overfitting): a
# GPT-Neo fine-tune's evaluations, every 100 steps from step 100, read without its training loss:
# below ln 2 from step 600 (lowest 0.5884), then rising back across it after the second epoch.
BHASKARA_VAL = [0.7930, 0.7544, 0.7358, 0.7192, 0.7012, 0.6904, 0.6802, 0.6670, 0.6572, 0.6499,
                0.6411, 0.6343, 0.6299, 0.6221, 0.6157, 0.6138, 0.6055, 0.6143, 0.6191]
BHASKARA_RISE = [(5300, 0.7188), (5400, 0.7017), (5500, 0.6982), (5600, 0.7031), (5700, 0.6992),
                 (5800, 0.6997), (5900, 0.7041), (6000, 0.7075)]


def test_evaluations_that_rise_back_across_ln2_after_beating_it_are_not_dead():
    recs = [Record(100 * (k + 1), None, val_loss=v) for k, v in enumerate(BHASKARA_VAL)]
    recs += [Record(s, None, val_loss=v) for s, v in BHASKARA_RISE]
    assert raised(one_at_a_time(recs)[1], "dead") == []


def test_an_evaluations_only_log_written_again_line_by_line_is_not_a_stall():
    # histories/wenxin-jiang__cs577-nlp__model-card-sandipan1994-t5-small-entailement-writer-t5-base.csv
    # (healthy, no training loss logged): its first evaluations, 1.8185 (1.5 % above ln 6) and
    # then well below, each line written four times
    vals = [1.8185, 1.1957, 0.9771, 0.8964]
    recs = [Record(4 * s + j, None, val_loss=v) for s, v in enumerate(vals) for j in range(4)]
    assert raised(one_at_a_time(recs)[1], "dead") == []
