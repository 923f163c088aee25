"""The client's parts on their own: the in-process transports, the worker (its pid check, its
flush interval), the verdict state and the Actor hook. The HTTP transport is tested against a
real service in test_client_monitor.py and test_client_resilience.py."""

import math
import os
import time
import warnings

import pytest

from losswatch.client import Monitor
from losswatch.client.local import LocalEngine
from losswatch.client.spool import Spool
from losswatch.client.transport import LocalTransport, NoTransport, make_transport
from losswatch.client.verdicts import Verdicts
from losswatch.client.worker import Worker
from service_helpers import wait_until

NAN = float("nan")


def _records(steps, loss=1.0):
    return [{"step": s, "loss": loss, "grad_norm": 1.0, "lr": 0.1} for s in steps]


def _worker(transport, tmp_path, read=None, **kw):
    return Worker(transport, read=read or (lambda raw: _records(r[0] for r in raw)),
                  after_cycle=lambda: None, spool=Spool(tmp_path / "spool"), **kw)


def _raw(step):
    return (step, 1.0, 1.0, 0.1, None, 0.0, None)


def test_make_transport_picks_http_local_or_none_by_what_the_run_has():
    args = dict(run_id="r", project=None, meta={}, token=None, timeout=1.0, batch_size=10,
                on_verdict=lambda *a: None)
    http = make_transport("http://127.0.0.1:9", reports=True, **args)
    local = make_transport(None, reports=True, **args)
    silent = make_transport("http://127.0.0.1:9", reports=False, **args)
    assert type(http).__name__ == "HttpTransport" and http.judges and http.url == "http://127.0.0.1:9"
    assert isinstance(local, LocalTransport) and local.judges and local.url is None
    assert isinstance(silent, NoTransport) and not silent.judges and silent.url is None
    with pytest.raises(ValueError, match="http://host:port"):
        make_transport("ftp://x", reports=True, **args)


def test_the_none_transport_keeps_nothing_and_a_worker_on_it_is_idle_once_drained(tmp_path):
    t = NoTransport()
    assert t.accept(_records(range(3))) == [] and not t.set_meta({"a": 1}) and not t.report_action({})
    w = _worker(t, tmp_path, flush_interval=3600)
    try:
        for s in range(5):
            w.buffer.append(_raw(s))
        assert w.flush(10)  # drained, nothing to send, nothing spooled
        assert w.counts == {"failures": 0, "outages": 0, "buffered": 0, "spooled": 0, "spilled": 0, "dropped": 0}
    finally:
        w.stop(5)
    assert w.finish() is None and not (tmp_path / "spool").exists()


def test_the_local_transport_judges_in_process_and_switches_off_an_engine_that_fails():
    verdicts = []
    t = LocalTransport(LocalEngine("loc", {}), lambda *v: verdicts.append(v))
    assert t.accept(_records(range(50)) + _records([50], loss=NAN)) == []  # nothing leaves the process
    alerts, rec, health, has_rec = verdicts[-1]
    assert "nan" in [a["kind"] for a in alerts] and health == "critical" and has_rec
    with pytest.warns(RuntimeWarning, match="local detectors failed and were switched off"):
        t.accept([{"loss": 1.0}])  # a record without a step: the engine raises
    assert not t.judges  # the NaN check goes on alone
    n = len(verdicts)
    t.accept(_records(range(50, 60)))
    assert len(verdicts) == n


def test_the_workers_pid_check_tells_a_forked_child_the_worker_is_not_its_own(tmp_path):
    w = _worker(NoTransport(), tmp_path)
    try:
        assert w.in_this_process
        pid = os.fork()
        if pid == 0:  # child: whatever happens, leave with os._exit
            code = 1
            try:
                code = 0 if not w.in_this_process else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert w.in_this_process
    finally:
        w.stop(5)


def test_a_fresh_child_gets_a_worker_of_its_own_on_its_first_log(tmp_path):
    mon = Monitor(run_id="parts-fork", url="", in_child="fresh", spool_dir=str(tmp_path), flush_interval=3600)
    try:
        parent_worker = mon._worker
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                before = mon._worker is parent_worker and not mon._worker.in_this_process
                mon.log(1, loss=1.0)
                after = mon._worker is not parent_worker and mon._worker.in_this_process
                code = 0 if before and after and mon.flush(10) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert mon._worker is parent_worker
    finally:
        mon.close()


def test_a_changed_flush_interval_applies_from_the_next_cycle(tmp_path):
    cycles = []
    w = Worker(NoTransport(), read=lambda raw: [], after_cycle=lambda: cycles.append(1),
               spool=Spool(tmp_path / "spool"), flush_interval=3600)
    try:
        w.flush_interval = 0.02
        w.wake.set()  # ends the hour-long wait; the waits after it are 20 ms long
        wait_until(lambda: len(cycles) >= 5, 30, "cycles at the new interval, without a wake")
    finally:
        w.stop(5)


