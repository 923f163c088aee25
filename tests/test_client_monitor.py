"""Monitor against a real service (uvicorn in a subprocess): what arrives, alerts, callbacks, acting."""

import json
import math
import threading
import time
import warnings

import pytest

from fixtures.ports import free_port
from losswatch.client import Monitor
from service_helpers import client, wait_until
from service_helpers import get_json as get


def series(url, run_id):
    return get(url, f"/v1/runs/{run_id}/steps")["series"]


def test_every_record_arrives_once_in_order_with_nan_as_nan(service_proc):
    with Monitor(run_id="mon-basic", url=service_proc, project="clienttests",
                 meta={"model": "mlp", "batch_size": 32}, batch_size=128) as mon:
        for step in range(1000):
            loss = float("nan") if step == 500 else 1.0 / (step + 1)
            gn = float("inf") if step == 600 else 0.5
            mon.log(step, loss=loss, grad_norm=gn, lr=1e-3, tokens_per_s=1000.0 + step)
        assert mon.flush(20)
        stats = mon.stats
    assert stats["sent"] == 1000 and stats["rejected"] == 0 and stats["failures"] == 0
    assert stats["posts"] >= 1000 // 128  # batched by count
    s = get(service_proc, "/v1/runs/mon-basic/steps?project=clienttests")["series"]
    assert s["step"] == list(range(1000))
    assert s["loss"][500] == "NaN" and s["grad_norm"][600] == "Infinity"
    assert s["loss"][3] == pytest.approx(0.25) and s["lr"][10] == pytest.approx(1e-3)
    assert s["extra"][7] == {"tokens_per_s": 1007.0}
    run = get(service_proc, "/v1/runs/mon-basic?project=clienttests")
    assert run["project"] == "clienttests"
    assert run["meta"]["model"] == "mlp" and run["meta"]["batch_size"] == 32
    assert run["duplicates"] == 0 and run["out_of_order"] == 0 and run["n_steps"] == 1000


def test_nan_is_caught_on_the_very_step_without_a_round_trip():
    # the URL points at nothing: whatever is known right after log() returns was found locally
    called_from = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = Monitor(run_id="mon-nan-local", url=f"http://127.0.0.1:{free_port()}",
                      on_alert=lambda a: called_from.append((threading.current_thread().name, a)),
                      timeout=0.5, max_backoff=0.2)
        for step in range(10):
            mon.log(step, loss=2.0 - 0.1 * step, grad_norm=1.0)
        assert mon.alerts == [] and mon.health == "ok"
        mon.log(10, loss=float("nan"), grad_norm=1.0)
        assert [a["id"] for a in mon.alerts] == ["mon-nan-local:nan:10"]
        assert mon.alerts[0]["kind"] == "nan" and mon.alerts[0]["severity"] == "critical"
        assert mon.health == "critical"
        assert mon.recommendation["type"] == "rollback" and mon.recommendation["to_step"] == 9
        mon.log(11, loss=float("nan"))  # the same episode: no second alert
        assert len(mon.alerts) == 1
        deadline = time.monotonic() + 5
        while not called_from and time.monotonic() < deadline:
            time.sleep(0.01)
        mon.close(timeout=0.2)
    assert called_from and called_from[0][0] != threading.main_thread().name  # background thread
    assert called_from[0][1]["step"] == 10


def test_local_nan_and_the_services_nan_alert_are_one_alert(service_proc):
    got = []
    with Monitor(run_id="mon-nan-svc", url=service_proc, on_alert=got.append) as mon:
        for step in range(50):
            mon.log(step, loss=1.0 / (step + 1), grad_norm=0.3, lr=0.01)
        mon.log(50, loss=float("nan"), grad_norm=float("nan"), lr=0.01)
        assert mon.flush(20)
        ids = [a["id"] for a in mon.alerts]
    served = get(service_proc, "/v1/runs/mon-nan-svc/alerts")["alerts"]
    assert "mon-nan-svc:nan:50" in [a["id"] for a in served]
    assert ids.count("mon-nan-svc:nan:50") == 1  # merged by id, not duplicated
    assert [a["id"] for a in got].count("mon-nan-svc:nan:50") == 1  # one callback for it
    assert mon.health == "critical"


