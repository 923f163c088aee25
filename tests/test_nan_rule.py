"""The one NaN rule: the client's in-process check and the service's detector judge the same
records the same way, the client imports it without numpy, and on_alert is told each event."""

import math
import os
import subprocess
import sys
import threading
import warnings

import pytest

from detector_helpers import replay
from fixtures.ports import free_port
from losswatch.client import Monitor
from losswatch.client.local import NanWatch
from losswatch.detectors import Engine
from losswatch.detectors.events import EVENTS
from losswatch.detectors.types import Record
from service_helpers import wait_until

NAN = math.nan

# (losses, grad-norms): each a run whose first non-finite value meets a different branch of the rule
CASES = {
    "isolated NaN grad-norm": ([2.0, 1.9, 1.8, 1.7, 1.6, 1.5], [1.0, 1.0, NAN, 1.0, 1.0, 1.0]),
    "three NaN grad-norms in a row": ([2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4], [1.0, 1.0, NAN, NAN, NAN, 1.0, 1.0]),
    "NaN grad-norm with a zero loss": ([2.0, 1.9, 0.0, 1.7], [1.0, 1.0, NAN, 1.0]),
    # a 7B fine-tune's logged lines: 14.68, 14.36, then 8,196 with a NaN grad-norm
    "NaN grad-norm with the loss 558x every loss before": ([14.6804, 14.3597, 8195.7664, 8100.0], [86.9, 90.6, NAN, NAN]),
    "NaN grad-norm after an isolated one, with a loss jump": ([2.0, 1.9, 1.8, 1.7, 1.6, 21.0], [1.0, NAN, 1.0, 1.0, 1.0, NAN]),
    # the same jump right after a skipped step: the weights are the ones that logged 1.6
    "NaN grad-norm after a skipped step, with a loss jump": ([2.0, 1.9, 1.8, 1.7, 1.6, 21.0], [1.0, 1.0, 1.0, 1.0, NAN, NAN]),
    "NaN loss": ([2.0, 1.9, NAN, NAN, 1.7], [1.0, 1.0, 1.0, 1.0, 1.0]),
    "infinite loss from the start": ([math.inf, 2.0], [1.0, 1.0]),
}


def _client_versions(losses, gns):
    """(step, severity, action type) of each version of the client's NaN alert."""
    w = NanWatch("r")
    out = []
    for a in w.observe([{"step": s, "loss": x, "grad_norm": g} for s, (x, g) in enumerate(zip(losses, gns))]):
        if a["resolved_step"] is None:
            out.append((a["last_step"], a["severity"], a["action"]["type"], a["action"].get("to_step")))
    return out


def _detector_versions(losses, gns):
    pytest.importorskip("numpy")
    _, alerts = replay(losses, gns)
    return [(a.last_step, a.severity, a.action.type, a.action.params.get("to_step"))
            for a in alerts if a.kind == "nan" and a.resolved_step is None]


@pytest.mark.parametrize("name", list(CASES))
def test_client_and_detector_give_the_same_verdict_at_the_same_step(name):
    losses, gns = CASES[name]
    client = _client_versions(losses, gns)
    assert client == _detector_versions(losses, gns)
    assert client  # every case raises something


def test_a_nan_grad_norm_beside_a_loss_ten_times_every_loss_before_is_critical_at_once():
    # a loss scaler's overflow leaves the loss where it was; a jump with it is the weights
    assert _client_versions(*CASES["NaN grad-norm with the loss 558x every loss before"]) == [(2, "critical", "rollback", 1)]
    # an isolated fp16 skip first (a warning), then a jump with another: escalated, back to the loss before it
    assert _client_versions(*CASES["NaN grad-norm after an isolated one, with a loss jump"]) == [
        (1, "warning", "none", None), (5, "critical", "rollback", 4)]
    # below the bar it stays the loss scaler's routine skip, and after a skipped step too
    assert _client_versions([2.0, 1.9, 15.0], [1.0, 1.0, NAN]) == [(2, "warning", "none", None)]
    assert _client_versions(*CASES["NaN grad-norm after a skipped step, with a loss jump"]) == [
        (4, "warning", "none", None)]
    # a repeated step (30.0 at step 2 again) is skipped by the detectors, and by the losses the
    # client compares with: 35.0 is 17.5x every loss before it, critical on both sides
    steps, losses, gns = [0, 1, 2, 2, 3], [2.0, 2.0, 2.0, 30.0, 35.0], [1.0, 1.0, 1.0, 1.0, math.inf]
    w = NanWatch("r")
    client = [(a["last_step"], a["severity"], a["action"].get("to_step"))
              for a in w.observe([{"step": s, "loss": x, "grad_norm": g} for s, x, g in zip(steps, losses, gns)])]
    eng = Engine("r")
    detector = [(a.last_step, a.severity, a.action.params.get("to_step"))
                for s, x, g in zip(steps, losses, gns) for a in eng.update(Record(s, x, g)) if a.kind == "nan"]
    assert client == detector == [(3, "critical", 2)]
    # log() judges its record alone (the background's last loss may be many steps old): a
    # warning there, escalated once the records are observed in order
    w = NanWatch("r")
    w.observe([{"step": 0, "loss": 2.0, "grad_norm": 1.0}])
    assert w.check(9, 35.0, NAN, in_log=True)["severity"] == "warning"
    later = w.observe([{"step": s, "loss": 2.0 + s / 10, "grad_norm": 1.0} for s in range(1, 9)]
                      + [{"step": 9, "loss": 35.0, "grad_norm": NAN}])
    assert [(a["severity"], a["action"]["type"], a["action"].get("to_step")) for a in later] == [
        ("critical", "rollback", 8)]


