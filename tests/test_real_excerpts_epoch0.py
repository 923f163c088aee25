"""A table of epochs numbered from 0, logged at an uneven stride or with each line written
twice, on a real excerpt from the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md): its "Epoch 0" row is the first epoch's result, a trained model, however
often the table was written. The holdout part is never read here."""

from detector_helpers import raised, replay

# histories/wenxin-jiang__cs577-nlp__model-card-mariazafar-distilgpt2-finetuned-wikitext2.csv,
# rows 0-10 verbatim (step = the card's Epoch, training loss, validation loss): distilgpt2
# fine-tuned with Keras, val lowest after epoch 0 and rising on each epoch after it while the
# training loss falls
TABLE = [(0, 3.4903, 2.4602), (1, 2.5910, 2.5912), (2, 2.1133, 2.8207), (3, 1.5857, 3.1597),
         (4, 1.0852, 3.3317), (5, 0.6812, 3.6312), (6, 0.4490, 3.8533), (7, 0.3188, 4.0209),
         (8, 0.2401, 4.1932), (9, 0.1987, 4.3469), (10, 0.1705, 4.4238)]


def _replay(rows):
    steps, train, val = (list(c) for c in zip(*rows))
    return raised(replay(train, vals=val, steps=steps)[1], "overfitting")


def test_the_table_as_written_warns_from_epoch_0():
    of = _replay(TABLE)
    assert [(a.step, a.action.params["to_step"]) for a in of] == [(3, 0)]


def test_a_table_written_every_epoch_then_every_other_one_still_has_a_trained_epoch_0():
    # epochs 0-2, then every 2nd: one row per evaluation still, the stride changes (a callback
    # that logs less often later, an excerpt thinned after its first rows)
    rows = TABLE[:3] + TABLE[4::2]
    of = _replay(rows)
    assert [(a.step, a.action.params["to_step"]) for a in of] == [(4, 0)]


def test_a_table_with_each_line_written_twice_still_has_a_trained_epoch_0():
    # a logger that prints each epoch's line on two steps in a row: the second copy of row 0
    # repeats its training loss, which is no sign that the first interval failed to train
    rows = [(2 * s + j, x, v) for s, x, v in TABLE for j in (0, 1)]
    of = _replay(rows)
    assert [a.action.params["to_step"] for a in of][:1] == [0]


def test_a_first_interval_whose_training_loss_rose_still_reads_as_a_blown_up_model():
    # the same table with its second row's training loss above its first (an SGD x100 run:
    # 2.38 -> 7.48): row 0 is the untrained model, nothing to roll back to
    rows = [(0, 2.38, 2.4602), (1, 7.48, 2.5912)] + TABLE[2:3] + TABLE[4::2]
    assert _replay(rows) == []
