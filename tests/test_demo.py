"""`losswatch demo` runs to completion (embedded service, real numpy training, the real client)
and shows the divergence / NaN alerts and the advice as they arrive; it opens with the run page's
URL, and SIGTERM, SIGINT or its own death (SIGKILL) take its service down with it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.ports import free_port
from service_helpers import wait_until

REPO = Path(__file__).resolve().parents[1]


def run_demo(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "demo", "--no-wait", *args],
                          cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


def test_demo_runs_to_completion_and_shows_the_alerts_and_advice():
    port = free_port()
    p = run_demo("--step-delay", "0.002", "--port", str(port), "--run-id", "demo-test")
    out = p.stdout
    assert p.returncode == 0, p.stdout + p.stderr
    alert_lines = [line for line in out.splitlines() if ">> ALERT" in line]
    kinds = {m.group(1) for line in alert_lines if (m := re.search(r">> ALERT \w+\s+(\w+) at step", line))}
    assert kinds & {"divergence", "grad_explosion"}, out  # seen coming, before the NaN
    assert "nan" in kinds, out  # and the NaN itself
    assert re.search(r"advice: (scale_lr|rollback|clip_grad_norm)", out), out
    assert "lead time:" in out
    summary = next(line for line in out.splitlines() if line.startswith("done:"))
    assert "300 steps stored" in summary and "health critical" in summary
    for path in ("/docs", "/v1/runs/demo-test?project=demo", "/v1/runs/demo-test/alerts?project=demo", "/metrics"):
        assert f"http://127.0.0.1:{port}{path}" in out
    # --no-wait stopped the service it started
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_demo_against_an_already_running_service(service_proc):
    p = run_demo("--step-delay", "0", "--url", service_proc, "--steps", "150", "--run-id", "demo-ext")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "starting the service" not in p.stdout
    assert "150 steps stored" in p.stdout
    assert f"{service_proc}/v1/runs/demo-ext/alerts?project=demo" in p.stdout


def test_demo_leaves_the_service_running_until_ctrl_c():
    import http.client
    import json
    import signal
    import time

    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "losswatch.service.cli", "demo", "--step-delay", "0",
                          "--steps", "200", "--port", str(port), "--run-id", "demo-wait"],
                         cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        for path in ("/docs", "/v1/runs/demo-wait?project=demo", "/v1/runs/demo-wait/alerts?project=demo", "/metrics"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            c.close()
            assert r.status == 200, (path, body[:200])
            if path.endswith("/alerts"):
                assert json.loads(body)["alerts"]
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with socket_bound(port):
        pass


def socket_bound(port):
    """Binding the port again proves the demo stopped the service it started."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", port))
    return s


def start_demo(port: int, run_id: str) -> tuple[subprocess.Popen, list[str]]:
    """`losswatch demo` paced to train for minutes, read up to its first line, the page's URL."""
    import time

    p = subprocess.Popen([sys.executable, "-m", "losswatch.service.cli", "demo", "--steps", "100000",
                          "--step-delay", "0.01", "--port", str(port), "--run-id", "demo-sig"],
                         cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if line.startswith("open "):
            break
    assert lines[-1].strip() == f"open http://127.0.0.1:{port}/runs/demo-sig", "".join(lines)
    return p, lines


def answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until_closed(port: int, timeout: float = 30.0) -> None:
    wait_until(lambda: not answers(port), timeout, f"the demo's service on port {port} to stop answering")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_demo_and_its_service(sig):
    import http.client
    import signal

    port = free_port()
    p, _ = start_demo(port, "demo-sig")
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/runs/demo-sig")  # the URL it opened with is the run's page
        r = c.getresponse()
        assert r.status == 200 and "text/html" in r.getheader("content-type"), r.read()[:200]
        c.close()
        signum = getattr(signal, sig)
        p.send_signal(signum)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 128 + signum, out[-2000:]  # stopped while training
        assert "stopping the service" in out and "Traceback" not in out, out[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_until_closed(port)


def test_the_service_goes_when_the_demo_is_killed():
    port = free_port()
    p, _ = start_demo(port, "demo-sig")
    assert answers(port)
    p.kill()  # SIGKILL: the demo runs no code of its own; the service notices on its own
    p.wait()
    p.stdout.close()
    wait_until_closed(port)