def test_a_failing_callback_is_warned_about_once_and_training_goes_on(service_proc):
    calls = []

    def bad(alert):
        calls.append(alert)
        raise RuntimeError("user bug")

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with Monitor(run_id="mon-badcb", url=service_proc, on_alert=bad) as mon:
            for episode in range(3):  # three NaN episodes, each resolved
                base = episode * 20
                for step in range(base, base + 10):
                    mon.log(step, loss=1.0, grad_norm=0.1)
                mon.log(base + 10, loss=float("nan"))
                for step in range(base + 11, base + 20):
                    mon.log(step, loss=1.0, grad_norm=0.1)
                assert mon.flush(20)
    assert len([c for c in calls if c["resolved_step"] is None and c["kind"] == "nan"]) == 3
    msgs = [str(x.message) for x in w if "on_alert callback raised" in str(x.message)]
    assert len(msgs) == 1


def test_report_action_reaches_the_service(service_proc):
    with Monitor(run_id="mon-action", url=service_proc) as mon:
        for step in range(20):
            mon.log(step, loss=1.0, lr=0.1)
        mon.report_action(19, {"type": "scale_lr", "factor": 0.1, "reason": "test"}, applied=True)
        assert mon.flush(20)
    actions = get(service_proc, "/v1/runs/mon-action/alerts")["actions"]
    assert [(a["step"], a["action"]["type"], a["applied"]) for a in actions] == [(19, "scale_lr", True)]
    assert mon.actions[0]["action"]["factor"] == 0.1


def test_log_never_raises_on_bad_input_and_good_steps_still_arrive(service_proc):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with Monitor(run_id="mon-bad-input", url=service_proc) as mon:
            mon.log(0, loss=1.0)
            mon.log("three", loss=1.0)
            mon.log(-4, loss=1.0)
            mon.log(1, loss="not a number", lr=0.1)
            mon.log(2, loss=object())
            mon.log(3, loss=2.0, **{f"k{i}": float(i) for i in range(3)})
            mon.log(None)
            assert mon.flush(20)
    s = series(service_proc, "mon-bad-input")
    assert s["step"] == [0, 1, 2, 3]
    assert s["loss"][1] is None and s["lr"][1] == pytest.approx(0.1)
    assert s["loss"][3] == 2.0
    assert any("non-negative integer" in str(x.message) for x in w)


def test_acting_hook_calls_the_actor_in_the_training_thread_and_reports(service_proc):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rolled_back = []
    with Monitor(run_id="mon-act", url=service_proc, act=True, optimizer=opt,
                 on_rollback=lambda step: rolled_back.append((step, threading.current_thread().name))) as mon:
        for step in range(30):
            mon.log(step, loss=1.0 / (step + 1), grad_norm=0.2, lr=0.1)
        mon.log(30, loss=float("nan"), grad_norm=0.2, lr=0.1)  # caught here: this batch is skipped
        assert rolled_back == []
        mon.log(31, loss=float("nan"), grad_norm=0.2, lr=0.1)  # the skip failed: the ladder rolls back
        assert rolled_back and rolled_back[0][1] == threading.main_thread().name
        assert rolled_back[0][0] == 29
        assert mon.flush(20)
    actions = get(service_proc, "/v1/runs/mon-act/alerts")["actions"]
    # the skip, its verdict (applies nothing), then the rollback
    assert [(a["action"]["type"], a["applied"], a["action"].get("verdict")) for a in actions] == [
        ("skip_batch", True, None), ("skip_batch", False, "failed"), ("rollback", True, None)]


def test_without_a_url_nothing_is_sent_and_nan_is_still_caught(monkeypatch):
    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    with Monitor(run_id="mon-local") as mon:
        assert mon.url is None
        for step in range(100):
            mon.log(step, loss=1.0 / (step + 1), grad_norm=0.5, lr=0.1)
        mon.log(100, loss=math.inf)
        assert mon.health == "critical"
        for step in range(101, 130):
            mon.log(step, loss=0.5, grad_norm=0.5, lr=0.1)
        assert mon.flush(10)
        assert mon.stats["sent"] == 0 and mon.stats["posts"] == 0
    nan = [a for a in mon.alerts if a["kind"] == "nan"]
    # one episode, resolved once the loss is finite again (at once by the NaN check alone, a few
    # steps later by the detectors when numpy is there)
    assert len(nan) == 1 and 101 <= nan[0]["resolved_step"] < 130


