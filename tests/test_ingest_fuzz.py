"""Generated ingest traffic against a service on a real redis-server: extreme steps (0 .. 2^63-1,
past 2^53 where Lua's doubles stop being exact), huge gaps, repeats, out-of-order and descending
batches, dense stretches that push old chunks into the downsampled levels, non-finite values, and
declared LR schedules (with the other metadata the detectors read) followed by writes at extreme
steps; and one run written by concurrent writers through two replicas.

Every case must hold these:
- each answer is a 2xx or a documented 4xx (a schedule refused at PUT: 422), never a 5xx (a 503
  included: Redis is up); a POST holding a record the API refuses is a 422 naming it and stores
  nothing, every other one is acknowledged with the counts the step rules give (accepted,
  duplicates, out of order);
- what was acknowledged reads back from GET /v1/runs/{id}/steps: each stored step once, raw
  with the values first sent for it, or inside a downsampled bucket that counts it; the run's
  summary, alerts, page and a downsampled window answer too, and an action reported at its last
  step (a rollback to its first) is kept in its alert history;
- a service on the memory store, sent the same requests, answers them (alerts and advice
  included) and reads back exactly the same: the Redis service keeps no detector engine in
  memory, so this also checks that detection survives its state's round trip through Redis;
- Redis answers PING within 1 s after the case (a script that loops on a step number would
  leave Redis busy for good, and every later case would fail here).

The services and Redis are started once for the module; each case writes its own run.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from losswatch.detectors.wire import decode_float

MAX_STEP = 2**63 - 1
VALUE_FIELDS = ("loss", "grad_norm", "lr", "val_loss")
#: steps where integer arithmetic stops being exact somewhere (doubles, Lua's number formatting),
#: and the edges of a 960-step chunk
EXTREME_STEPS = (0, 1, 2, 959, 960, 961, 1023, 1024, 204_800, 10**14, 10**15, 10**15 + 1,
                 2**53 - 1, 2**53, 2**53 + 1, 96 * 10**15, 8_650_000_000_000_000_000,
                 MAX_STEP - 960, MAX_STEP - 1, MAX_STEP)
GAPS = (1, 2, 64, 256, 960, 2048, 131_072, 10**9, 10**15)
CASE_SETTINGS = settings(max_examples=100, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- processes, once for the module ------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    from fixtures.redis_proc import RedisServer

    srv = RedisServer(tmp_path_factory.mktemp("fuzz-redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def service(redis_server):
    from fixtures.service_proc import ServiceProc

    # no engine kept in memory: every batch restores the detectors from the state stored in Redis,
    # as a replica does for a run another replica served last
    p = ServiceProc(env={"LOSSWATCH_STORE": redis_server.url, "LOSSWATCH_HOST": "127.0.0.1",
                         "LOSSWATCH_REDIS_ENGINE_CACHE": "0"})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def replica(redis_server):
    """A second service on the same Redis, with its engines kept in memory (the default)."""
    from fixtures.service_proc import ServiceProc

    p = ServiceProc(env={"LOSSWATCH_STORE": redis_server.url, "LOSSWATCH_HOST": "127.0.0.1"})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def memory_service():
    """The same service on the memory store: both stores must answer and read back alike."""
    from fixtures.service_proc import ServiceProc

    p = ServiceProc(env={"LOSSWATCH_HOST": "127.0.0.1"})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:
        yield s


_run_numbers = itertools.count()


def new_run_id() -> str:
    return f"fz-{next(_run_numbers)}-{uuid.uuid4().hex[:8]}"


def assert_redis_answers(redis_server, within: float = 1.0) -> None:
    """PING on a fresh connection answers PONG within ``within`` seconds (BUSY or silence fail)."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=within) as s:
        s.settimeout(within)
        s.sendall(b"PING\r\n")
        reply = s.recv(64)
    assert reply.startswith(b"+PONG"), f"Redis answered {reply!r}"


