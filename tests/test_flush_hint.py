"""The flush hint: a service with many POST /steps in flight asks its clients to send less often
(``X-Losswatch-Flush-Interval``), the real client follows it, comes back to its own interval when
the hint goes away, and nothing is lost on the way."""

import socket

import pytest

from losswatch.client import Monitor
from losswatch.client.flush import HINT_MAX
from losswatch.client.http import _flush_hint
from losswatch.service.flush_hint import EVIDENCE, HEADER, FlushHint
from service_helpers import client, get_json, post_records, wait_until

# --- the rule, step by step (explicit clock: each enter() at least a window after the last) -------

def crowd(h: FlushHint, t: float, load: int) -> None:
    """Requests arriving together at time t, finding ``load`` others in flight on average (0, 1, ...
    2*load), then answered."""
    for _ in range(2 * load + 1):
        h.enter(t)
    for _ in range(2 * load + 1):
        h.leave(t)


def test_hint_doubles_while_busy_waiting_for_clients_up_to_the_maximum_holds_then_fades_out():
    h = FlushHint(threshold=4, maximum=5)
    crowd(h, 0.0, 1)
    seen = []
    for t in range(1, 10):
        crowd(h, float(t), 4)       # each window busy: the hint moves at the next one's first request
        seen.append(h.seconds)
    # 1 s, then doubling, but only once the clients had the last hint's length to follow it; capped
    assert seen == [0.0, 1.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 5.0]
    assert h.headers() == {HEADER: "5"}
    crowd(h, 10.0, 3)               # after the last busy window: 5 s still
    crowd(h, 11.0, 1)               # after a window of 3 on average, neither busy nor quiet: holds
    assert h.seconds == 5.0
    fading = []
    for t in range(12, 40):
        crowd(h, float(t), 2)       # quiet: at most half the threshold
        fading.append(h.seconds)
    assert fading[0] == pytest.approx(4.5)                # a tenth less per quiet window ...
    assert all(a > b for a, b in zip(fading, fading[1:]) if b)
    assert 0.5 <= min(x for x in fading if x) < 0.6       # ... down to the client's default interval,
    assert fading[-1] == 0.0 and h.headers() is None      # then dropped
    assert h.in_flight == 0


def test_seconds_without_any_request_fade_the_hint_as_quiet_ones_do():
    h = FlushHint(threshold=1, maximum=16)
    crowd(h, 0.0, 1)
    for t in range(1, 40):
        crowd(h, float(t), 2)       # busy: the hint climbs to its maximum
    assert h.seconds == 16.0
    crowd(h, 40.0, 2)               # the last busy window ...
    crowd(h, 640.0, 0)              # ... then ten minutes without a request: that busy window is
    assert h.seconds == 0.0         # long gone and every second since was quiet
    assert h.headers() is None


def test_a_window_ends_early_once_enough_of_its_requests_found_the_process_loaded():
    h = FlushHint(threshold=1, maximum=30)
    h.enter(10.0)
    h.enter(10.5)
    assert h.seconds == 0.0          # the first window had no requests before it
    for _ in range(EVIDENCE - 2):
        h.enter(10.6)                # loaded, but too few requests to say so before the second ends
    assert h.seconds == 0.0
    h.enter(10.6)                    # EVIDENCE requests found the process loaded: no need to wait
    assert h.seconds == 1.0          # (none answered yet: no rate to go by, so the first hint)
    for _ in range(2 * EVIDENCE):
        h.enter(10.7)                # a hint of 1 s may not rise again within 1 s, however loaded
    assert h.seconds == 1.0
    h.enter(11.6)
    assert h.seconds == 2.0


class Queue:
    """A process answering one request at a time, ``service`` seconds each, in arrival order:
    drives a FlushHint's enter/leave with the times a real one would see."""

    def __init__(self, hint: FlushHint, service: float) -> None:
        self.hint, self.service = hint, service
        self.free_at = 0.0
        self.leaving: list[float] = []

    def arrive(self, t: float) -> None:
        while self.leaving and self.leaving[0] <= t:
            self.hint.leave(self.leaving.pop(0))
        self.hint.enter(t)
        self.free_at = max(t, self.free_at) + self.service
        self.leaving.append(self.free_at)


def test_a_fleet_starting_at_once_is_hinted_within_its_first_requests_at_the_rate_it_needs():
    # 1,000 requests a second (a fleet of runs at a 0.5 s interval, say) into a process that
    # answers 500 a second: twice what it can do, four times what half busy (threshold 1) allows
    h = FlushHint(threshold=1, maximum=30)
    q = Queue(h, service=0.002)
    t = 0.0
    while h.seconds == 0.0:
        t += 0.001
        q.arrive(t)
    assert t < 0.1                                  # not a second later: within its first requests
    # the interval the runs sent at (0.5 s) times 2 (the rate over what the process answers) times 2
    # (over the half busy asked for): 2 s, at once, not 1, 2, 4 ... over seconds of overload
    assert h.seconds == pytest.approx(2.0, rel=0.15)
    assert h.headers() == {HEADER: f"{h.seconds:.3g}"}


def test_a_short_burst_in_a_busy_second_does_not_raise_the_hint():
    h = FlushHint(threshold=8, maximum=30)
    h.enter(0.0)
    h.leave(0.001)
    for k in range(1, 200):          # a second of requests one at a time ...
        h.enter(k / 400)
        h.leave(k / 400 + 0.001)
    crowd(h, 0.9, 10)                # ... and a burst of 21 after a stall
    h.enter(1.0)
    assert h.seconds == 0.0


