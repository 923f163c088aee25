"""The two validation passes of the ingest fast path agree: the column-wise one (well-formed
batches) and the record-by-record one (everything else), on generated batches."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from losswatch.service.ingest import IngestError, _checked_columns, _fast_columns, parse_steps

value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                  st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "-inf"]))
record = st.fixed_dictionaries(
    {"step": st.integers(0, 2**40)},
    optional={"loss": value, "grad_norm": value, "lr": value, "val_loss": value,
              "ts": st.one_of(st.none(), st.floats(0, 2e9)),
              "extra": st.one_of(st.none(), st.dictionaries(st.text(max_size=5), value, max_size=3))})
junk = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=2))
bad_step = st.one_of(st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=2),
                    st.integers(max_value=-1), st.integers(min_value=2**63),
                    # an integral float in range is a step (2957.0, as JSON allows)
                    st.floats().filter(lambda f: not (f.is_integer() and 0 <= f < 2**63)))
bad_record = st.one_of(junk, st.fixed_dictionaries({"step": bad_step}),
                       st.fixed_dictionaries({"step": st.integers(0, 9), "loss": st.one_of(st.booleans(), st.text(min_size=1, max_size=3).filter(lambda s: s.strip().lower() not in ("nan", "inf", "+inf", "-inf", "+nan", "-nan")))}))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(record, max_size=30))
def test_fast_and_checked_passes_agree_on_valid_batches(recs):
    fast = _fast_columns(recs)
    slow = _checked_columns(recs)
    if fast is not None:
        for name in ("step", "loss", "grad_norm", "lr", "val_loss", "ts", "extra"):
            assert _same(getattr(fast, name), getattr(slow, name)), name
    # and through the wire, with the bare NaN tokens Python's json writes
    cols, _ = parse_steps(json.dumps({"records": recs}).encode(), 10_000)
    assert cols.step == [r["step"] for r in recs]
    for r, loss in zip(recs, cols.loss):
        v = r.get("loss")
        if v is None:
            assert loss is None
        else:
            assert isinstance(loss, float) and _same(loss, float(v))


@settings(max_examples=200, deadline=None)
@given(st.lists(record, max_size=10), st.lists(bad_record, min_size=1, max_size=3), st.randoms())
def test_a_bad_record_is_always_refused_with_its_index(good, bad, rnd):
    recs = good + bad
    rnd.shuffle(recs)
    bad_idx = {i for i, r in enumerate(recs) if any(r is b for b in bad)}
    try:
        parse_steps(json.dumps({"records": recs}).encode(), 10_000)
    except IngestError as e:
        assert e.status == 422
        assert {d["index"] for d in e.detail} <= bad_idx and e.detail
    else:
        raise AssertionError("a bad record was accepted")
