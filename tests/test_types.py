"""The shared record/alert contract round-trips through JSON without losing NaN or infinity."""

import json
import math

import pytest

from losswatch.detectors.types import Action, Alert, Record


def test_record_keeps_nan_and_infinity_through_json():
    r = Record.from_dict({"step": 7, "loss": "NaN", "grad_norm": "Infinity", "lr": "-Infinity"})
    wire = json.loads(json.dumps(r.to_dict()))
    back = Record.from_dict(wire)
    assert math.isnan(back.loss) and back.grad_norm == math.inf and back.lr == -math.inf
    assert back.val_loss is None


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, None])
def test_record_rejects_bad_steps(step):
    with pytest.raises((ValueError, TypeError, KeyError)):
        Record.from_dict({"step": step})


def test_alert_id_is_deterministic_and_round_trips():
    a = Alert("run-1", 12, "divergence", "critical", "divergence", "loss rose",
              action=Action("scale_lr", {"factor": 0.1}, "the loss is running away"))
    assert a.id == "run-1:divergence:12"
    b = Alert.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b == a


def test_two_detectors_of_one_kind_opening_on_one_step_get_distinct_ids():
    a = Alert("r", 40, "lr_anomaly", "warning", "lr_anomaly", "LR jumped 100x")
    b = Alert("r", 40, "lr_anomaly", "warning", "schedule_monitor", "LR is not the declared schedule")
    assert a.id == "r:lr_anomaly:40" and b.id == "r:lr_anomaly.schedule_monitor:40"
    assert a.id != b.id


def test_encode_floats_keeps_non_finite_values_visible_at_any_depth():
    import numpy as np

    from losswatch.detectors.wire import encode_floats

    doc = {"a": float("nan"), 3: [float("inf"), (np.float64("-inf"), 1.5)], "s": "x"}
    out = encode_floats(doc)
    assert out == {"a": "NaN", "3": ["Infinity", ["-Infinity", 1.5]], "s": "x"}
    json.dumps(out, allow_nan=False)  # strict JSON
