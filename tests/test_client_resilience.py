"""The client against a service that is dead, slow (SIGSTOP), killed and restarted: training goes
on, nothing is lost, nothing is duplicated, memory is bounded (spill to disk)."""

import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from fixtures.ports import free_port
from losswatch.client import Monitor
from service_helpers import get_json, wait_until

REPO = Path(__file__).resolve().parents[1]


class Server:
    """``losswatch serve`` on a port chosen by the test, so it can be restarted on the same one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "losswatch.service.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=env, cwd=str(REPO), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if self.get("/readyz", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("service not ready:\n" + self.output())

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def get(self, path, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            c.close()

    def steps(self, run_id, project="default"):
        status, body = self.get(f"/v1/runs/{run_id}/steps?project={project}")
        assert status == 200, body
        return body["series"]["step"]

    def run(self, run_id, project="default"):
        status, body = self.get(f"/v1/runs/{run_id}?project={project}")
        assert status == 200, body
        return body

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def servers():
    started = []

    def start(port):
        s = Server(port)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def outage_warnings(w):
    return [x for x in w if "cannot send to" in str(x.message)]


def test_dead_service_costs_nothing_and_everything_arrives_when_it_comes_up(servers, tmp_path):
    port = free_port()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = Monitor(run_id="res-dead", url=f"http://127.0.0.1:{port}", timeout=1.0, max_backoff=0.3,
                      spool_dir=str(tmp_path / "spool"))
        for step in range(3000):
            mon.log(step, loss=1.0 / (step + 1), grad_norm=0.5, lr=0.1)
        time.sleep(1.5)  # several failed attempts while the service is down
        for step in range(3000, 4000):
            mon.log(step, loss=0.001, grad_norm=0.5, lr=0.1)
        assert mon.stats["failures"] >= 2 and mon.stats["sent"] == 0
        srv = servers(port)
        assert mon.flush(30)
        mon.close()
    assert len(outage_warnings(w)) == 1  # one warning for the outage, not one per step or attempt
    assert srv.steps("res-dead") == list(range(4000))
    run = srv.run("res-dead")
    assert run["duplicates"] == 0 and run["out_of_order"] == 0


def test_memory_bound_spills_to_disk_and_replays_in_order(servers, tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = Monitor(run_id="res-spill", url=f"http://127.0.0.1:{port}", timeout=1.0, max_backoff=0.3,
                      spool_dir=str(spool), max_memory_records=200, batch_size=100)
        for step in range(5000):
            mon.log(step, loss=float(step), lr=0.1)
        deadline = time.monotonic() + 10
        # the sender drains the buffer into the spool (and spills) even while it cannot send
        while (mon.stats["spooled"] < 5000 or mon.stats["spilled"] < 4500) and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = mon.stats
        assert stats["spooled"] == 5000 and stats["spilled"] >= 4500
        files = sorted(spool.glob("*.jsonl"))
        on_disk = [json.loads(line)["step"] for f in files for line in f.read_text().splitlines()]
        assert len(on_disk) >= 4500 and on_disk == sorted(on_disk)  # JSON lines, oldest first
        srv = servers(port)
        assert mon.flush(60)
        mon.close()
    assert srv.steps("res-spill") == list(range(5000))
    assert srv.run("res-spill")["out_of_order"] == 0  # replayed in order, not just stored in order
    assert not spool.exists() or list(spool.iterdir()) == []


def test_slow_service_sigstop_log_stays_fast_and_every_step_is_stored_once(servers):
    srv = servers(free_port())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = Monitor(run_id="res-stopped", url=srv.url, timeout=1.0, max_backoff=0.5)
        for step in range(500):
            mon.log(step, loss=1.0, lr=0.1)
        assert mon.flush(20)
        os.kill(srv.proc.pid, signal.SIGSTOP)  # accepts TCP (kernel backlog) but never answers
        gc.disable()  # a full collection (torch is loaded) can take ~0.5 s: not what is measured
        try:
            worst = 0.0
            for step in range(500, 3000):
                t0 = time.perf_counter()
                mon.log(step, loss=1.0, lr=0.1)
                worst = max(worst, time.perf_counter() - t0)
                if step % 500 == 0:
                    time.sleep(0.6)  # let the sender try (and time out) meanwhile
            assert mon.stats["failures"] >= 1
            # a blocking log() would take the HTTP timeout (1 s); a GIL switch takes ~5 ms
            assert worst < 0.5
        finally:
            gc.enable()
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert mon.flush(30)
        mon.close()
    assert len(outage_warnings(w)) == 1
    assert srv.steps("res-stopped") == list(range(3000))
    # a POST that timed out on the client may still have been applied: sent again = a duplicate,
    # counted by the service and not stored twice
    assert srv.run("res-stopped")["n_steps"] == 3000


def test_service_killed_and_restarted_on_the_same_port(servers, tmp_path):
    port = free_port()
    srv = servers(port)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = Monitor(run_id="res-restart", url=srv.url, timeout=1.0, max_backoff=0.3, project="p1",
                      meta={"model": "m"}, spool_dir=str(tmp_path / "spool"), max_memory_records=300)
        for step in range(1000):
            mon.log(step, loss=1.0, lr=0.1)
        assert mon.flush(20)
        srv.kill(signal.SIGKILL)  # the memory store dies with it
        for step in range(1000, 3000):
            mon.log(step, loss=1.0, lr=0.1)
        time.sleep(1.0)
        assert mon.stats["failures"] >= 1
        srv2 = servers(port)
        for step in range(3000, 3500):
            mon.log(step, loss=1.0, lr=0.1)
        assert mon.flush(30)
        mon.close()
    assert len(outage_warnings(w)) == 1
    # everything logged after the kill (spooled, partly on disk) and after the restart arrives, in order
    assert srv2.steps("res-restart", "p1") == list(range(1000, 3500))
    assert srv2.run("res-restart", "p1")["out_of_order"] == 0


def test_records_left_unsent_at_close_are_kept_in_a_file(tmp_path):
    port = free_port()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon = Monitor(run_id="res-leftover", url=f"http://127.0.0.1:{port}", timeout=0.5,
                      spool_dir=str(tmp_path / "spool"), max_memory_records=50)
        for step in range(300):
            mon.log(step, loss=float("nan") if step == 7 else 1.0)
        mon.close(timeout=1.0)
        mon.log(300, loss=1.0)  # after close: ignored, not an exception
    kept = [str(x.message) for x in w if "could not be reached before the end" in str(x.message)]
    assert len(kept) == 1
    path = Path(kept[0].rsplit(" are kept in ", 1)[1])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(300))
    assert lines[7]["loss"] == "NaN"  # ready to be posted again as it is


def test_503_retry_after_from_a_service_whose_store_is_down_is_honoured(redis_proc, service_factory):
    srv = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "2"})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        # a backoff this short would retry ~40 times in 4 s; Retry-After: 2 allows about 2
        mon = Monitor(run_id="res-503", url=srv.url, max_backoff=0.1, timeout=2.0)
        for step in range(100):
            mon.log(step, loss=1.0, lr=0.1)
        assert mon.flush(20)
        redis_proc.kill9()
        for step in range(100, 300):
            mon.log(step, loss=1.0, lr=0.1)
        time.sleep(4.0)
        failures = mon.stats["failures"]
        assert 1 <= failures <= 4, failures
        redis_proc.start()  # same port, empty (no persistence): what was stored before is gone
        assert mon.flush(30)
        mon.close()
    msgs = [str(x.message) for x in outage_warnings(w)]
    assert len(msgs) == 1 and "HTTP 503" in msgs[0]
    steps = get_json(srv.url, "/v1/runs/res-503/steps")["series"]["step"]
    assert steps == list(range(100, 300))  # every step sent while the store was down arrived


def _close_into_a_store_outage(redis_proc, svc, run_id, spool, restart: bool) -> threading.Thread:
    """Steps stored, the store killed, more steps logged, close() started in a thread; once its
    first attempt was refused (503), the store is started again if ``restart``."""
    mon = Monitor(run_id=run_id, url=svc.url, spool_dir=str(spool), exit_timeout=60)
    for step in range(50):
        mon.log(step, loss=1.0)
    assert mon.flush(30)
    redis_proc.kill9()
    for step in range(50, 120):
        mon.log(step, loss=1.0)
    closing = threading.Thread(target=mon.close)
    closing.start()
    wait_until(lambda: mon.stats["failures"] >= 1, 30, "the close's first attempt refused")
    if restart:
        redis_proc.start()  # same port, empty (no persistence): what was stored before is gone
    return closing


def test_close_waits_for_a_busy_service_it_may_retry_within_exit_timeout(redis_proc, service_factory, tmp_path):
    # a 503 with Retry-After is a service that is there and asks to come back in a second: the
    # close retries then (its exit_timeout allows it) instead of leaving the steps in a file
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "1"})
    closing = _close_into_a_store_outage(redis_proc, svc, "res-close-busy", tmp_path / "spool", restart=True)
    closing.join(60)
    assert not closing.is_alive()
    assert not list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert get_json(svc.url, "/v1/runs/res-close-busy/steps")["series"]["step"] == list(range(50, 120))
    assert get_json(svc.url, "/v1/runs/res-close-busy")["meta"]["status"] == "finished"


def test_close_does_not_wait_for_a_retry_due_after_its_exit_timeout(redis_proc, service_factory, tmp_path):
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "120"})
    closing = _close_into_a_store_outage(redis_proc, svc, "res-close-late", tmp_path / "spool", restart=False)
    closing.join(30)        # exit_timeout is 60 s: a close waiting for the retry would still be here
    assert not closing.is_alive()
    kept = list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert len(kept) == 1
    assert [json.loads(line)["step"] for line in kept[0].read_text().splitlines()] == list(range(50, 120))


def test_close_does_not_begin_a_retry_the_deadline_would_cut_short(redis_proc, service_factory, tmp_path):
    # Redis stalled: each answer is a 503 after the store's timeout (1.5 s), asking for a retry
    # in 1 s. The close (4 s, 3.5 s of it for the flush) gets its first 503 at about 1.5 s; a
    # retry at 2.5 s would be answered at about 4 s, after the flush's deadline: not begun
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "1",
                               "LOSSWATCH_STORE_TIMEOUT_MS": "1500"})
    mon = Monitor(run_id="res-close-slow", url=svc.url, spool_dir=str(tmp_path / "spool"), exit_timeout=4)
    for step in range(50):
        mon.log(step, loss=1.0)
    assert mon.flush(30)
    for step in range(50, 120):
        mon.log(step, loss=1.0)
    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        mon.close()
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    assert mon.stats["failures"] == 1           # one attempt, refused; no second one begun
    kept = list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert len(kept) == 1
    assert [json.loads(line)["step"] for line in kept[0].read_text().splitlines()] == list(range(50, 120))


def test_close_with_every_step_stored_but_not_the_finished_status_says_so(redis_proc, service_factory, tmp_path):
    # the steps were acknowledged before the close; the close's only request, the finished
    # status, is refused (the store went away) with a retry due after exit_timeout
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "120"})
    mon = Monitor(run_id="res-close-status", url=svc.url, spool_dir=str(tmp_path / "spool"))
    for step in range(50):
        mon.log(step, loss=1.0)
    assert mon.flush(30) and mon.stats["sent"] == 50
    redis_proc.kill9()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mon.close()
    said = [str(x.message) for x in w if "finished status" in str(x.message)]
    assert len(said) == 1 and "every step of run res-close-status reached" in said[0], [str(x.message) for x in w]
    assert not list((tmp_path / "spool").glob("unsent-*.jsonl"))


def test_close_from_an_on_alert_callback_keeps_what_it_could_not_send(tmp_path):
    # the service is down: the callback's close() cannot send, and the thread that ran it keeps
    # the records in the unsent file itself; the interpreter's exit waits for that
    script = (
        "import threading\n"
        "from losswatch.client import Monitor\n"
        "closed = threading.Event()\n"
        "def close_on_alert(alert):\n"
        "    mon.close()\n"
        "    closed.set()\n"
        f"mon = Monitor(run_id='res-cb-exit', url='http://127.0.0.1:{free_port()}', "
        f"spool_dir={str(tmp_path / 'spool')!r}, on_alert=close_on_alert)\n"
        "for step in range(50):\n"
        "    mon.log(step, loss=1.0)\n"
        "mon.log(50, loss=float('nan'))\n"   # a local NaN alert: the callback runs in the sender thread
        "assert closed.wait(30)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "are kept in" in p.stderr, p.stderr
    kept = list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert len(kept) == 1
    lines = [json.loads(line) for line in kept[0].read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(51)) and lines[50]["loss"] == "NaN"


def test_close_from_an_on_alert_callback_sends_a_backlog_larger_than_one_send(service_factory, tmp_path):
    # one send takes a bounded number of batches; the thread's last cycle sends on while the
    # service takes them, so a healthy service gets every record and nothing is left in a file
    svc = service_factory()
    closed = threading.Event()

    def close_on_alert(alert):
        mon.close()
        closed.set()

    mon = Monitor(run_id="res-cb-backlog", url=svc.url, spool_dir=str(tmp_path / "spool"), batch_size=5,
                  flush_interval=3600, on_alert=close_on_alert)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for step in range(1000):
            mon.log(step, loss=1.0)
        mon.log(1000, loss=float("nan"))       # a local NaN alert: the callback runs in the sender thread
        mon.flush(0.0)                          # wake the thread now
        assert closed.wait(60)
        mon.close()                             # waits for the thread's last cycle
    assert not list((tmp_path / "spool").glob("unsent-*.jsonl")), [str(x.message) for x in w]
    assert get_json(svc.url, "/v1/runs/res-cb-backlog/steps")["series"]["step"] == list(range(1001))


def test_an_exit_while_the_closing_on_alert_callback_still_runs_says_what_is_lost(tmp_path):
    # the callback closes the run, then keeps working past the exit: its thread's last cycle
    # never comes, and the exit says how many records go with the process
    script = (
        "import threading\n"
        "from losswatch.client import Monitor\n"
        "closed, never = threading.Event(), threading.Event()\n"
        "def close_on_alert(alert):\n"
        "    mon.close()\n"
        "    closed.set()\n"
        "    never.wait()\n"                        # more work of its own (a checkpoint, say)
        f"mon = Monitor(run_id='res-cb-busy', url='http://127.0.0.1:{free_port()}', "
        f"spool_dir={str(tmp_path / 'spool')!r}, on_alert=close_on_alert, exit_timeout=1)\n"
        "for step in range(50):\n"
        "    mon.log(step, loss=1.0)\n"
        "mon.log(50, loss=float('nan'))\n"
        "assert closed.wait(30)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "unsent records of run res-cb-busy were lost" in p.stderr, p.stderr
    assert "closed from an on_alert callback whose thread was still busy" in p.stderr, p.stderr


def test_batches_larger_than_the_service_accepts_are_split_not_lost(service_factory):
    srv = service_factory(env={"LOSSWATCH_MAX_BATCH_RECORDS": "64"})
    with Monitor(run_id="res-413", url=srv.url, batch_size=1000) as mon:
        for step in range(2500):
            mon.log(step, loss=1.0)
        assert mon.flush(30)
        stats = mon.stats
    assert stats["sent"] == 2500 and stats["rejected"] == 0
    assert mon._transport.batch_size <= 64  # halved on each 413 until accepted
    assert get_json(srv.url, "/v1/runs/res-413/steps")["series"]["step"] == list(range(2500))


def test_exit_with_the_service_down_is_not_held_up_for_the_whole_timeout(tmp_path):
    script = (
        "import time, warnings\n"
        "from losswatch.client import Monitor\n"
        f"mon = Monitor(run_id='res-exit', url='http://127.0.0.1:{free_port()}', "
        f"spool_dir={str(tmp_path / 'spool')!r}, exit_timeout=30)\n"
        "for step in range(100):\n"
        "    mon.log(step, loss=1.0)\n"
        "t0 = time.monotonic()\n"
        "mon.close()\n"
        "print(round(time.monotonic() - t0, 2))\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # one refused attempt, then the records go to a file: far less than exit_timeout (30 s)
    assert float(p.stdout.strip()) < 15
    assert "are kept in" in p.stderr
    kept = list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == 100


def test_a_record_the_service_rejects_does_not_take_its_batch_with_it(service_factory):
    srv = service_factory()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with Monitor(run_id="res-422", url=srv.url, batch_size=100) as mon:
            for step in range(300):
                extra = {f"k{i}": 1.0 for i in range(100)} if step == 150 else {}
                mon.log(step, loss=1.0, **extra)  # the service allows at most 64 extra keys
            assert mon.flush(30)
            stats = mon.stats
    assert stats["rejected"] == 1 and stats["sent"] == 299
    assert any("HTTP 422" in str(x.message) for x in w)
    steps = get_json(srv.url, "/v1/runs/res-422/steps")["series"]["step"]
    assert steps == [s for s in range(300) if s != 150]


def test_a_retryable_failure_while_splitting_a_rejected_batch_resends_only_the_unsent_records():
    """A 422 makes the sender post the batch's records one by one; a 503 in the middle of that
    must not send again the records the service already accepted (a scripted HTTP server:
    no real service fails on cue between two single-record POSTs)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    accepted: list[int] = []
    singles = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _answer(self, code: int, body: bytes = b"{}") -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(200)

        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            recs = payload.get("records", []) if isinstance(payload, dict) else []
            if len(recs) > 1:
                return self._answer(422, b'{"detail": [{"msg": "one record is bad"}]}')
            singles["n"] += 1
            if singles["n"] == 3:
                return self._answer(503, b'{"detail": "try again"}')
            accepted.extend(r["step"] for r in recs)
            self._answer(200, b'{"alerts": [], "recommendation": null, "health": "ok"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mon = Monitor(run_id="res-split", url=f"http://127.0.0.1:{server.server_port}",
                          batch_size=100, max_backoff=0.2)
            for step in range(5):
                mon.log(step, loss=1.0)
            assert mon.flush(20)
            stats = dict(mon.stats)
            mon.close()
    finally:
        server.shutdown()
    assert singles["n"] >= 3  # the 503 did happen in the middle of the one-by-one sends
    assert sorted(accepted) == [0, 1, 2, 3, 4]  # each record accepted exactly once
    assert stats["sent"] == 5 and stats["rejected"] == 0