def test_without_a_url_the_detectors_run_in_process(monkeypatch):
    pytest.importorskip("numpy")
    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    got = []
    with Monitor(run_id="mon-local-engine", on_alert=got.append) as mon:
        loss = 2.0
        for step in range(400):  # a healthy descent, then the loss climbs steadily away
            loss = loss * 0.995 if step < 200 else loss * 1.03
            mon.log(step, loss=loss, grad_norm=1.0 if step < 200 else 1.05 ** (step - 200), lr=0.1)
        assert mon.flush(20)
    kinds = {a["kind"] for a in mon.alerts}
    assert kinds & {"divergence", "grad_explosion"}, mon.alerts
    assert all(a["detector"] != "client.nan" for a in mon.alerts)
    assert mon.health in ("warning", "critical") and mon.recommendation is not None
    assert got  # on_alert fired for the engine's alerts too


def test_records_are_flushed_at_interpreter_exit_without_close(service_proc):
    import subprocess
    import sys

    script = (
        "from losswatch.client import Monitor\n"
        f"mon = Monitor(run_id='mon-atexit', url={service_proc!r}, flush_interval=60.0)\n"
        "for step in range(1234):\n"
        "    mon.log(step, loss=1.0 / (step + 1), lr=0.1)\n"
        "# no flush, no close: the atexit hook sends what is buffered\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert series(service_proc, "mon-atexit")["step"] == list(range(1234))
    # the script ended normally: the run is marked finished (no stopped-reporting alert)
    assert get(service_proc, "/v1/runs/mon-atexit")["meta"]["status"] == "finished"


def test_the_closing_metadata_goes_after_the_last_steps(service_proc):
    # when many runs close at once the service is at its busiest: the steps, which the client
    # promises to deliver or keep, go first; the finished status is what may miss the deadline
    mon = Monitor(run_id="mon-close-order", url=service_proc, meta={"task": "t"}, flush_interval=60.0)
    sent: list[tuple[str, str]] = []
    connection = mon._transport.connection
    request = connection.request

    def recorded(method, path, body=None):
        reply = request(method, path, body)
        sent.append((method, path.split("?")[0], reply.status))
        return reply

    connection.request = recorded
    mon.log(0, loss=1.0)
    assert mon.flush(30)
    for step in range(1, 100):
        mon.log(step, loss=1.0)
    mon.close()
    run = "/v1/runs/mon-close-order"
    assert sent == [("PUT", run, 200), ("POST", run + "/steps", 200), ("POST", run + "/steps", 200),
                    ("PUT", run, 200)]
    assert get(service_proc, run)["meta"] == {"task": "t", "status": "finished"}
    assert get(service_proc, run + "/steps")["series"]["step"] == list(range(100))


def test_steps_logged_during_a_slow_send_still_go_before_the_closing_metadata(service_proc):
    # a cycle already under way when the run closes has collected its records before the last
    # steps were logged: the finished status must wait for them, not ride on that cycle
    mon = Monitor(run_id="mon-close-slow", url=service_proc, batch_size=5, flush_interval=60.0)
    sent: list[tuple[str, object]] = []
    in_flight, release = threading.Event(), threading.Event()
    connection = mon._transport.connection
    request = connection.request

    def slow_first_post(method, path, body=None):
        if method == "POST" and not in_flight.is_set():
            in_flight.set()
            release.wait(30)  # the service is slow to answer this one
        reply = request(method, path, body)
        doc = json.loads(body) if body else {}
        sent.append((method, [r["step"] for r in doc["records"]] if method == "POST" else doc.get("status")))
        return reply

    connection.request = slow_first_post
    for step in range(5):  # a full batch: the worker sends it at once
        mon.log(step, loss=1.0)
    assert in_flight.wait(30)
    for step in range(5, 8):  # logged while that POST is under way
        mon.log(step, loss=1.0)
    closing = threading.Thread(target=mon.close)
    closing.start()
    wait_until(lambda: mon._closed)
    release.set()
    closing.join(30)
    assert sent[-1] == ("PUT", "finished"), sent
    assert [s for m, steps in sent if m == "POST" for s in steps] == list(range(8))
    assert series(service_proc, "mon-close-slow")["step"] == list(range(8))


def test_a_clean_close_marks_the_run_finished_and_a_crash_does_not(service_proc):
    import subprocess
    import sys

    with Monitor(run_id="mon-clean", url=service_proc, meta={"task": "t"}) as mon:
        mon.log(0, loss=1.0)
    assert get(service_proc, "/v1/runs/mon-clean")["meta"] == {"task": "t", "status": "finished"}
    with pytest.raises(RuntimeError):
        with Monitor(run_id="mon-raised", url=service_proc) as mon:
            mon.log(0, loss=1.0)
            raise RuntimeError("training failed")
    assert "status" not in get(service_proc, "/v1/runs/mon-raised")["meta"]
    assert series(service_proc, "mon-raised")["step"] == [0]  # the records still arrive
    # no close at all, and the script dies of an unhandled exception
    script = (
        "from losswatch.client import Monitor\n"
        f"mon = Monitor(run_id='mon-crash', url={service_proc!r})\n"
        "mon.log(0, loss=1.0)\n"
        "raise SystemError('crash')\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "crash" in p.stderr
    assert series(service_proc, "mon-crash")["step"] == [0]
    assert "status" not in get(service_proc, "/v1/runs/mon-crash")["meta"]


def test_token_is_sent_and_a_wrong_token_keeps_the_records(service_factory):
    srv = service_factory(env={"LOSSWATCH_TOKENS": "good-token=teamA"})
    with Monitor(run_id="mon-auth", url=srv.url, token="good-token") as mon:
        for step in range(50):
            mon.log(step, loss=1.0)
        assert mon.flush(20)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        bad = Monitor(run_id="mon-auth-bad", url=srv.url, token="wrong", timeout=1.0, max_backoff=0.2)
        for step in range(50):
            bad.log(step, loss=1.0)
        assert not bad.flush(1.5)
        assert bad.stats["sent"] == 0 and bad.stats["spooled"] == 50  # kept, not dropped
        bad.close(timeout=0.2)
    assert any("HTTP 401" in str(x.message) for x in w)
    with client(srv.url, "good-token") as c:
        r = c.get("/v1/runs/mon-auth")
    run = r.json()
    assert r.status_code == 200 and run["n_steps"] == 50 and run["project"] == "teamA"


def test_flush_and_close_from_a_callback_do_not_deadlock_and_odd_meta_is_sent(service_proc):
    from pathlib import Path

    results = []

    def closing_callback(alert):
        results.append(mon.flush(5))  # in the sender thread: cannot wait for itself
        mon.close()

    mon = Monitor(run_id="mon-cb-close", url=service_proc, on_alert=closing_callback,
                  meta={"data_dir": Path("/data/x"), "dtype": complex(1, 2)})
    for step in range(10):
        mon.log(step, loss=1.0)
    mon.log(10, loss=float("nan"))
    for step in range(11, 20):
        mon.log(step, loss=1.0)
    deadline = time.monotonic() + 10
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results and not any(results)
    wait_until(lambda: not mon._worker.alive, 10, "the worker's thread to end")
    with pytest.warns(RuntimeWarning, match="after close"):
        mon.log(99, loss=1.0)  # ignored, with one warning
    run = get(service_proc, "/v1/runs/mon-cb-close")
    assert run["meta"]["data_dir"] == "/data/x"  # unserialisable metadata written as str()
    assert series(service_proc, "mon-cb-close")["step"] == list(range(20))


def test_acting_applies_advice_that_waits_for_confirmation_or_a_cooldown_without_new_verdicts(monkeypatch):
    """Advice the Actor holds back (one-step alert to confirm; a cooldown) is applied on a later
    log() although the recommendation did not change and no new verdict arrived."""
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    # no flush until close: the only verdicts are the two given here
    with Monitor(run_id="mon-act-wait", act=True, optimizer=opt, actor_options={"cooldown_steps": 20},
                 flush_interval=3600, batch_size=10**6) as mon:
        clip = {"type": "clip_grad_norm", "max_norm": 2.0}
        mon._verdicts.apply([{"id": "g", "kind": "grad_explosion", "severity": "warning", "step": 10,
                              "last_step": 10, "evidence": {}, "action": clip}], clip, "warning")
        mon.log(11, loss=1.0)  # a one-step alert: the Actor waits for confirmation ...
        assert mon.actions == []
        mon.log(12, loss=1.0)  # ... and applies it on the next step, with no new verdict
        assert [(a["step"], a["action"]["type"]) for a in mon.actions] == [(12, "clip_grad_norm")]
        cut = {"type": "scale_lr", "factor": 0.5}
        mon._verdicts.apply([{"id": "p", "kind": "plateau", "severity": "warning", "step": 5,
                              "last_step": 14, "evidence": {}, "action": cut}], cut, "warning")
        for step in range(15, 40):  # held back by the cooldown until step 32, then applied
            mon.log(step, loss=1.0)
            assert (opt.param_groups[0]["lr"] == 1.0) == (step < 32)
        assert [(a["step"], a["action"]["type"]) for a in mon.actions][1:] == [(32, "scale_lr")]
