"""A non-finite grad-norm beside a loss that jumped: the NaN rule's ``JUMP`` branch, on real logs
of the corpus's tune part (bench/real/, provenance in bench/real/SOURCES.md). The holdout part is
never read here."""

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine

# a 7B vision-language fine-tune: 14.68 (grad-norm 86.9), 14.36 (90.6), then 8,196 with a NaN
# grad-norm at its third logged step
BLOWN_UP = "issues/lavi-lab__vg-llm__45.csv"
# fp16 / loss-scaler logs whose NaN grad-norms sit beside the run's usual loss (0.9-1.6x the one
# before): the rule's routine skip, a warning without advice, unless they repeat
SCALER_SKIPS = ["issues/modelscope__ms-swift__2436.csv", "issues/zai-org__glm-4__174.csv"]


def test_a_loss_571x_the_one_before_beside_a_nan_grad_norm_is_critical_with_a_rollback():
    nan = raised(one_at_a_time(tune_records(BLOWN_UP))[1], "nan")
    assert [(a.step, a.severity, a.action.type, a.action.params) for a in nan] == [
        (70, "critical", "rollback", {"to_step": 60})]
    assert nan[0].message == ("grad-norm is NaN at step 70 with the loss at 8.2e+03, 571x the loss logged "
                              "before it (14.4 at step 60)")
    assert "restart with a lower LR" in nan[0].action.reason


def test_the_batch_path_gives_the_same_alerts():
    recs = tune_records(BLOWN_UP)
    one = [(a.id, a.event, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    assert one == [(a.id, a.event, a.severity, a.last_step) for a in Engine("r").update_batch(recs)]


def test_nan_grad_norms_beside_the_usual_loss_stay_the_loss_scalers_routine_skip():
    for rel in SCALER_SKIPS:
        first = raised(one_at_a_time(tune_records(rel))[1], "nan")[0]
        assert (first.severity, first.action.type, first.evidence["signal"]) == ("warning", "none", "grad-norm"), rel