class FrozenService:
    """A listening socket that accepts connections and never answers: a hung service (or one
    stopped in a debugger) as the client sees it."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_exit_with_a_frozen_service_keeps_to_exit_timeout(tmp_path):
    """close() has one deadline, exit_timeout: an HTTP attempt the service never answers is cut
    short at it (not waited out for the per-attempt timeout), and the records go to the file."""
    import threading

    frozen = FrozenService()
    exit_timeout, attempt_timeout = 1.0, 10.0
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            mon = Monitor(run_id="res-frozen", url=frozen.url, timeout=attempt_timeout, exit_timeout=exit_timeout,
                          spool_dir=str(tmp_path / "spool"))
            for step in range(50):
                mon.log(step, loss=1.0)
            closer = threading.Thread(target=mon.close)
            closer.start()
            # condition-based: join returns as soon as close() does; the bound separates "kept to
            # exit_timeout" from "waited for the attempt's timeout" (10 s) with seconds to spare
            closer.join(exit_timeout + 4.0)
            assert not closer.is_alive(), "close() overran exit_timeout by more than 4 s"
            assert frozen.accepted  # the client did reach the service and wait on it
    finally:
        frozen.close()
        closer.join(30)
    assert not [x for x in w if "were lost" in str(x.message)]
    kept = list((tmp_path / "spool").glob("unsent-*.jsonl"))
    assert len(kept) == 1 and [json.loads(x)["step"] for x in kept[0].read_text().splitlines()] == list(range(50))
