"""The run page's load time for a long run: from navigation to the first full render.

A real ``losswatch serve`` (memory store) holds one run of ``--steps`` steps (1,000,000 by
default: a falling loss with noise, a divergence near the end and NaNs at the last steps, so
the page draws alert markers and NaN marks too). Then:

* browser: headless chromium (tests/fixtures/chromium_proc.py) opens /runs/{run_id} ``--repeats``
  times; the figure is the page's own ``losswatch:ready`` performance mark (milliseconds from
  the start of navigation to the plots, alerts and actions drawn: HTML, scripts, the three API
  calls, the SVG);
* API: the three calls the page makes on load, timed alone with one keep-alive connection
  (the steps call downsamples the series to ``max_points`` on the server);
* in-process: the two parts of the steps call that grow with the run, on the same run held in a
  MemoryStore: reading the series back (``read_series``) and ``downsample``.

Usage: ``python bench/page_load.py [--steps 1000000] [--repeats 7] [--out bench/results/page.md]``
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.chromium_proc import Chromium  # noqa: E402
from fixtures.service_proc import ServiceProc  # noqa: E402

RUN_ID = "page-load-1m"
BATCH = 10_000


def records(n: int, lo: int, hi: int) -> list[dict]:
    rng = random.Random(lo)
    out = []
    turn = int(n * 0.97)
    for s in range(lo, hi):
        if s < turn:
            loss = 2.0 * math.exp(-s / (n / 5)) + 0.3 + rng.gauss(0, 0.01)
        elif s < n - 1000:
            loss = (2.0 * math.exp(-turn / (n / 5)) + 0.3) * 1.0002 ** (s - turn)
        else:
            loss = float("nan")
        out.append({"step": s, "loss": loss, "grad_norm": abs(1.0 + rng.gauss(0, 0.05)), "lr": 3e-4})
    return out


def encode(recs: list[dict]) -> bytes:
    # orjson writes a NaN as null: the wire form of a NaN is the string "NaN"
    return orjson.dumps({"records": [{k: ("NaN" if v != v else v) for k, v in r.items()} for r in recs]})


def ingest(port: int, n: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    for lo in range(0, n, BATCH):
        body = encode(records(n, lo, min(n, lo + BATCH)))
        conn.request("POST", f"/v1/runs/{RUN_ID}/steps", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    conn.close()
    return time.perf_counter() - t0


def api_times(port: int, max_points: int, repeats: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    paths = {"run": f"/v1/runs/{RUN_ID}", "steps": f"/v1/runs/{RUN_ID}/steps?max_points={max_points}",
             "alerts": f"/v1/runs/{RUN_ID}/alerts"}
    out = {}
    for name, path in paths.items():
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            samples.append(time.perf_counter() - t0)
            assert r.status == 200, (path, r.status)
            if name == "steps":
                doc = orjson.loads(body)
                out["steps_count"] = doc["count"]
                out["steps_total"] = doc["total"]
        out[name] = statistics.median(samples) * 1000
    conn.close()
    return out


def in_process_times(n: int, max_points: int, repeats: int) -> dict[str, float]:
    import asyncio

    from losswatch.service.downsample import downsample
    from losswatch.service.ingest import parse_steps
    from losswatch.service.pipeline import IngestPipeline
    from losswatch.service.stores.memory import MemoryStore

    async def run() -> dict[str, float]:
        store = MemoryStore()
        writer = IngestPipeline(store)
        for lo in range(0, n, BATCH):
            cols, _ = parse_steps(encode(records(n, lo, min(n, lo + BATCH))), BATCH)
            await writer.ingest(RUN_ID, cols)
        read, down = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cols = await store.read_series(RUN_ID)
            t1 = time.perf_counter()
            downsample(cols, max_points)
            t2 = time.perf_counter()
            read.append(t1 - t0)
            down.append(t2 - t1)
        return {"read_series": statistics.median(read) * 1000, "downsample": statistics.median(down) * 1000}

    return asyncio.run(run())


def browser_times(url: str, repeats: int) -> tuple[list[float], float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        browser = Chromium(Path(tmp) / "profile")
        try:
            samples, steps_call = [], []
            for _ in range(repeats):
                browser.goto(f"{url}/runs/{RUN_ID}")
                browser.wait_for("document.body.dataset.state === 'ready'", timeout=60)
                samples.append(browser.js("performance.getEntriesByName('losswatch:ready')[0].startTime"))
                steps_call.append(browser.js("performance.getEntriesByType('resource')"
                                             ".find(e => e.name.includes('/steps?')).duration"))
                max_points = browser.js("new URL(performance.getEntriesByType('resource')"
                                        ".map(e => e.name).find(n => n.includes('/steps?'))).searchParams.get('max_points')")
                alerts = browser.js("document.querySelectorAll('svg.panel[data-panel=\"loss\"] .alert-mark').length")
            return samples, statistics.median(steps_call), int(max_points), alerts
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    svc = ServiceProc(timeout=60)
    try:
        t_ingest = ingest(svc.port, args.steps)
        print(f"ingested {args.steps:,} steps in {t_ingest:.1f} s", flush=True)
        loads, steps_in_page, max_points, alerts = browser_times(svc.url, args.repeats)
        api = api_times(svc.port, max_points, args.repeats)
    finally:
        svc.stop()
    parts = in_process_times(args.steps, max_points, args.repeats)

    load_avg = os.getloadavg()[0]
    lines = [
        "# Run page load time",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {load_avg:.1f}), Debian chromium headless, "
        f"`losswatch serve` with the memory store, one worker.",
        "",
        f"Command: `.venv/bin/python bench/page_load.py --steps {args.steps} --repeats {args.repeats}"
        + (f" --out {args.out}`" if args.out else "`"),
        "",
        f"One run of {args.steps:,} steps (a divergence near the end, NaNs at the last 1,000 steps; "
        f"{alerts} alert markers drawn). The page asked for max_points={max_points} and drew "
        f"{api['steps_count']:,} of {api['steps_total']:,} points.",
        "",
        "| what | median ms | max ms |",
        "|---|---:|---:|",
        f"| browser: navigation start to the run page drawn (`losswatch:ready` mark), {args.repeats} loads "
        f"| {statistics.median(loads):.0f} | {max(loads):.0f} |",
        f"| API alone: GET /v1/runs/{{id}} | {api['run']:.1f} | |",
        f"| API alone: GET /v1/runs/{{id}}/steps?max_points={max_points} | {api['steps']:.1f} | |",
        f"| API alone: GET /v1/runs/{{id}}/alerts | {api['alerts']:.1f} | |",
        f"| in-process: MemoryStore.read_series (all {args.steps:,} steps) | {parts['read_series']:.1f} | |",
        f"| in-process: downsample to max_points={max_points} | {parts['downsample']:.1f} | |",
        "",
        f"Goal: under 500 ms for the page of a 1,000,000-step run. This run of {args.steps:,} steps: median "
        f"{statistics.median(loads):.0f} ms ({'under' if statistics.median(loads) < 500 else 'over'} 500 ms). "
        f"The steps call takes {steps_in_page:.0f} ms of it (median, as "
        f"the page saw it): "
        f"the store hands back the whole series as Python lists ({parts['read_series']:.0f} ms) and "
        f"the downsampling turns them into arrays and keeps {api['steps_count']:,} rows "
        f"({parts['downsample']:.0f} ms), on every request; the HTML, the scripts, the other two calls "
        f"and the drawing are the rest. Loads after the first revalidate the page's own files "
        f"(Cache-Control: no-cache); the API calls are never cached.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
