"""Webhook notifications against real loopback receivers (a threading HTTP server in the test) and a
real ``losswatch serve``: what a receiver gets, a receiver limited to another project, a receiver
that is down and comes back, a receiver that hangs while ingest goes on, and replicas on one Redis
sending each alert event once. The notifier alone (in this process, real receivers): the rate
limit, which answers are retried. The claim that makes one replica send each notification is
part of the ingest pipeline's commit (tests/test_pipeline.py)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from fixtures.ports import free_port
from losswatch.service.notify import Notifier, Receiver, notifies, parse_receivers, slack_escape
from losswatch.service.settings import Settings, SettingsError
from service_helpers import client, get_text, post_records, wait_until
from test_redis_store import curve
from test_replicas import wire

PUBLIC = "https://losswatch.example/team"


class Hook:
    """A webhook receiver on 127.0.0.1:``port``: keeps every JSON body it accepts (200). With
    ``hold`` set, each request waits until ``release()`` before it answers (a hung receiver);
    ``answers`` are the statuses of its first answers (an error status: the body is not kept)."""

    def __init__(self, port: int | None = None, hold: bool = False, answers: tuple[int, ...] = ()) -> None:
        self.bodies: list[dict] = []
        self.answers = list(answers)          # HTTP statuses for the first requests, then 200
        self.waiting = 0                      # requests inside the handler, held
        self.cond = threading.Condition()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.cond:
                    outer.waiting += 1
                    outer.cond.notify_all()
                outer.released.wait(60)
                with outer.cond:
                    outer.waiting -= 1
                    status = outer.answers.pop(0) if outer.answers else 200
                    if status == 200:
                        outer.bodies.append(body)
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, pred: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.bodies), timeout), self.bodies
            return list(self.bodies)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Hook] = []

    def make(**kw) -> Hook:
        r = Hook(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def notifications(url: str) -> dict[str, float]:
    """losswatch_notifications_total by result, from /metrics."""
    text = get_text(url, "/metrics")
    return {m[0]: float(m[1]) for m in re.findall(r'^losswatch_notifications_total\{result="(\w+)"\} (\S+)$',
                                                  text, re.M)}



async def until(pred: Callable[[], object], timeout: float = 60) -> None:
    """Wait in the event loop (the notifier's workers run meanwhile) until ``pred()`` holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def notifiable(responses: list[dict]) -> list[str]:
    """The dedupe keys of the alert events the POST /steps answers report that are notified."""
    return [f"{a['id']}:{a['event']}:{a['last_step']}" for r in responses for a in r["alerts"] if notifies(a)]


def post_run(url: str, run_id: str, recs: list[dict], project: str, batch: int = 50) -> list[dict]:
    c = client(url)
    out = []
    for i in range(0, len(recs), batch):
        r = post_records(c, run_id, wire(recs[i:i + batch]), project=project)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def test_receiver_syntax_and_bad_settings() -> None:
    assert parse_receivers("http://a/x, https://b/y#project=p1\nhttp://c") == (
        Receiver("http://a/x"), Receiver("https://b/y", "p1"), Receiver("http://c"))
    for bad, says in (("ftp://a/x", "not an http"), ("http://a/x#proj=p1", "project=NAME"),
                      ("http://a/x#project=no/slash", "project 'no/slash'")):
        with pytest.raises(SettingsError, match=says):
            Settings.from_env({"LOSSWATCH_NOTIFY": bad})
    with pytest.raises(SettingsError, match="LOSSWATCH_PUBLIC_URL"):
        Settings.from_env({"LOSSWATCH_PUBLIC_URL": "losswatch.example"})


def test_serve_refuses_a_bad_receiver_and_names_it() -> None:
    res = subprocess.run([sys.executable, "-m", "losswatch.service.cli", "serve", "--port", "0",
                          "--notify", "http://ok.example/hook", "--notify", "hooks.example/no-scheme"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "LOSSWATCH_NOTIFY: 'hooks.example/no-scheme' is not an http:// or https:// URL" in res.stderr


def test_a_critical_alert_reaches_its_receivers_once_with_a_link_to_the_run(service_factory, receivers):
    everything, other = receivers(), receivers()
    svc = service_factory(args=["--notify", everything.url, "--notify", f"{other.url}#project=other",
                                "--public-url", PUBLIC + "/"])
    answers = post_run(svc.url, "hot", curve(400, seed=1, diverge_at=300), "p1")
    keys = notifiable(answers)
    # the run-away becomes critical once (raised so, or escalated from a warning)
    critical = [a for r in answers for a in r["alerts"]
                if a["severity"] == "critical" and a["event"] in ("raised", "escalated")]
    assert [a["kind"] for a in critical] == ["divergence"]
    got = everything.wait_for(lambda b: {x["dedupe_key"] for x in b} >= set(keys))
    for_critical = [b for b in got if b["alert"]["id"] == critical[0]["id"] and b["event"] == critical[0]["event"]]
    assert len(for_critical) == 1
    b = for_critical[0]
    assert b["project"] == "p1" and b["alert"]["severity"] == "critical"
    assert b["run_url"] == f"{PUBLIC}/runs/hot?project=p1" and f"<{PUBLIC}/runs/hot?project=p1|" in b["text"]
    for word in ("critical", "divergence", "`hot`", "`p1`", slack_escape(b["alert"]["message"]),
                 "Advice: " + slack_escape(b["alert"]["action"]["reason"])):
        assert word in b["text"], word
    # warning or worse, raised or escalated only: the plateau alert's "updated" event did not go out
    assert any(a["event"] == "updated" for r in answers for a in r["alerts"])
    assert sorted(x["dedupe_key"] for x in got) == sorted(keys)
    assert {x["event"] for x in got} <= {"raised", "escalated"}

    # the receiver limited to project "other" gets that project's alerts and nothing of p1's (its
    # queue is first in, first out: a p1 notification would have come before this one)
    post_run(svc.url, "elsewhere", curve(300, seed=2, nan_at=250), "other")
    seen = other.wait_for(lambda b: any(x["alert"]["kind"] == "nan" for x in b))
    assert {x["project"] for x in seen} == {"other"}
    everything.wait_for(lambda b: any(x["run_id"] == "elsewhere" and x["alert"]["kind"] == "nan" for x in b))
    # a receiver holds the body before the service has its answer: the count follows
    wait_until(lambda: notifications(svc.url).get("sent") == len(everything.bodies) + len(other.bodies),
               what="every delivery counted as sent")


def test_a_receiver_that_is_down_gets_the_notification_when_it_comes_back(service_factory, receivers):
    port = free_port()                       # nothing listens here yet
    svc = service_factory(args=["--notify", f"http://127.0.0.1:{port}/hook"])
    answers = post_run(svc.url, "nan-run", curve(260, seed=3, nan_at=250), "p1")
    keys = notifiable(answers)
    assert keys
    wait_until(lambda: notifications(svc.url).get("failed", 0) >= 1, what="a failed attempt in /metrics")
    assert "sent" not in notifications(svc.url)
    back = receivers(port=port)
    got = back.wait_for(lambda b: {x["dedupe_key"] for x in b} >= set(keys))
    assert sorted(x["dedupe_key"] for x in got) == sorted(keys)
    wait_until(lambda: notifications(svc.url).get("sent") == len(keys), what="the deliveries counted as sent")
    assert "gave_up" not in notifications(svc.url)


def test_ingest_goes_on_while_a_receiver_hangs(service_factory, receivers):
    hung = receivers(hold=True)
    svc = service_factory(args=["--notify", hung.url])
    post_run(svc.url, "first", curve(260, seed=4, nan_at=250), "p1")
    with hung.cond:
        assert hung.cond.wait_for(lambda: hung.waiting >= 1, 60)       # the webhook is being held
    # the next alert's POST /steps answers while the receiver still holds the first notification
    answers = post_run(svc.url, "second", curve(260, seed=5, nan_at=250), "p1")
    assert any(a["kind"] == "nan" for r in answers for a in r["alerts"])
    assert not hung.released.is_set() and hung.waiting >= 1 and not hung.bodies
    hung.release()
    hung.wait_for(lambda b: {x["run_id"] for x in b} == {"first", "second"})


def test_two_replicas_on_one_redis_send_each_alert_event_once(redis_proc, service_factory, receivers):
    hook = receivers()
    env = {"LOSSWATCH_STORE": redis_proc.url}
    replicas = [service_factory(env=env, args=["--notify", hook.url]) for _ in range(2)]
    recs = curve(2000, seed=21, spike_at=800, nan_at=1300, diverge_at=1700)
    rng = random.Random(7)
    answers: list[dict] = []
    lock = threading.Lock()
    batches = [recs[i:i + 40] for i in range(0, len(recs), 40)]

    def writer(k: int) -> None:
        # every writer sends every batch, each to a replica picked at random: the same steps
        # reach both replicas, conflicting in the store; only one ingest stores each
        cs = [client(r.url) for r in replicas]
        for b in batches:
            r = post_records(cs[rng.random() < 0.5], "shared", wire(b), project="p")
            assert r.status_code == 200, r.text
            with lock:
                answers.append(r.json())

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = notifiable(answers)
    assert len(keys) == len(set(keys)) >= 2          # each event reported by one ingest only
    hook.wait_for(lambda b: {x["dedupe_key"] for x in b} >= set(keys))
    # every delivery is counted once the receiver has answered: then nothing more is on its way
    wait_until(lambda: sum(notifications(r.url).get("sent", 0) for r in replicas) >= len(keys))
    assert sorted(x["dedupe_key"] for x in hook.bodies) == sorted(keys)
    assert sum(notifications(r.url).get("sent", 0) for r in replicas) == len(keys)


def test_the_rate_limit_holds_back_a_flood_and_says_so(receivers) -> None:
    """At most per_minute notifications per run: the excess is counted, and the run's next
    notification says how many were held back."""
    hook = receivers()
    now = [0.0]

    async def main() -> dict[str, int]:
        counts: dict[str, int] = {}
        n = Notifier([Receiver(hook.url)], public_url=PUBLIC, per_minute=2,
                     counts=lambda r: counts.__setitem__(r, counts.get(r, 0) + 1))
        n.limit.clock = lambda: now[0]
        n.start()
        for step in range(5):
            n.submit([{"id": f"r:spike:{step}", "run_id": "r", "step": step, "last_step": step, "kind": "spike",
                       "severity": "warning", "message": "A spike.", "event": "raised", "action": {}}], "p")
        now[0] = 61.0                         # a minute later the run may send again
        n.submit([{"id": "r:nan:9", "run_id": "r", "step": 9, "last_step": 9, "kind": "nan", "severity": "critical",
                   "message": "NaN.", "event": "raised", "action": {}}], "p")
        await until(lambda: counts.get("sent", 0) >= 3)
        await n.stop()
        return counts

    assert asyncio.run(main()) == {"rate_limited": 3, "sent": 3}
    assert [b["alert"]["id"] for b in hook.bodies] == ["r:spike:0", "r:spike:1", "r:nan:9"]
    assert hook.bodies[-1]["held_back"] == 3 and "3 earlier notification(s)" in hook.bodies[-1]["text"]


ALERT = {"id": "r:nan:5", "run_id": "r", "step": 5, "last_step": 5, "kind": "nan", "severity": "critical",
         "message": "The loss is NaN.", "event": "raised", "action": {"type": "rollback", "reason": "Roll back."}}


def deliver_one(url: str) -> dict[str, int]:
    """One notifier, one receiver, one alert: the results counted once it is sent or given up."""

    async def main() -> dict[str, int]:
        counts: dict[str, int] = {}
        n = Notifier([Receiver(url)], public_url=PUBLIC, per_minute=10,
                     counts=lambda r: counts.__setitem__(r, counts.get(r, 0) + 1))
        n.start()
        n.submit([ALERT], "p")
        await until(lambda: counts.get("sent") or counts.get("gave_up"))
        await n.stop()
        return counts

    return asyncio.run(main())


def test_a_5xx_is_retried_and_a_4xx_is_not(receivers) -> None:
    flaky = receivers(answers=(503, 429))
    assert deliver_one(flaky.url) == {"failed": 2, "sent": 1}
    assert [b["dedupe_key"] for b in flaky.bodies] == ["r:nan:5:raised:5"]
    refusing = receivers(answers=(400,))
    assert deliver_one(refusing.url) == {"failed": 1, "gave_up": 1}
    assert refusing.bodies == []