def test_threshold_zero_never_hints():
    h = FlushHint(threshold=0, maximum=30)
    for t in range(5):
        crowd(h, float(t), 1000)
    assert h.headers() is None


@pytest.mark.parametrize("value, seconds", [
    (None, 0.0), ("4", 4.0), ("0.75", 0.75), ("1e9", HINT_MAX), ("0", 0.0), ("-3", 0.0),
    ("nan", 0.0), ("soon", 0.0), ("inf", HINT_MAX),
])
def test_client_reads_the_header_within_its_bounds(value, seconds):
    headers = {} if value is None else {"x-losswatch-flush-interval": value}
    assert _flush_hint(headers) == seconds


# --- a real service and the real client ------------------------------------------------------------

def test_one_run_at_a_time_gets_no_hint(service_proc):
    with client(service_proc) as c:
        r = post_records(c, "lone", [{"step": s, "loss": 1.0} for s in range(10)])
    assert r.status_code == 200 and HEADER.lower() not in r.headers


class HeldRequest:
    """A POST /steps whose body is still coming: the service holds it in flight until finish()."""

    def __init__(self, port: int, run_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(f"POST /v1/runs/{run_id}/steps HTTP/1.1\r\nHost: t\r\nContent-Type: "
                          f"application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                          + self._chunk(b'{"records":['))

    @staticmethod
    def _chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    def finish(self, rest: bytes) -> bytes:
        """Send the rest of the body; the answer's status line and headers."""
        self.sock.sendall(self._chunk(rest) + b"0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = self.sock.recv(65536)
            assert data, answer
            answer += data
        self.sock.close()
        return answer.split(b"\r\n\r\n")[0]


def test_client_follows_the_hint_back_to_its_own_interval_and_loses_nothing(service_factory):
    svc = service_factory(env={"LOSSWATCH_FLUSH_HINT_INFLIGHT": "1", "LOSSWATCH_FLUSH_HINT_MAX": "1"})
    held = HeldRequest(svc.port, "held")             # in flight all along: each of the run's
    mon = Monitor(run_id="hinted", url=svc.url)      # requests finds one other: busy
    worker, transport = mon._worker, mon._transport
    assert worker.interval == 0.5                    # the client's default
    step = 0

    def one_step() -> float:
        """Log a step, wait for the POST that carries it; the hint its answer gave."""
        nonlocal step
        posts = transport.stats["posts"]
        mon.log(step, loss=1.0 / (step + 1))
        step += 1
        wait_until(lambda: transport.stats["posts"] > posts, 30, f"the POST of step {step - 1}")
        return transport.flush_hint

    while one_step() < 1.0:                          # busy: the answers carry 1 s, the maximum ...
        assert step < 30
    assert worker.interval == 1.0                    # ... and the client waits that long
    head = held.finish(b'{"step":0,"loss":1}]}')
    assert head.startswith(b"HTTP/1.1 200") and f"{HEADER}: 1".lower().encode() in head.lower()
    fading = []                                      # quiet now: the hint fades, then goes
    while (hint := one_step()) > 0:
        fading.append(hint)
        assert worker.interval == max(0.5, hint)
        assert step < 100
    assert any(0.5 < x < 1.0 for x in fading), fading   # gradually, not all at once
    assert worker.interval == 0.5                    # back to its own interval
    mon.close()
    series = get_json(svc.url, "/v1/runs/hinted/steps")["series"]
    assert series["step"] == list(range(step))
    assert get_json(svc.url, "/v1/runs/held/steps")["series"]["step"] == [0]


def loaded(service_factory):
    """A service whose hint is up (1 s, its maximum here): a request held in flight, which every
    other finds, and another run's batches until an answer carries the hint."""
    svc = service_factory(env={"LOSSWATCH_FLUSH_HINT_INFLIGHT": "1", "LOSSWATCH_FLUSH_HINT_MAX": "1"})
    held = HeldRequest(svc.port, "held")
    with client(svc.url) as c:
        step = iter(range(10**6))
        wait_until(lambda: HEADER.lower() in post_records(c, "loader", [{"step": next(step), "loss": 1.0}]).headers,
                   30, "an answer with the hint")
    return svc, held


def test_a_runs_metadata_and_action_answers_carry_the_hint_too(service_factory):
    svc, held = loaded(service_factory)
    with client(svc.url) as c:
        put = c.put("/v1/runs/starting", json={"project": "p", "optimizer": "adamw"})
        action = c.post("/v1/runs/starting/actions?project=p",
                        json={"step": 0, "action": {"type": "scale_lr", "factor": 0.5}, "applied": False})
    assert put.status_code == 200 and float(put.headers[HEADER]) > 0.5   # a run's first answer
    assert action.status_code == 201 and float(action.headers[HEADER]) > 0.5
    held.finish(b'{"step":0,"loss":1}]}')


def test_a_run_starting_into_a_loaded_service_follows_the_hint_from_its_first_answer(service_factory):
    svc, held = loaded(service_factory)
    mon = Monitor(run_id="late", url=svc.url, meta={"optimizer": "adamw"})
    transport = mon._transport
    try:
        # its first request is the metadata PUT; no step logged, so no POST yet
        wait_until(lambda: transport.waiting == 0, 30, "the metadata PUT answered")
        assert transport.stats["posts"] == 0
        assert transport.flush_hint > 0.5 and mon._worker.interval == transport.flush_hint
    finally:
        held.finish(b'{"step":0,"loss":1}]}')
        mon.close()
    assert get_json(svc.url, "/v1/runs/late")["meta"]["optimizer"] == "adamw"