def test_a_hinted_worker_waits_at_its_own_phase_of_the_hint_and_a_retry_still_comes_first(tmp_path):
    t = NoTransport()  # a transport that keeps records here never hints; this one is told to
    workers = [_worker(t, tmp_path / str(k), flush_interval=0.5) for k in range(20)]
    try:
        assert [(w.interval, w._wait_time()) for w in workers] == [(0.5, 0.5)] * 20
        t.flush_hint = 8.0
        waits = [w._wait_time() for w in workers]
        assert all(w.interval == 8.0 for w in workers) and all(0.5 <= x <= 8.0 for x in waits)
        # each at its own moment of the hinted interval: runs answered together do not send together
        assert max(waits) - min(waits) > 2.0, waits
        w = workers[0]
        w._retry_at = time.monotonic() + 0.2  # a retry due sooner than the hinted moment goes first
        assert w._wait_time() <= 0.2
        t.flush_hint = 0.0                    # no hint any more: its own interval again
        w._retry_at = 0.0
        assert w.interval == 0.5 and w._wait_time() == 0.5
    finally:
        for w in workers:
            w.stop(5)


def test_runs_started_together_first_send_at_their_own_moments_of_a_second_interval(tmp_path):
    t = NoTransport()
    workers = [_worker(t, tmp_path / str(k), flush_interval=0.5) for k in range(20)]
    try:
        firsts = [w._first_wait() for w in workers]
        # never sooner than the run's interval, at most one more: no run announces itself (its
        # metadata PUT, its first batch) in the same instant as the others started with it
        assert all(0.5 <= x < 1.0 for x in firsts), firsts
        assert max(firsts) - min(firsts) > 0.2, firsts
        assert all(w._wait_time() == 0.5 for w in workers)   # after the first cycle: its interval
    finally:
        for w in workers:
            w.stop(5)


def test_monitor_flush_interval_is_the_workers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Monitor(run_id="parts-interval", url="", flush_interval=3600) as mon:
            mon.flush_interval = 0.25
            assert mon._worker.flush_interval == 0.25 and mon.flush_interval == 0.25


@pytest.mark.parametrize("bad", ["abc", float("nan"), float("inf"), -1.0])
def test_a_bad_flush_interval_is_refused_where_it_is_set_and_the_worker_runs_on(bad):
    # read by the worker's loop, a bad value stopped the thread and stranded what was buffered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Monitor(run_id="parts-bad-interval", url="", flush_interval=3600) as mon:
            with pytest.raises(ValueError, match="flush_interval"):
                mon.flush_interval = bad
            assert mon.flush_interval == 3600
            mon.log(1, loss=1.0)
            assert mon.flush(10) and mon._worker.alive


def test_verdicts_of_the_nan_check_alone_raise_and_resolve_the_runs_health():
    told = []
    v = Verdicts("v", on_alert=told.append)
    assert v.nan_in_log(5, NAN, None, alone=True)
    assert v.health == "critical" and v.recommendation["type"] == "rollback"
    assert not v.nan_in_log(6, NAN, None, alone=True)  # the same episode: no new event
    v.observe(_records(range(7, 20)), alone=True)
    assert v.health == "ok" and [a["id"] for a in v.alerts] == ["v:nan:5"]
    v.tell()
    assert [(a["event"], a["id"]) for a in told] == [("raised", "v:nan:5"), ("resolved", "v:nan:5")]


def test_verdicts_keep_a_nan_critical_until_the_detectors_have_seen_it():
    v = Verdicts("w")
    advice = []
    v.on_advice = advice.append
    v.nan_in_log(3, NAN, None, alone=False)
    v.apply([], None, "ok")  # a verdict of records before the NaN
    assert v.health == "critical" and v.recommendation["type"] == "rollback"
    v.observe(_records(range(4, 20)), alone=False)  # resolved here; the detectors say how the run is
    assert v.health == "critical"
    cut = {"type": "scale_lr", "factor": 0.5}
    v.apply([{"id": "d", "kind": "divergence", "severity": "warning", "step": 9, "action": cut}], cut, "warning")
    assert v.health == "warning" and v.recommendation == cut
    assert [a["type"] for a in advice] == ["rollback", "scale_lr"]


def test_the_actor_hook_holds_no_advice_until_acting_is_on_then_takes_the_standing_one():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Monitor(run_id="parts-hook", url="", flush_interval=3600) as mon:
            cut = {"type": "scale_lr", "factor": 0.5}
            mon._verdicts.apply([{"id": "p", "kind": "plateau", "severity": "warning", "step": 1,
                                  "last_step": 9, "evidence": {}, "action": cut}], cut, "warning")
            assert mon._actor_hook.pending is None and mon.actor is None
            actor = mon.attach_actor(opt, act=True)
            assert actor is mon.actor and mon._actor_hook.pending == cut
            mon.log(10, loss=1.0)
            assert math.isclose(opt.param_groups[0]["lr"], 0.5)
            assert [(a["step"], a["action"]["type"]) for a in mon.actions] == [(10, "scale_lr")]
