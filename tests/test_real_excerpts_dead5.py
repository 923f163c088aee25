"""Dead runs at chance in epoch logs of a few rows, told by their evaluations, on verbatim logs of
the tune part of the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part
is never read here.

- evaluations at or just above ln(k) that make no new low, wobbling in their last digits, while
  the training loss sits anywhere at or above chance (a Keras loss that adds its weight
  penalties prints far above ln(k)): :mod:`losswatch.detectors.dead_rules.evaluations_at_chance`;
- a training loss that starts at chance and prints ln(k) itself epoch after epoch while its
  evaluations never leave ln(k): :mod:`losswatch.detectors.dead_rules.at_chance`.
"""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# histories/f-macfarlane95__sorghum-id-fgvc-9__history-efficientnetb420220420-201423-csv.csv: a
# Keras EfficientNetB4 on 100 sorghum cultivars, 10 epochs; validation loss 4.6066-4.6153 (ln 100
# = 4.6052) with validation accuracy at chance, training loss 8.65 -> 8.38. Label dead, onset 0.
SORGHUM = "histories/f-macfarlane95__sorghum-id-fgvc-9__history-efficientnetb420220420-201423-csv.csv"
SORGHUM_ROWS = [(8.652735710144043, 4.606568336486816), (8.546472549438477, 4.613698482513428),
                (8.538214683532715, 4.613082408905029), (8.471268653869629, 4.615259647369385),
                (8.492751121520996, 4.613841533660889), (8.455045700073242, 4.613996982574463),
                (8.47413158416748, 4.613678932189941)]

# histories/maciejkonkolh__cryptobot09072025__dane-logi-md.csv: a 3-class Conv1D-LSTM, five Keras
# epoch lines: loss 1.0988, then 1.0986 (= ln 3) four times, val_loss 1.0974-1.1003. Label dead,
# onset 1.
CRYPTOBOT = "histories/maciejkonkolh__cryptobot09072025__dane-logi-md.csv"
CRYPTO_ROWS = [(1, 1.0988, 1.0974), (2, 1.0986, 1.0981), (3, 1.0986, 1.1003), (4, 1.0986, 1.0995),
               (5, 1.0986, 1.0990)]


# histories/benbradshaww__dogs_vs_cats__history-history-csv.csv: a healthy dogs-vs-cats EfficientNet,
# 148 epochs, validation loss 2.42 -> 0.62 -> ~0.03. Label healthy.
DOGS = "histories/benbradshaww__dogs_vs_cats__history-history-csv.csv"


def _sorghum(train=None, shift=0.0):
    return [Record(s, x - shift if train is None else train, val_loss=v) for s, (x, v) in enumerate(SORGHUM_ROWS)]


def _crypto(vals=True, shift=0.0):
    return [Record(s, x, val_loss=v + shift if vals else None) for s, x, v in CRYPTO_ROWS]


def test_evaluations_wobbling_just_above_ln_100_with_no_new_low_are_dead_whatever_the_training_loss():
    got = raised(one_at_a_time(tune_records(SORGHUM))[1], "dead", "warning")
    assert [(a.step, a.action.type) for a in got] == [(6, "stop")]
    assert "no better than a uniform guess over 100 classes" in got[0].message
    # with a training loss frozen at chance, dead as soon (other rules may see it first)
    assert [a.step <= 6 for a in raised(one_at_a_time(_sorghum(4.61))[1], "dead", "warning")] == [True]


def test_evaluations_that_keep_making_new_lows_or_a_training_loss_below_chance_are_not_dead():
    # a slow learner falling through the band at a steady pace: a new low on every evaluation
    slow = [Record(s, 8.6 - 0.03 * s, val_loss=4.6140 - 0.0012 * s) for s in range(8)]
    assert raised(one_at_a_time(slow)[1], "dead") == []
    # a training loss that left chance downwards has learned its batches (overfitting's concern)
    assert raised(one_at_a_time(_sorghum(shift=4.6))[1], "dead") == []


def test_evaluations_that_fell_onto_ln_k_from_far_above_with_the_training_loss_above_are_not_read():
    # the healthy log in other units (+1): its evaluations converge at 1.098-1.099 around epoch 63,
    # on ln 3 by chance, its training loss at 1.11-1.13; its first evaluation was 3.42
    shifted = [Record(r.step, r.loss + 1.0, val_loss=r.val_loss + 1.0) for r in tune_records(DOGS)]
    assert raised(one_at_a_time(shifted)[1], "dead") == []


def test_a_loss_at_ln_3_itself_from_a_first_epoch_at_chance_with_its_evaluations_at_chance_is_dead():
    got = raised(one_at_a_time(tune_records(CRYPTOBOT))[1], "dead", "warning")
    assert [(a.step, a.action.type) for a in got] == [(4, "stop")]
    assert "exactly ln(3) = 1.0986" in got[0].message
    # without evaluations, five records from a first loss at chance are too few (chance_records)
    assert raised(one_at_a_time(_crypto(vals=False))[1], "dead") == []
    # evaluations that went below chance by more than the evaluations' band learned something
    assert raised(one_at_a_time(_crypto(shift=-0.03))[1], "dead") == []
    # one evaluation repeated on every row (a logger writing its last evaluation again, the same
    # float) is one evaluation, not three: a zero-initialised head's first steps read so too
    same = [Record(s, x, val_loss=1.0974) for s, x, _ in CRYPTO_ROWS]
    assert raised(one_at_a_time(same)[1], "dead") == []


