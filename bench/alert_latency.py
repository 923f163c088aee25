"""From ``Monitor.log()`` to the alert being visible through ``GET /v1/runs/{id}/alerts``.

A real ``losswatch serve`` (memory store) and the real client at its default flush settings.
Each trial is a fresh run that trains at a steady pace (``--rate`` steps/s, 200 by default) on a
healthy, slowly falling loss; at a random moment (so the trigger lands anywhere in the flush
cycle) it logs the trigger, keeps training at the same pace, and a poller thread GETs the alerts
every 2 ms until the alert raised at the trigger step shows. Latency = time seen - time of the
``log()`` call of the step the alert names.

Triggers:
- ``nan``: one NaN loss (the service's NaN detector fires on that step);
- ``divergence``: the loss starts growing 20% per step; the latency is measured from the step
  the service's divergence alert names, i.e. detection delay in steps is not counted here, only
  the pipeline (client buffer, flush, HTTP, ingest + detectors, store, GET).

Usage: ``python bench/alert_latency.py [--trials 30] [--rate 200] [--out bench/results/alert_latency.json]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def percentile(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Poller(threading.Thread):
    """GETs a run's alerts until one of the wanted kind shows; records when it first appeared."""

    def __init__(self, url: str, run_id: str, kind: str) -> None:
        super().__init__(daemon=True)
        p = urlsplit(url)
        self.conn = http.client.HTTPConnection(p.hostname, p.port, timeout=10)
        self.path = f"/v1/runs/{run_id}/alerts"
        self.kind = kind
        self.found: dict | None = None
        self.seen_at: float | None = None
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            self.conn.request("GET", self.path)
            r = self.conn.getresponse()
            body = r.read()
            if r.status == 200:
                for a in json.loads(body)["alerts"]:
                    if a["kind"] == self.kind:
                        self.seen_at = time.perf_counter()
                        self.found = a
                        return
            time.sleep(0.002)


def trial(url: str, kind: str, rate: float, idx: int, rng: random.Random) -> tuple[float, int]:
    from losswatch.client import Monitor

    run_id = f"latency-{kind}-{idx}"
    period = 1.0 / rate
    log_time: dict[int, float] = {}
    poller = None
    with Monitor(run_id=run_id, url=url) as mon:  # default flush_interval and batch_size
        warm = 300 + rng.randrange(int(rate))  # >= 1.5 s of healthy steps, trigger at a random phase
        loss = 2.0
        next_t = time.perf_counter()
        step = 0
        deadline = None
        while True:
            if step < warm:
                loss *= 0.999
                value = loss
            elif kind == "nan" and step == warm:
                value = float("nan")
            elif kind == "nan":
                value = loss
            else:
                loss *= 1.2
                value = loss
            if step == warm:
                poller = Poller(url, run_id, kind)
                poller.start()
                deadline = time.perf_counter() + 10
            log_time[step] = time.perf_counter()
            mon.log(step, loss=value, grad_norm=0.5, lr=1e-3)
            step += 1
            if poller is not None and (poller.seen_at is not None or time.perf_counter() > deadline):
                break
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
        poller.stop = True
        poller.join(5)
    if poller.found is None:
        raise RuntimeError(f"{kind}: no alert within 10 s (run {run_id})")
    return poller.seen_at - log_time[poller.found["step"]], poller.found["step"] - warm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rate", type=float, default=200.0, help="training steps per second")
    ap.add_argument("--out", default=str(REPO / "bench/results/alert_latency.json"))
    args = ap.parse_args()
    from fixtures.service_proc import ServiceProc
    from losswatch.client import Monitor

    rng = random.Random(0)
    srv = ServiceProc()
    result: dict = {"rate_steps_per_s": args.rate, "trials": args.trials,
                    "flush_interval_s": Monitor.__init__.__kwdefaults__["flush_interval"],
                    "batch_size": Monitor.__init__.__kwdefaults__["batch_size"]}
    try:
        for kind in ("nan", "divergence"):
            lat, delay = [], []
            for i in range(args.trials):
                latency, d = trial(srv.url, kind, args.rate, i, rng)
                lat.append(latency)
                delay.append(d)
            result[kind] = {"p50_ms": 1000 * percentile(lat, 0.5), "p99_ms": 1000 * percentile(lat, 0.99),
                            "max_ms": 1000 * max(lat), "min_ms": 1000 * min(lat),
                            "detection_delay_steps_median": percentile(delay, 0.5)}
            print(f"{kind:11s} log() -> visible in GET /alerts: p50 {result[kind]['p50_ms']:.0f} ms, "
                  f"p99 {result[kind]['p99_ms']:.0f} ms, max {result[kind]['max_ms']:.0f} ms "
                  f"({args.trials} trials; alert raised {result[kind]['detection_delay_steps_median']} "
                  f"steps after the trigger, median)", flush=True)
    finally:
        srv.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
