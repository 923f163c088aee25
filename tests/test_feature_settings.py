"""The feature settings are checked where the tracker is built: a bad one is a clear error, not
two paths that silently disagree."""

from __future__ import annotations

import pytest

from losswatch.detectors import Batch, Engine
from losswatch.detectors.features import DEFAULT_PARAMS, FeatureTracker
from losswatch.detectors.types import Record


@pytest.mark.parametrize("settings, words", [
    ({"start_records": 5.5}, "start_records' must be a positive integer"),
    ({"start_records": 0}, "start_records' must be a positive integer"),
    ({"start_records": True}, "must be a finite number"),
    ({"start_low": "1.5"}, "must be a finite number"),
    ({"start_rise": float("nan")}, "must be a finite number"),
    ({"alpha_slow": 0.0}, "EMA weight in (0, 1]"),
    ({"start_low": -1.0}, "must be >= 0"),
    ({"start_record": 5}, "unknown feature setting 'start_record'"),
])
def test_a_bad_feature_setting_is_a_value_error_naming_it(settings, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        FeatureTracker(settings)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Engine("r", params={"features": settings})


def test_an_integral_start_records_is_a_count_both_paths_read_alike():
    tracker = FeatureTracker({"start_records": 3.0})
    assert tracker.params["start_records"] == 3 and isinstance(tracker.params["start_records"], int)
    assert FeatureTracker().params == DEFAULT_PARAMS
    losses = [0.3, 0.5, 0.55, 0.45, 0.6, 0.5]  # a low first draw: the median of three replaces it
    one = FeatureTracker({"start_records": 3.0})
    rows = [one.advance_one(s, x, None, None, None) for s, x in enumerate(losses)]
    batch = FeatureTracker({"start_records": 3.0}).advance_batch(
        Batch.from_records([Record(s, x) for s, x in enumerate(losses)]))
    assert [r.l0[0] for r in rows] == list(batch.l0) == [0.3, 0.3, 0.5, 0.5, 0.5, 0.5]
