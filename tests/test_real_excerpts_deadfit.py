"""Dead and overfitting runs in the forms real logs take beyond the ones they were first tuned on,
on real excerpts from the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md), reshaped as a log of another cadence or with fewer columns would show
them. The holdout part is never read here."""

from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records

EPOCHS = "issues/lyhue1991__eat_tensorflow2_in_30_days__69__repro.csv"  # val 0.4915 at epoch 2, then up
TRAINER = "histories/nicolassalvan__mti881-projet2__resultsetape3-trainer-state.csv"  # eval rows of their own


def _val_only(recs):
    return [replace(r, loss=None, grad_norm=None, lr=None) for r in recs if r.val_loss is not None]


def test_a_validation_loss_rising_from_its_best_is_overfitting_when_the_log_has_no_training_loss():
    for rel, best in ((EPOCHS, 2), (TRAINER, 5600)):
        recs = _val_only(tune_records(rel))
        ov = raised(one_at_a_time(recs)[1], "overfitting")
        assert len(ov) == 1, rel
        assert ov[0].action.type == "rollback" and ov[0].action.params == {"to_step": best}
        assert "no training loss logged" in ov[0].message
        assert "training loss keeps falling" not in ov[0].action.reason
        assert "no LR change" in ov[0].action.reason


def test_a_training_loss_that_is_logged_must_still_fall():
    # the same evaluations with a training loss that rises with them: not memorisation
    recs = _val_only(tune_records(EPOCHS))
    rising = [replace(r, loss=0.3 + 0.1 * k) for k, r in enumerate(recs)]
    assert raised(one_at_a_time(rising)[1], "overfitting") == []


def test_both_paths_agree_on_a_log_without_training_loss():
    recs = _val_only(tune_records(TRAINER))
    ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
    assert ref
    for size in (1, 3, 100):
        assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, size