# -- the expected store: the step semantics of the API (first write of a step wins) -----------


class Expected:
    """What the service must have stored for one run, from the batches it acknowledged."""

    def __init__(self) -> None:
        self.values: dict[int, dict] = {}   # step -> the record first acknowledged for it
        self.high = -1

    def acknowledge(self, records: list[dict]) -> tuple[int, int, int]:
        """Apply an acknowledged batch; returns the (accepted, duplicates, out_of_order) counts the
        service must have answered."""
        accepted = dups = ooo = 0
        for r in records:
            s = r["step"]
            if s in self.values:
                dups += 1
                continue
            self.values[s] = r
            accepted += 1
            if s > self.high:
                self.high = s
            else:
                ooo += 1
        return accepted, dups, ooo


def _same(sent, got) -> bool:
    a = decode_float(sent)
    b = decode_float(got)
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_read_back(http, service, run_id: str, expected: Expected) -> dict | None:
    """Asserts that the run reads back as ``expected`` says; returns the series read."""
    r = http.get(f"{service.url}/v1/runs/{run_id}/steps", timeout=30)
    if not expected.values:
        assert r.status_code in (200, 404), (r.status_code, r.text[:300])
        return None
    assert r.status_code == 200, (r.status_code, r.text[:300])
    series = r.json()["series"]
    steps = series["step"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), "rows out of order or repeated"
    stored = sorted(expected.values)
    covered = 0
    for i, first in enumerate(steps):
        extra = series["extra"][i] or {}
        if "ds_width" in extra:   # a downsampled bucket: first .. first + width - 1
            width = int(extra["ds_width"])
            inside = [s for s in stored if first <= s < first + width]
            assert inside and len(inside) == int(extra["ds_steps"]), (first, width, extra, inside[:5])
            covered += len(inside)
            continue
        assert first in expected.values, f"step {first} read back but never acknowledged"
        sent = expected.values[first]
        for f in (*VALUE_FIELDS, "ts"):
            assert _same(sent.get(f), series[f][i]), (first, f, sent.get(f), series[f][i])
        # an extra value of null is "not logged", like a null loss: not kept
        sent_extra = {k: v for k, v in (sent.get("extra") or {}).items() if v is not None}
        got_extra = series["extra"][i] or {}
        assert sent_extra.keys() == got_extra.keys(), (first, sent_extra, got_extra)
        assert all(_same(v, got_extra[k]) for k, v in sent_extra.items()), (first, sent_extra, got_extra)
        covered += 1
    assert covered == len(stored), f"{len(stored) - covered} acknowledged steps not read back"
    return series


