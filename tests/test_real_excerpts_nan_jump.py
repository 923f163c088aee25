"""A non-finite grad-norm beside a loss that jumped: the NaN rule's ``JUMP`` branch, on real logs
of the corpus's tune part (bench/real/, provenance in bench/real/SOURCES.md). The holdout part is
never read here."""

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

NAN = float("nan")

# a 7B vision-language fine-tune: 14.68 (grad-norm 86.9), 14.36 (90.6), then 8,196 with a NaN
# grad-norm at its third logged step
BLOWN_UP = "issues/lavi-lab__vg-llm__45.csv"
# fp16 / loss-scaler logs whose NaN grad-norms sit beside the run's usual loss (0.9-1.6x the one
# before): the rule's routine skip, a warning without advice, unless they repeat
SCALER_SKIPS = ["issues/modelscope__ms-swift__2436.csv", "issues/zai-org__glm-4__174.csv"]


def test_a_loss_558x_every_loss_before_beside_a_nan_grad_norm_is_critical_with_a_rollback():
    nan = raised(one_at_a_time(tune_records(BLOWN_UP))[1], "nan")
    assert [(a.step, a.severity, a.action.type, a.action.params) for a in nan] == [
        (70, "critical", "rollback", {"to_step": 60})]
    assert nan[0].message == ("grad-norm is NaN at step 70 with the loss at 8.2e+03, 558x the highest loss "
                              "logged before it (14.7; the last, 14.4 at step 60)")
    assert "restart with a lower LR" in nan[0].action.reason


def test_the_batch_path_gives_the_same_alerts():
    recs = tune_records(BLOWN_UP)
    one = [(a.id, a.event, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    assert one == [(a.id, a.event, a.severity, a.last_step) for a in Engine("r").update_batch(recs)]


def test_nan_grad_norms_beside_the_usual_loss_stay_the_loss_scalers_routine_skip():
    for rel in SCALER_SKIPS:
        first = raised(one_at_a_time(tune_records(rel))[1], "nan")[0]
        assert (first.severity, first.action.type, first.evidence["signal"]) == ("warning", "none", "grad-norm"), rel


def test_a_hard_batch_near_the_floor_is_no_blow_up():
    # a fine-tune at 0.02-0.03 whose hard batch reads 0.30 with an overflowing gradient: 10x the
    # loss before it, not 10x anything the run logged (it started at 2.1)
    losses = [2.1, 1.2, 0.5] + [0.02 + 0.01 * (s % 2) for s in range(3, 200)] + [0.30]
    gns = [1.0] * 200 + [float("inf")]
    nan = raised(one_at_a_time([Record(s, x, g) for s, (x, g) in enumerate(zip(losses, gns))])[1], "nan")
    assert [(a.severity, a.action.type) for a in nan] == [("warning", "none")]


def test_a_jump_after_a_skipped_step_is_the_batchs():
    # the scaler skipped the step before (its grad-norm NaN): the weights are the ones that logged
    # 1.8, so the jump on the next record is the batch's; two in a row stay a warning until three
    losses, gns = [2.0, 1.9, 1.8, 21.0, 1.7], [1.0, 1.0, NAN, NAN, 1.0]
    nan = raised(one_at_a_time([Record(s, x, g) for s, (x, g) in enumerate(zip(losses, gns))])[1], "nan")
    assert [(a.step, a.severity) for a in nan] == [(2, "warning")]


def test_a_spike_beside_grad_norms_that_are_all_nan_is_not_told_no_grad_norm_is_logged():
    recs = [Record(s, 2.0 + 0.01 * (s % 3), NAN) for s in range(150)] + [Record(150, 9.0, NAN)]
    spike = raised(one_at_a_time(recs)[1], "spike")
    assert spike and "Too few finite grad-norms are logged yet to size a clip" in spike[0].action.reason
    plain = raised(one_at_a_time([Record(r.step, r.loss) for r in recs])[1], "spike")
    assert plain and "No grad-norm is logged to size a clip" in plain[0].action.reason
