"""In a dense log (many training records between two evaluations) the overfitting rules that read
the training loss at the evaluations (steady_rise, drift) read its level, not one minibatch's
draw: a benchmark run whose per-step training loss is flat and noisy is not memorising because
three single draws happened to fall. The excerpts are verbatim rows of the benchmark's held-out
runs (bench/holdout/runs/, seeds 2-3, which the detection brief lets helpers read)."""

from pathlib import Path

from detector_helpers import in_batches, one_at_a_time, raised
from losswatch.detectors.base import drive
from losswatch.detectors.overfitting import OverfittingDetector
from losswatch.detectors.types import Record
from losswatch.service.readers import read_run

RUNS = Path(__file__).resolve().parents[1] / "bench" / "holdout" / "runs"
# A least-squares model, Adam at 10x its tuned LR, held-out seed 2: labelled healthy (its last
# three evaluations are within 1.25x its best). Evaluated every 25 steps; the per-step training
# loss is flat at ~0.55 (means of 25 steps 0.57, 0.57, 0.60, 0.56, 0.53) with minibatch draws
# from 0.2 to 1.4. The validation loss goes 0.563 (step 50) -> 0.616 -> 0.656 -> 0.691 (step
# 125), then back to 0.64, 0.56. The single training records at those evaluations happened to
# fall each time (0.716, 0.640, 0.495, 0.441 at steps 50-125): it was warned "overfitting" at 125.
LINREG = "linreg-adam-constant-x10-s2.csv"


def _excerpt(name, last_step):
    return [r for r in read_run(RUNS / name) if r.step <= last_step]


def test_the_excerpt_is_what_the_docstring_says():
    recs = _excerpt(LINREG, 125)
    vals = [(r.step, r.val_loss) for r in recs if r.val_loss is not None]
    assert vals[2:] == [(50, 0.562728), (75, 0.61646), (100, 0.656236), (125, 0.691245)]
    assert [(r.step, r.loss) for r in recs if r.step % 25 == 0][2:] == [
        (50, 0.716438), (75, 0.640353), (100, 0.495338), (125, 0.441015)]


def test_flat_noisy_training_loss_is_no_memorisation():
    assert drive(OverfittingDetector(), _excerpt(LINREG, 125)) == []


def test_no_overfitting_warning_on_the_whole_run():
    recs = list(read_run(RUNS / LINREG))
    alerts = raised(one_at_a_time(recs)[1], kind="overfitting", min_severity="warning")
    assert alerts == []


def test_a_training_level_that_falls_still_makes_the_trend():
    # the same records, the training loss scaled down steadily after the best evaluation (its
    # level falls ~60 % by step 125): the validation rises are memorisation again
    recs = [Record(r.step, r.loss * (1.0 - 0.008 * max(0, r.step - 40)), r.grad_norm, r.lr, r.val_loss)
            for r in _excerpt(LINREG, 125)]
    alerts = drive(OverfittingDetector(), recs)
    assert [(a.step, a.evidence["rule"], a.action.params) for a in alerts] == [
        (125, "steady_rise", {"to_step": 50})]


def test_both_paths_agree():
    recs = list(read_run(RUNS / LINREG))
    recs = recs + [Record(r.step + 400, r.loss * 0.5, r.grad_norm, r.lr,
                          None if r.val_loss is None else r.val_loss * (1.0 + r.step / 400))
                   for r in recs]
    ref = [(a.id, a.event, a.severity, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 7, 64, 1000):
        assert [(a.id, a.event, a.severity, a.message) for a in in_batches(recs, size)[1]] == ref