def test_an_isolated_nan_grad_norm_is_a_warning_without_advice_three_are_critical():
    assert _client_versions(*CASES["isolated NaN grad-norm"]) == [(2, "warning", "none", None)]
    assert _client_versions(*CASES["three NaN grad-norms in a row"]) == [
        (2, "warning", "none", None), (4, "critical", "rollback", 1)]


def test_the_client_and_the_rule_import_no_numpy():
    script = ("import sys; import losswatch.client, losswatch.client.local, losswatch.detectors.nan_rule, "
              "losswatch.detectors.events; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def _quiet_monitor(run_id, on_alert):
    """A Monitor whose URL points at nothing: every alert it has was found in the process."""
    return Monitor(run_id=run_id, url=f"http://127.0.0.1:{free_port()}", on_alert=on_alert,
                   timeout=0.5, max_backoff=0.2)


def test_on_alert_is_told_raised_escalated_resolved_for_a_nan_grad_norm_that_repeats():
    got = []
    lock = threading.Lock()

    def on_alert(a):
        with lock:
            got.append((a["event"], a["severity"], a.get("resolved_step")))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = _quiet_monitor("nan-events", on_alert)
        for step in range(5):
            mon.log(step, loss=2.0, grad_norm=1.0)
        mon.log(5, loss=2.0, grad_norm=NAN)  # one: a warning, no advice, the run is not critical
        assert mon.health == "warning" and mon.recommendation is None
        mon.log(6, loss=2.0, grad_norm=NAN)
        mon.log(7, loss=2.0, grad_norm=NAN)  # three in a row: the same alert, now critical
        for step in range(8, 20):
            mon.log(step, loss=2.0, grad_norm=1.0)
        wait_until(lambda: len(got) >= 3, 10, "three on_alert events")
        mon.close(timeout=0.2)
    assert [g[0] for g in got] == ["raised", "escalated", "resolved"]
    assert got[0][1] == "warning" and got[1][1] == "critical" and got[2][2] is not None
    assert set(g[0] for g in got) <= set(EVENTS)
    nan = [a for a in mon.alerts if a["kind"] == "nan"]
    assert len(nan) == 1 and nan[0]["severity"] == "critical"  # one episode, escalated in place


def test_on_alert_is_told_of_an_escalation_at_the_same_severity_and_not_of_a_mere_update():
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = _quiet_monitor("events-same-severity", lambda a: got.append((a["event"], a["action"].get("factor"))))
        cut = {"id": "d", "kind": "divergence", "severity": "critical", "step": 10, "last_step": 12,
               "resolved_step": None, "action": {"type": "scale_lr", "factor": 0.1, "reason": "cut it 10x"}}
        mon._verdicts.apply([cut], cut["action"], "critical")  # as a service reply delivers it
        longer = dict(cut, last_step=20, action=dict(cut["action"], reason="still cut it 10x"))
        mon._verdicts.apply([longer], longer["action"], "critical")  # same advice, new words: no event
        again = dict(cut, last_step=40, action={"type": "scale_lr", "factor": 0.3, "reason": "cut it again"})
        mon._verdicts.apply([again], again["action"], "critical")  # same severity, new advice
        mon._verdicts.apply([dict(again, resolved_step=60)], None, "ok")
        wait_until(lambda: len(got) >= 3, 10, "three on_alert events")
        mon.close(timeout=0.2)
    assert got == [("raised", 0.1), ("escalated", 0.3), ("resolved", 0.3)]