def check_views(http, service, run_id: str, expected: Expected) -> None:
    """The run's other views answer too: its summary, its alerts, a window of its steps
    downsampled for a chart, and its page."""
    if not expected.values:
        return
    base = f"{service.url}/v1/runs/{run_id}"
    for url in (base, f"{base}/alerts", f"{service.url}/runs/{run_id}"):
        r = http.get(url, timeout=30)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    stored = sorted(expected.values)
    start, end = stored[len(stored) // 2], stored[-1]
    r = http.get(f"{base}/steps", params={"start": start, "end": end, "max_points": 4}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    body = r.json()
    assert body["count"] <= 4 and all(start <= s <= end for s in body["series"]["step"]), body


def check_action_report(http, service, run_id: str, expected: Expected) -> None:
    """A rollback to the run's first step, reported at its last one, is kept in its alert history."""
    first, last = min(expected.values), expected.high
    report = {"step": last, "applied": True, "note": "fuzz",
              "action": {"type": "rollback", "to_step": first, "reason": "fuzz"}}
    r = http.post(f"{service.url}/v1/runs/{run_id}/actions", json=report, timeout=30)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    r = http.get(f"{service.url}/v1/runs/{run_id}/alerts", timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    kept = [(a["step"], a["action"].get("to_step")) for a in r.json()["actions"]]
    assert kept == [(last, first)], kept


def post(http, service, run_id: str, records: list[dict]) -> requests.Response:
    # allow_nan: Python's bare NaN/Infinity tokens, which the API accepts besides the strings
    return http.post(f"{service.url}/v1/runs/{run_id}/steps", timeout=30,
                     data=json.dumps({"records": records}, allow_nan=True),
                     headers={"Content-Type": "application/json"})


#: a record whose extra uses a name that marks a downsampled bucket: it would read back as a
#: bucket, so it is refused
RESERVED_EXTRA = {"step": 3, "extra": {"ds_width": 0.0}}
#: records the API refuses (422 naming the record): a batch holding one stores nothing
BAD_RECORDS = (RESERVED_EXTRA, {"step": 3, "extra": {"ds_steps": 1.0, "acc": 0.5}}, {"step": -1}, {"step": 2**63}, {"step": 1.5}, {"step": "7"}, {"step": True}, {"loss": 1.0},
               {"step": 3, "loss": "x"}, {"step": 3, "ts": "NaN"}, {"step": 3, "weight": 1.0},
               {"step": 3, "extra": {"a": [1]}}, [3, 1.0], None)


def send_batches(http, service, run_id: str, batches: list[list[dict]], expected: Expected) -> list[dict]:
    """POST each batch; one holding a record of BAD_RECORDS must be refused with a 422 that names
    it, every other one acknowledged with the counts ``expected`` predicts. Returns the answers."""
    answers = []
    for records in batches:
        r = post(http, service, run_id, records)
        assert r.status_code < 500, (r.status_code, r.text[:300], records[:5])
        bad = [i for i, rec in enumerate(records) if any(rec is b for b in BAD_RECORDS)]
        if bad:
            assert r.status_code == 422, (r.status_code, r.text[:300], records[:5])
            assert {d["index"] for d in r.json()["detail"]} <= set(bad), r.text[:300]
            answers.append({"refused": sorted(d["index"] for d in r.json()["detail"])})
            continue
        assert r.status_code == 200, (r.status_code, r.text[:300], records[:5])
        body = r.json()
        counts = expected.acknowledge(records)
        assert (body["accepted"], body["duplicates"], body["out_of_order"]) == counts, (body, records[:5])
        answers.append(body)
    return answers


def without_times(answer: dict) -> dict:
    """An ingest answer without the wall-clock times, which differ between two services."""
    if "alerts" not in answer:
        return answer
    return {**answer, "alerts": [{k: v for k, v in a.items() if k not in ("raised_at", "updated_at", "acknowledged_at")}
                                 for a in answer["alerts"]]}


# -- strategies --------------------------------------------------------------------------------

values = st.one_of(
    st.none(),
    st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "Infinity", "-Infinity", 0.0, -0.0,
                     5e-324, 1e-300, 1e300, 1.7976931348623157e308, -1.7976931348623157e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)
any_step = st.one_of(st.sampled_from(EXTREME_STEPS), st.integers(0, MAX_STEP), st.integers(0, 5000))


#: names of extra values: usual ones, and any text up to the 128 characters allowed (but the
#: reserved names, see RESERVED_EXTRA)
extra_names = st.one_of(st.sampled_from(["acc", "tokens", "mfu", "a.b"]),
                        st.text(max_size=128).filter(lambda k: k not in ("ds_width", "ds_steps")))


@st.composite
def value_sets(draw) -> dict:
    return draw(st.fixed_dictionaries({}, optional={
        **{f: values for f in VALUE_FIELDS},
        "ts": st.one_of(st.floats(0.0, 2e9), st.floats(allow_nan=False, allow_infinity=False)),
        "extra": st.dictionaries(extra_names, values, max_size=3)}))


def records_for(steps: list[int], draw) -> list[dict]:
    """Records for ``steps``, their values cycling through a few drawn value sets (drawing per
    record would make a 3,000-step case cost more in generation than in the service)."""
    palette = draw(st.lists(value_sets(), min_size=1, max_size=8))
    return [{"step": s, **palette[i % len(palette)]} for i, s in enumerate(steps)]


@st.composite
def step_sequences(draw) -> list[int]:
    """Steps in one of the shapes a run can produce: arbitrary, ascending with gaps (up to 10^15),
    descending, a dense stretch long enough to push older chunks into the downsampled levels with
    late steps far behind it, or an ascending run with repeats and late steps mixed in."""
    shape = draw(st.sampled_from(["any", "gaps", "descending", "mixed", "dense"]))
    if shape == "any":
        return draw(st.lists(any_step, min_size=1, max_size=12))
    if shape == "dense":
        stride = draw(st.sampled_from([1, 7, 64, 960, 2048]))
        n = draw(st.integers(1, 3000))
        start = draw(st.one_of(st.just(0), st.sampled_from(EXTREME_STEPS))) // stride * stride
        n = min(n, (MAX_STEP - start) // stride + 1)
        out = list(range(start, start + n * stride, stride))
        late = draw(st.lists(st.integers(0, out[-1]), max_size=5))
        return out + late + draw(st.lists(st.sampled_from(out), max_size=3))
    start = draw(any_step)
    gaps = draw(st.lists(st.sampled_from(GAPS), min_size=1, max_size=12))
    if shape == "descending":
        out = [start]
        for g in gaps:
            if out[-1] - g < 0:
                break
            out.append(out[-1] - g)
        return out
    out = [start]
    for g in gaps:
        if out[-1] + g > MAX_STEP:
            break
        out.append(out[-1] + g)
    if shape == "mixed":
        # repeats and late steps among the ascending ones
        extra = draw(st.lists(st.sampled_from(out), max_size=4))
        late = [s - 1 for s in draw(st.lists(st.sampled_from(out), max_size=3)) if s > 0]
        out = out + extra + late
        out = draw(st.permutations(out))
    return list(out)


@st.composite
def batched_records(draw) -> list[list[dict]]:
    steps = draw(step_sequences())
    recs = records_for(steps, draw)
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
        recs.insert(draw(st.integers(0, len(recs))), draw(st.sampled_from(BAD_RECORDS)))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(recs) - 1)), max_size=3)))
    bounds = [0, *[c for c in cuts if c < len(recs)], len(recs)]
    return [recs[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# -- the cases ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@CASE_SETTINGS
@given(batches=batched_records())
@example(batches=[[{"step": MAX_STEP}]])                       # one record once hung Redis for good
@example(batches=[[{"step": 96 * 10**15, "loss": 1.0}], [{"step": 96 * 10**15 - 5, "loss": 2.0}]])
@example(batches=[[{"step": 0, "loss": 1.0}], [{"step": 10**15, "loss": 2.0}], [{"step": 10**15 + 1}]])
@example(batches=[[{"step": s, "loss": float(s % 7)} for s in range(10 * 960, 0, -960)]])
@example(batches=[[{"step": 0, "loss": 1.0}], [RESERVED_EXTRA]])
def test_acknowledged_steps_read_back_and_redis_stays_up(service, memory_service, redis_server, http, batches):
    run_id = new_run_id()
    try:
        expected = Expected()
        answers = send_batches(http, service, run_id, batches, expected)
        on_redis = check_read_back(http, service, run_id, expected)
        check_views(http, service, run_id, expected)
        if expected.values:
            check_action_report(http, service, run_id, expected)
    finally:
        assert_redis_answers(redis_server)
    # the memory store answers (counts, alerts, advice) and reads back the same (non-finite values
    # are strings in JSON, so plain equality holds)
    expected = Expected()
    in_memory = send_batches(http, memory_service, run_id, batches, expected)
    assert [without_times(a) for a in in_memory] == [without_times(a) for a in answers]
    assert check_read_back(http, memory_service, run_id, expected) == on_redis


# Declarations that grow or cycle without bound, and warm-ups whose step counts reach the extremes;
# the rest of the accepted range is covered by tests/test_schedule_bounds.py (without a service).
_big = st.one_of(st.sampled_from([1, 2, 100, 1024, 204_800, 2**53, 2**53 + 1, MAX_STEP]), st.integers(1, MAX_STEP))
_lr = st.one_of(st.sampled_from([1e-3, 0.1, 1.0, 1e300]), st.floats(1e-8, 10.0))
schedule_specs = st.one_of(
    st.fixed_dictionaries({"name": st.just("exponential"), "lr": _lr,
                           "gamma": st.one_of(st.just(2.0), st.floats(0.5, 10.0))}),
    st.fixed_dictionaries({"name": st.just("cyclic"), "base_lr": st.just(1e-4), "max_lr": _lr,
                           "step_size_up": st.one_of(st.just(100), _big),
                           "mode": st.sampled_from(["triangular", "triangular2", "exp_range"])},
                          optional={"gamma": st.floats(0.5, 2.0), "step_size_down": _big}),
    st.builds(lambda name, lr, total, warm, extra: {"name": name, "lr": lr, "total_steps": total,
                                                     "warmup_steps": min(warm, total), **extra},
              st.sampled_from(["warmup_linear", "warmup_cosine", "warmup_constant", "warmup_polynomial",
                               "warmup_inverse_sqrt"]),
              _lr, _big, _big,
              st.fixed_dictionaries({}, optional={"min_lr": st.just(0.0), "start_factor": st.floats(0.0, 1.0),
                                                  "power": st.floats(0.1, 5.0)})),
    st.fixed_dictionaries({"name": st.sampled_from(["step", "multistep", "one_cycle", "cosine_restarts",
                                                    "inverse_time", "polynomial"]),
                           "lr": _lr, "max_lr": _lr, "step_size": _big, "milestones": st.lists(_big, max_size=3),
                           "total_steps": _big, "period": _big, "gamma": st.floats(0.0, 3.0)}),
)


#: the other metadata the detectors read: an SGD run with its momentum adds the SGD-efficiency rule
other_meta = st.fixed_dictionaries({}, optional={
    "optimizer": st.sampled_from(["sgd", "SGD", "adamw"]),
    "momentum": st.one_of(st.sampled_from([0.0, 0.9, 5e-324, 0.9999999999999999]), st.floats(0.0, 1.0)),
    "batch_size": st.sampled_from([1, 32, 2**53])})


@st.composite
def schedule_cases(draw):
    meta = {"lr_schedule": draw(schedule_specs), **draw(other_meta)}
    # then nothing more, the same metadata marked finished (what the client's close() sends, after
    # the run's gaps), or other metadata (the detectors are rebuilt around the run's state)
    later = draw(st.one_of(st.none(), st.just({**meta, "status": "finished"}),
                           st.builds(lambda spec, other: {"lr_schedule": spec, **other}, schedule_specs, other_meta)))
    return meta, records_for(draw(step_sequences()), draw), later


def declared_run(http, service, run_id: str, meta: dict, records: list[dict], later: dict | None):
    """PUT the metadata, POST the records in two batches, optionally PUT ``later`` metadata and
    POST once more; read back. Returns the answers to the POSTs and the series read."""
    expected = Expected()
    r = http.put(f"{service.url}/v1/runs/{run_id}", timeout=30, json=meta)
    assert r.status_code in (200, 422), (r.status_code, r.text[:300], meta)
    half = len(records) // 2
    answers = send_batches(http, service, run_id, [b for b in (records[:half], records[half:]) if b], expected)
    if later is not None:
        r = http.put(f"{service.url}/v1/runs/{run_id}", timeout=30, json=later)
        assert r.status_code in (200, 422), (r.status_code, r.text[:300], later)
        answers += send_batches(http, service, run_id, [[{"step": expected.high, "loss": 0.5}]], expected)
    series = check_read_back(http, service, run_id, expected)
    check_views(http, service, run_id, expected)
    return answers, series


@pytest.mark.timeout(90)
@CASE_SETTINGS
@given(case=schedule_cases())
@example(case=({"lr_schedule": {"name": "exponential", "lr": 0.1, "gamma": 2.0}},
               [{"step": 1024, "lr": 1.0, "loss": 1.0}, {"step": 1025, "lr": 1.0}], None))
@example(case=({"lr_schedule": {"name": "cyclic", "base_lr": 1e-4, "max_lr": 0.1, "step_size_up": 100,
                                "mode": "triangular2"}},
               [{"step": 204_800, "lr": 1e-4, "loss": 1.0}, {"step": MAX_STEP, "lr": 1e-4}], {"status": "finished"}))
@example(case=({"lr_schedule": {"name": "warmup_linear", "lr": 0.1, "total_steps": MAX_STEP,
                                "warmup_steps": MAX_STEP}},
               [{"step": 2**53 + 1, "lr": 0.05}, {"step": MAX_STEP, "lr": 0.1}],
               {"lr_schedule": {"name": "exponential", "lr": 0.1, "gamma": 2.0}, "optimizer": "sgd", "momentum": 0.9}))
def test_schedule_metadata_then_writes(service, memory_service, redis_server, http, case):
    meta, records, later = case
    run_id = new_run_id()
    try:
        answers, series = declared_run(http, service, run_id, meta, records, later)
    finally:
        assert_redis_answers(redis_server)
    in_memory, series_in_memory = declared_run(http, memory_service, run_id, meta, records, later)
    assert [without_times(a) for a in in_memory] == [without_times(a) for a in answers]
    assert series_in_memory == series


def _values_of(step: int) -> dict:
    """Values that depend on the step only, so a step sent by two writers carries the same values
    whichever write lands first."""
    k = step % 5
    return {"loss": ["NaN", 1.5, "Infinity", None, 1e300][k], "grad_norm": float(step % 1000)}


@pytest.mark.timeout(90)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=step_sequences(), writers=st.integers(2, 4), data=st.data())
def test_concurrent_writers_lose_and_double_count_nothing(service, replica, redis_server, steps, writers, data):
    """Batches of one run posted by several writers at once, through two replicas (their
    compare-and-set on Redis): every step stored once, counted once as accepted, every other copy
    counted as a duplicate."""
    run_id = new_run_id()
    records = [{"step": s, **_values_of(s)} for s in steps]
    # each writer sends its share in order; shares overlap where a step repeats
    shares = [records[i::writers] for i in range(writers)]
    shares = [sh + data.draw(st.lists(st.sampled_from(records), max_size=3)) for sh in shares]

    def send(writer: int) -> list[dict]:
        share = shares[writer]
        via = (service, replica)[writer % 2]
        with requests.Session() as s:
            bodies = []
            size = max(3, len(share) // 20)   # small batches, at most ~20 requests a writer
            for a in range(0, len(share), size):
                r = post(s, via, run_id, share[a:a + size])
                assert r.status_code == 200, (r.status_code, r.text[:300])
                bodies.append(r.json())
            return bodies

    try:
        with ThreadPoolExecutor(writers) as pool:
            bodies = [b for got in pool.map(send, range(writers)) for b in got]
        sent = sum(len(sh) for sh in shares)
        distinct = {r["step"] for sh in shares for r in sh}
        assert sum(b["accepted"] for b in bodies) == len(distinct)
        assert sum(b["duplicates"] for b in bodies) == sent - len(distinct)
        expected = Expected()
        expected.acknowledge([{"step": s, **_values_of(s)} for s in sorted(distinct)])
        with requests.Session() as s:
            check_read_back(s, service, run_id, expected)
    finally:
        assert_redis_answers(redis_server)
