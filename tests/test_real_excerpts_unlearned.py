"""Runs that never learned, seen in the few records a short excerpt or an epoch log holds, and
overfitting from the first epoch of a table numbered from 0: real logs of the tune part of the
corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part is never read here."""

from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records

KERAS = "issues/keras-team__keras__6132.csv"  # loss 1.0097 and val_loss 1.0082 on each of 3 epochs
GAN = "histories/0111yoyo__gan1202__training-log-csv.csv"  # a healthy GAN, its loss rising
MOBILENET = "issues/archsyscall__convnets-tensorflow2__2.csv"  # test loss 2.3085 -> 2.3036, onto ln 10
DISTILGPT2 = "histories/wenxin-jiang__cs577-nlp__model-card-mariazafar-distilgpt2-finetuned-wikitext2.csv"
GPT2 = "histories/wenxin-jiang__cs577-nlp__model-card-ashraf-kasem-gpt2-fine-tune-polynomialdecay.csv"


def _dead(recs):
    return raised(one_at_a_time(recs)[1], "dead")


def _same_in_batches(recs):
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    for size in (2, 64):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size
    return ref


def test_training_and_validation_loss_frozen_together_from_the_first_epoch_are_dead_on_the_third():
    recs = tune_records(KERAS)
    dead = _dead(recs)
    assert [(a.step, a.action.type) for a in dead] == [(3, "stop")]
    assert "1.0082" in dead[0].message and "1.0097" in dead[0].message
    assert _same_in_batches(recs)


def test_one_frozen_column_or_a_run_that_learned_first_is_not_dead_after_three_records():
    recs = tune_records(KERAS)
    # a logger that repeats the last training loss while the evaluations move
    moving = [replace(r, val_loss=1.0082 - 0.01 * k) for k, r in enumerate(recs)]
    assert _dead(moving) == []
    # the same frozen pair after the evaluations had fallen from 1.3: a converged run's prints
    learned = [replace(recs[0], step=0, loss=1.3, val_loss=1.3)] + recs
    assert _dead(learned) == []


def test_a_log_that_writes_each_loss_four_times_is_not_a_frozen_output():
    # gradient accumulation or a forward-filled export writes each training loss m times: a
    # healthy GAN's rising discriminator loss repeats its float on every copy
    # (its first 20 records: later on, 6 copies are 1.5 records and the rules that count 6
    # records in a row read the copies too)
    recs = [replace(r, step=4 * r.step + j, val_loss=r.val_loss if j == 0 else None)
            for r in tune_records(GAN)[:20] for j in range(4)]
    assert _dead(recs) == []
    assert _same_in_batches(recs) == []


def test_evaluations_that_converge_onto_ln_k_from_above_are_dead_and_through_it_are_not():
    recs = tune_records(MOBILENET)
    dead = _dead(recs)
    assert [(a.step, a.action.type) for a in dead] == [(4, "stop")]
    assert "ln(10)" in dead[0].message and "no better than a uniform guess" in dead[0].message
    assert _same_in_batches(recs)
    # a network that learns evaluates below ln(k): 2.3044, then 2.2990, 2.2950
    learns = [recs[0], recs[1]] + [replace(r, val_loss=v) for r, v in zip(recs[2:], (2.2990, 2.2950))]
    assert _dead(learns) == []


def test_a_table_of_epochs_numbered_from_0_warns_of_overfitting_from_its_first_epoch():
    recs = tune_records(DISTILGPT2)  # Keras model card: "Epoch 0" is the first epoch's result
    of = raised(one_at_a_time(recs)[1], "overfitting")
    assert [(a.step, a.action.params["to_step"]) for a in of] == [(3, 0)]
    assert _same_in_batches(recs)
    # the same table with its step column in another unit (steps 0, 10, 20, ...: micro-batches)
    # is still one row per evaluation at a constant stride: the same warning, in its steps
    for unit in (10, 100):
        spaced = [replace(r, step=unit * r.step) for r in recs]
        of = raised(one_at_a_time(spaced)[1], "overfitting")
        assert [(a.step, a.action.params["to_step"]) for a in of] == [(3 * unit, 0)], unit
        assert _same_in_batches(spaced)
    # the same evaluations with training records between them (a per-step log that evaluated
    # the untrained model at step 0 and then every 100 steps): no best to come back to
    trained = []
    for r in recs:
        trained.append(replace(r, step=100 * r.step))
        trained += [replace(r, step=100 * r.step + k, val_loss=None) for k in (25, 50, 75)]
    assert raised(one_at_a_time(trained)[1], "overfitting") == []
    # a table whose stride changes is still one row per evaluation, each after an interval of
    # training (a logger that writes less often later, an excerpt thinned after its first rows):
    # the same warning (changelog row 98: it was read as evaluations from an untrained model)
    uneven = [replace(r, step=r.step * 100 + (50 if r.step >= 2 else 0)) for r in recs]
    of = raised(one_at_a_time(uneven)[1], "overfitting")
    assert [(a.step, a.action.params["to_step"]) for a in of] == [(350, 0)]
    assert _same_in_batches(uneven)


def test_a_slow_fine_tune_whose_validation_loss_drifts_up_warns_once_its_training_loss_fell_a_fifth():
    # GPT-2 fine-tune, val 3.42 after epoch 0 and trending up; the training loss falls 2.06 -> 1.46
    recs = tune_records(GPT2)
    of = raised(one_at_a_time(recs)[1], "overfitting")
    assert _same_in_batches(recs)
    assert [(a.evidence["rule"], a.action.params["to_step"]) for a in of] == [("drift", 0)]
    assert of[0].evidence["train_loss"] <= 0.8 * of[0].evidence["train_loss_at_best"]


def test_evaluations_no_better_than_chance_advise_the_checks_of_a_uniform_guess():
    stop = _dead(tune_records(MOBILENET))[0].action
    assert "uniform guess" in stop.reason and "constant output" not in stop.reason
