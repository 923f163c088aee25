"""What ``Monitor.log()`` costs the training loop, next to the floor and to TensorBoard.

Per-call latency of one step's logging (3 scalars: loss, grad-norm, LR), timed call by call with
``time.perf_counter_ns`` in the same process and the same run, interleaved in rounds so machine
noise hits every row alike:

- ``list.append`` of a tuple: the floor (what any in-process buffer costs);
- ``Monitor.log`` with Python floats, streaming to a real ``losswatch serve`` (the background thread
  really sends meanwhile);
- ``Monitor.log`` with torch scalar tensors (loss in an autograd graph, grad-norm and LR outside);
- ``Monitor.log`` with no service (the detectors run in the background thread of this process);
- ``torch.utils.tensorboard.SummaryWriter.add_scalar`` x3.

Plus the import cost of ``losswatch.client`` in a fresh interpreter (``python -X importtime``,
the cumulative microseconds of the ``losswatch.client`` line, median of several runs).

With a CUDA device, a last row logs CUDA tensors under ``torch.cuda.set_sync_debug_mode("error")``
(which raises on any host-device sync) while a long kernel queue is pending.

Usage: ``python bench/client_overhead.py [--calls 100000] [--rounds 5] [--out bench/results/client_overhead.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def percentiles(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    n = len(s)
    return {"median_us": s[n // 2] / 1000, "p99_us": s[int(n * 0.99)] / 1000,
            "p999_us": s[int(n * 0.999)] / 1000, "mean_us": sum(s) / n / 1000, "calls": n}


def timed(fn, calls: int) -> list[int]:
    ns = time.perf_counter_ns
    out = [0] * calls
    for i in range(calls):
        t0 = ns()
        fn(i)
        out[i] = ns() - t0
    return out


def import_time_us(runs: int = 15) -> dict[str, float]:
    vals = []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import losswatch.client"],
                           capture_output=True, text=True, cwd=str(REPO))
        for line in p.stderr.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) == 3 and parts[2] == "losswatch.client":
                vals.append(int(parts[1]))
    heavy = subprocess.run([sys.executable, "-c", "import sys, losswatch.client; "
                            "print(sorted(m for m in ('torch','numpy','fastapi','losswatch.detectors.engine') if m in sys.modules))"],
                           capture_output=True, text=True, cwd=str(REPO)).stdout.strip()
    return {"median_ms": statistics.median(vals) / 1000, "min_ms": min(vals) / 1000,
            "runs": len(vals), "heavy_modules_loaded": heavy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="calls per row per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench/results/client_overhead.json"))
    ap.add_argument("--no-service", action="store_true", help="skip the rows that need losswatch serve")
    args = ap.parse_args()

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from losswatch.client import Monitor

    torch.set_num_threads(1)
    srv = None
    if not args.no_service:
        from fixtures.service_proc import ServiceProc
        srv = ServiceProc()
    tb_dir = tempfile.mkdtemp(prefix="lw-tb-")
    rows: dict[str, list[int]] = {}
    try:
        floor: list = []
        writer = SummaryWriter(tb_dir)
        mons = {}
        if srv is not None:
            mons["float"] = Monitor(run_id="bench-float", url=srv.url)
            mons["tensor"] = Monitor(run_id="bench-tensor", url=srv.url)
        mons["local"] = Monitor(run_id="bench-local", url="")
        w = torch.tensor(1.0, requires_grad=True)
        loss_t = w * 0.5  # in a graph, like a real loss
        gn_t = torch.tensor(0.9)
        lr_t = torch.tensor(1e-3)
        step = {"i": 0}

        def nxt():
            step["i"] += 1
            return step["i"]

        cases = {
            "list.append (floor)": lambda i: floor.append((i, 0.5, 0.9, 1e-3)),
            "SummaryWriter.add_scalar x3": lambda i: (writer.add_scalar("loss", 0.5, i),
                                                     writer.add_scalar("grad_norm", 0.9, i),
                                                     writer.add_scalar("lr", 1e-3, i)),
            "Monitor.log, no service (detectors in-process)":
                lambda i: mons["local"].log(nxt(), loss=0.5, grad_norm=0.9, lr=1e-3),
        }
        if srv is not None:
            cases["Monitor.log, floats, streaming"] = \
                lambda i: mons["float"].log(nxt(), loss=0.5, grad_norm=0.9, lr=1e-3)
            cases["Monitor.log, torch scalar tensors, streaming"] = \
                lambda i: mons["tensor"].log(nxt(), loss=loss_t, grad_norm=gn_t, lr=lr_t)
        for fn in cases.values():  # warm up
            timed(fn, 2000)
        for r in range(args.rounds):
            for name, fn in cases.items():
                rows.setdefault(name, []).extend(timed(fn, args.calls))
                if name == "list.append (floor)":
                    floor.clear()
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        delivered = {}
        for k, m in mons.items():
            m.flush(60)
            delivered[k] = m.stats
            m.close()
        writer.close()

        loop = training_loop_rows(torch, Monitor, SummaryWriter, srv.url if srv else "", tb_dir,
                                  rounds=args.rounds)

        cuda = None
        if torch.cuda.is_available():
            cuda = cuda_row(torch, Monitor, srv.url if srv else "", args.calls)
    finally:
        if srv is not None:
            srv.stop()

    result = {
        "python": sys.version.split()[0], "torch": torch.__version__,
        "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "calls_per_row": args.calls * args.rounds,
        "rows": {k: percentiles(v) for k, v in rows.items()},
        "timer_overhead": percentiles(timed(lambda i: None, 100_000)),
        "import_losswatch_client": import_time_us(),
        "delivered": delivered,
        "training_loop": loop,
        "cuda": cuda,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'':50s} {'median us':>10s} {'p99 us':>10s} {'p99.9 us':>10s}")
    for k, v in result["rows"].items():
        print(f"{k:50s} {v['median_us']:10.2f} {v['p99_us']:10.2f} {v['p999_us']:10.2f}")
    t = result["timer_overhead"]
    print(f"{'(timer alone)':50s} {t['median_us']:10.2f} {t['p99_us']:10.2f} {t['p999_us']:10.2f}")
    imp = result["import_losswatch_client"]
    print(f"load average {result['load_average_at_end']}")
    print(f"import losswatch.client: {imp['median_ms']:.1f} ms median, {imp['min_ms']:.1f} ms best of {imp['runs']} fresh interpreters; "
          f"heavy modules loaded: {imp['heavy_modules_loaded']}")
    print("delivered: " + ", ".join(f"{k}: sent {v['sent']} in {v['posts']} POSTs" for k, v in delivered.items()))
    print("in a real training loop (tiny torch MLP on CPU, per step):")
    base = loop["no logging"]
    for k, v in loop.items():
        print(f"  {k:40s} wall median {v['median_us']:7.1f} us ({v['median_us'] - base['median_us']:+6.1f}), "
              f"process CPU {v['cpu_us_per_step']:7.1f} us ({v['cpu_us_per_step'] - base['cpu_us_per_step']:+6.1f})")
    if cuda:
        print(f"CUDA tensors: {cuda}")
    return 0


def training_loop_rows(torch, Monitor, SummaryWriter, url: str, tb_dir: str, rounds: int,
                       steps_per_round: int = 1000) -> dict:
    """Whole-step time of a real (tiny) training loop with each way of logging 3 scalars.

    This is the number that matters to a user: it includes what call-by-call timing cannot see,
    such as the garbage collections that buffered tensor references make more frequent.
    """
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    y = torch.randn(256, 1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    writer = SummaryWriter(tb_dir + "/loop")
    mon_f = Monitor(run_id="bench-loop-float", url=url)
    mon_t = Monitor(run_id="bench-loop-tensor", url=url)
    counter = {"step": 0}

    def none(loss, gn, lr):
        pass

    def mon_floats(loss, gn, lr):
        mon_f.log(counter["step"], loss=loss.item(), grad_norm=gn.item(), lr=lr)

    def mon_tensors(loss, gn, lr):
        mon_t.log(counter["step"], loss=loss, grad_norm=gn, lr=lr)

    def tensorboard(loss, gn, lr):
        s = counter["step"]
        writer.add_scalar("loss", loss.item(), s)
        writer.add_scalar("grad_norm", gn.item(), s)
        writer.add_scalar("lr", lr, s)

    variants = {"no logging": none, "Monitor.log floats (.item())": mon_floats,
                "Monitor.log tensors": mon_tensors, "SummaryWriter.add_scalar x3 (.item())": tensorboard}
    times: dict[str, list[int]] = {k: [] for k in variants}
    cpu: dict[str, int] = {k: 0 for k in variants}
    flushers = {"Monitor.log floats (.item())": mon_f, "Monitor.log tensors": mon_t}
    ns = time.perf_counter_ns
    for r in range(rounds + 1):
        for name, fn in variants.items():
            c0 = time.process_time_ns()
            for i in range(steps_per_round):
                idx = torch.randint(0, 256, (32,))
                t0 = ns()
                loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
                opt.step()
                fn(loss, gn, 1e-3)
                times[name].append(ns() - t0)
                counter["step"] += 1
            if name in flushers:  # the background thread's work for these steps, counted here
                flushers[name].flush(60)
            if name.startswith("SummaryWriter"):
                writer.flush()
            if r:  # the first round warms up
                cpu[name] += time.process_time_ns() - c0
    out = {}
    for k, v in times.items():
        out[k] = percentiles(v[steps_per_round:])
        # CPU time of the whole process (training + background thread) per step: unlike wall
        # time, barely affected by other processes competing for the cores
        out[k]["cpu_us_per_step"] = cpu[k] / (rounds * steps_per_round) / 1000
    return out


def cuda_row(torch, Monitor, url: str, calls: int) -> dict:
    """Log CUDA scalar tensors while the GPU is busy; any host-device sync in log() raises."""
    dev = torch.device("cuda")
    a = torch.randn(4096, 4096, device=dev)
    w = torch.tensor(1.0, device=dev, requires_grad=True)
    # the sync-debug mode is process-wide: the sender, whose batched tensor read is a sync (off
    # the training thread), stays idle until the loop is over (no time or count trigger)
    mon = Monitor(run_id="bench-cuda", url=url or "", flush_interval=3600.0, batch_size=10**9,
                  max_memory_records=10**6)
    samples = []
    ns = time.perf_counter_ns
    torch.cuda.synchronize()
    for i in range(min(calls, 20_000)):
        if i % 200 == 0:
            for _ in range(20):  # queue ~ms of GPU work: a sync in log() would wait for it
                a = a @ a
                a = a / a.norm()
        loss = w * a[0, 0]
        gn = a[0, 1].abs()
        torch.cuda.set_sync_debug_mode("error")
        try:
            t0 = ns()
            mon.log(i, loss=loss, grad_norm=gn, lr=1e-3)
            samples.append(ns() - t0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    mon.flush(60)
    stats = mon.stats
    mon.close()
    out = percentiles(samples)
    out.update(device=torch.cuda.get_device_name(0), syncs_in_log=0, sent=stats["sent"])
    return out


if __name__ == "__main__":
    sys.exit(main())