def _step0_eval():
    # 10 classes evaluated every 25 steps, the first at step 0 (the untrained model, 2.3027); the
    # next ones bump up to 2.3060 and then fall steadily: 2.3050, 2.3040, 2.3030, 2.26, 2.22 ...
    vals = [2.3027, 2.3060, 2.3050, 2.3040, 2.3030, 2.26, 2.22, 2.18, 2.14]
    recs = []
    for s in range(0, 201, 5):
        t = 2.315 + 0.012 * ((s // 5) % 3 - 1) - 0.00005 * s if s < 150 else 2.305 - 0.001 * (s - 150)
        recs.append(Record(s, round(t, 4), val_loss=vals[s // 25] if s % 25 == 0 else None))
    return recs


def test_the_first_evaluation_is_no_low_to_beat():
    # the untrained model's evaluation at step 0 is set aside: the evaluations after it make a
    # new low every time, so they are not stuck
    assert raised(one_at_a_time(_step0_eval())[1], "dead") == []


def _dogs_plus1_from(epoch):
    return [Record(r.step, r.loss + 1.0, val_loss=r.val_loss + 1.0) for r in tune_records(DOGS) if r.step >= epoch]


def test_a_training_loss_just_above_the_band_is_not_waived_by_a_first_evaluation_at_chance():
    # the healthy dogs-vs-cats log in other units (+1), from epoch 47 on: its first evaluation
    # 1.115 is already within 1.5 % of ln 3, its training loss 1.11-1.16, not far above ln 3
    assert raised(one_at_a_time(_dogs_plus1_from(47))[1], "dead") == []
    # a fine-tune that starts at its floor: the training loss still falling 1.25 -> 1.21
    tune = [Record(s, t, val_loss=v) for s, (t, v) in
            enumerate(zip([1.25, 1.24, 1.22, 1.21], [1.0995, 1.0990, 1.0992, 1.0991]), 1)]
    assert raised(one_at_a_time(tune)[1], "dead") == []
    # 10 classes from a bad initialisation: a new low of the training loss on every record
    vals = {0: 2.331, 50: 2.3050, 100: 2.3041, 150: 2.3046}
    bad = [Record(s, 2.60 - 0.0012 * s, val_loss=vals.get(s)) for s in range(0, 151, 10)]
    assert raised(one_at_a_time(bad)[1], "dead") == []


def test_a_training_loss_in_the_band_making_new_lows_is_no_stall():
    # a binary classifier that starts slowly: its evaluations wobble 0.6936, 0.6938, 0.6937 while
    # its training loss makes a new low on each (0.6936, 0.6934, 0.6933), then it learns
    rows = [(0.6950, 0.6940), (0.6936, 0.6936), (0.6934, 0.6938), (0.6933, 0.6937), (0.68, 0.689),
            (0.62, 0.61), (0.55, 0.55), (0.50, 0.52)]
    slow = [Record(s, t, val_loss=v) for s, (t, v) in enumerate(rows, 1)]
    assert raised(one_at_a_time(slow)[1], "dead") == []
    # the same evaluations with the training loss logged with them stuck too: dead
    stuck = [Record(s, 0.6936 if s > 1 else t, val_loss=v) for s, (t, v) in enumerate(rows[:4], 1)]
    assert [a.step for a in raised(one_at_a_time(stuck)[1], "dead")] == [4]


def test_a_training_loss_first_logged_after_the_evaluations_began_is_read_from_its_first_value():
    # the same classifier whose first two lines carry an evaluation only: the training loss that
    # follows makes a new low on each line, so it is learning, not stuck (its low to beat was
    # NaN, and against NaN no loss was ever a new low: "dead" at step 4)
    rows = [(None, 0.6940), (None, 0.6936), (0.6934, 0.6938), (0.6933, 0.6937), (0.6932, 0.6936),
            (0.68, 0.689), (0.62, 0.61), (0.55, 0.55)]
    late = [Record(s, t, val_loss=v) for s, (t, v) in enumerate(rows, 1)]
    assert raised(one_at_a_time(late)[1], "dead") == []
    # a training loss that joins at a value and stays there is stuck with its evaluations: dead
    # once it has made no new low on two separate evaluations after its first
    vals = [0.6940, 0.6936, 0.6938, 0.6937, 0.6939, 0.6938]
    stuck = [Record(s, 0.6936 if s > 2 else None, val_loss=v) for s, v in enumerate(vals, 1)]
    assert [a.step for a in raised(one_at_a_time(stuck)[1], "dead")] == [5]


def test_evaluations_that_were_once_below_the_band_do_not_back_a_loss_at_ln_3_from_a_first_loss_at_chance():
    # the cryptobot rows with a first evaluation of 1.05, below ln 3 by more than 1.5 %: the network
    # learned something on the held-out set once; three evaluations in the band after it and a
    # training loss at ln 3 itself from a first loss at chance are not enough
    recs = [Record(s, x, val_loss=1.05 if s == 1 else v) for s, x, v in CRYPTO_ROWS]
    assert raised(one_at_a_time(recs)[1], "dead") == []


def test_both_paths_agree():
    for recs in (tune_records(SORGHUM), _sorghum(4.61), tune_records(CRYPTOBOT), _crypto(vals=False),
                 _step0_eval(), _dogs_plus1_from(47)):
        ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
        for size in (1, 2, 3, 100):
            assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size
