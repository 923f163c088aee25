"""What losswatch costs a real GPU training loop (CUDA only: CI has no GPU, so this runs on a lent
GPU machine and its figures are committed).

Each workload's training loop runs under every variant in interleaved rounds (machine noise hits
every variant alike) and is timed as throughput: the wall time of a round's steps between two
``torch.cuda.synchronize()`` calls, divided by the steps. Kernels are asynchronous, so a per-step
timer without a sync would measure only the enqueueing; this measures what a user waits for.

Workloads:

- ``mlp``: 8 x (Linear 1024->1024, GELU), batch 256, AdamW(fused). Small kernels: the GPU waits
  for the Python that launches them, so every microsecond of per-step Python shows (worst case).
- ``gpt``: a 6-layer pre-LN transformer LM (d 512, 8 heads, context 256, vocab 8192), batch 32,
  bf16 autocast, AdamW(fused): bigger kernels (bf16 matmuls, attention, autocast copies), about
  8x the MLP's step time.

Variants:

- ``bare``: no logging;
- ``item``: ``loss.item()`` every step (what many loops do to log: one host sync per step);
- ``watch``: ``TorchWatcher.step(step, loss)``: the global grad-norm (a few small kernels) and
  ``Monitor.log`` of loss, grad-norm and LR tensors, streamed to a real ``losswatch serve``
  (another process, as in production);
- ``watch, sender idle``: the same, with the client's background thread held back until the
  round is over: what the training thread pays alone, without the sender's work (reading the
  tensors, encoding, HTTP) competing for the GIL;
- ``watch, no service``: the same with no URL: the detectors run in this process's background
  thread, which competes with the training thread for the GIL;
- ``clip``: ``torch.nn.utils.clip_grad_norm_``, no logging (what most LLM loops already do);
- ``clip + watch``: clipping, and ``TorchWatcher.step(step, loss, grad_norm=<clip's norm>)``:
  the norm the loop already has is logged, no extra kernel.

Per call: the training thread's cost of each piece (global grad-norm, ``clip_grad_norm_``,
``loss.item()``, ``Monitor.log``), with the GPU queue drained first.

Sync check: every watched variant also runs ``--sync-steps`` steps under
``torch.cuda.set_sync_debug_mode("error")`` (raises on any host-device sync) with the client's
sender kept idle (the mode is process-wide; the sender's one batched read per flush is the sync
it is allowed, off the training thread), then delivers them.

Usage: ``python bench/gpu_overhead.py [--rounds 10] [--seconds 2]`` (writes
bench/results/gpu-overhead.md and gpu-overhead.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

from losswatch.client import Monitor  # noqa: E402
from losswatch.client.integrations.torch import TorchWatcher  # noqa: E402


class GPT(torch.nn.Module):
    def __init__(self, vocab: int = 8192, d: int = 512, heads: int = 8, layers: int = 6, ctx: int = 256):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Parameter(torch.zeros(ctx, d))
        layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                                 batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, vocab)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(ctx))

    def forward(self, idx):
        h = self.tok(idx) + self.pos[: idx.shape[1]]
        h = self.blocks(h, mask=self.mask, is_causal=True)
        return self.head(h)


def workload(name: str, dev: torch.device):
    """(model, optimizer, loss_fn) for one workload; loss_fn() runs the forward pass."""
    torch.manual_seed(0)
    if name == "mlp":
        model = torch.nn.Sequential(*[m for _ in range(8) for m in (torch.nn.Linear(1024, 1024), torch.nn.GELU())])
        model = model.to(dev)
        x = torch.randn(256, 1024, device=dev)

        def loss_fn():
            return model(x).square().mean()
    else:
        model = GPT().to(dev)
        idx = torch.randint(0, 8192, (32, 257), device=dev)

        def loss_fn():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = model(idx[:, :-1])
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    return model, opt, loss_fn


def make_step(variant: str, model, opt, loss_fn, watch):
    params = list(model.parameters())

    def step(i: int) -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if variant == "item":
            loss.item()
        elif variant in ("watch", "watch, sender idle", "watch, no service"):
            watch.step(i, loss)
        elif variant == "clip":
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        elif variant == "clip + watch":
            watch.step(i, loss, grad_norm=torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
    return step


VARIANTS = ("bare", "item", "watch", "watch, sender idle", "watch, no service", "clip", "clip + watch")
WATCHED = ("watch", "watch, sender idle", "watch, no service", "clip + watch")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _monitor(name: str, variant: str, url: str) -> Monitor:
    run_id = f"gpu-{name}-{variant.replace(', ', '-').replace(' + ', '-').replace(' ', '-')}"
    if variant == "watch, no service":
        return Monitor(run_id=run_id, url="")
    if variant == "watch, sender idle":  # reads and sends only between the timed rounds
        return Monitor(run_id=run_id, url=url, flush_interval=3600.0, batch_size=10**9)
    return Monitor(run_id=run_id, url=url)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def per_call_us(fn, calls: int, dev: torch.device) -> float:
    """Median CPU-side cost of one call with the GPU queue drained first (launch cost only)."""
    times = []
    for _ in range(calls):
        sync(dev)
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def micro(model, opt, loss_fn, url: str, dev: torch.device, calls: int = 500) -> dict[str, float]:
    """What each piece costs the training thread per call."""
    from losswatch.client.integrations.torch import global_grad_norm

    loss = loss_fn()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = list(model.parameters())
    gn = global_grad_norm(params)
    out = {"global_grad_norm (TorchWatcher)": per_call_us(lambda: global_grad_norm(params), calls, dev),
           "clip_grad_norm_": per_call_us(lambda: torch.nn.utils.clip_grad_norm_(params, 1e9), calls, dev),
           "loss.item()": per_call_us(lambda: loss.item(), calls, dev)}
    with Monitor(run_id="gpu-micro", url=url, flush_interval=3600.0, batch_size=10**9) as mon:
        counter = iter(range(10**9))
        out["Monitor.log(loss, grad_norm tensors, lr)"] = per_call_us(
            lambda: mon.log(next(counter), loss=loss, grad_norm=gn, lr=1e-4), calls, dev)
    return {k: round(v, 2) for k, v in out.items()}


def measure(name: str, url: str, rounds: int, seconds: float, sync_steps: int, dev: torch.device) -> dict:
    """Interleaved rounds in a rotating order; each variant's overhead is taken against the bare
    loop of the same round (paired: slow drifts of the machine cancel), then the median and
    quartiles over the rounds. A round lasts about ``seconds`` (several of the client's flush
    intervals, so its background work falls inside the window it belongs to), and each watched
    monitor is flushed right after its own round, outside every timed window: one variant's
    background work never lands in another's."""
    model, opt, loss_fn = workload(name, dev)
    monitors = {v: _monitor(name, v, url) for v in WATCHED}
    watches = {v: TorchWatcher(m, model, opt) for v, m in monitors.items()}
    fns = {v: make_step(v, model, opt, loss_fn, watches.get(v)) for v in VARIANTS}
    counters = dict.fromkeys(VARIANTS, 0)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    steps = 20
    for r in range(rounds + 1):  # round 0 warms up kernels, allocator and connections
        k = r % len(VARIANTS)
        for v in VARIANTS[k:] + VARIANTS[:k]:
            fn = fns[v]
            sync(dev)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                fn(counters[v])
                counters[v] += 1
            sync(dev)
            t1, c1 = time.perf_counter(), time.process_time()
            if v in monitors:
                monitors[v].flush(120)
            if r:
                wall[v].append((t1 - t0) / steps * 1e3)
                cpu[v].append((c1 - c0) / steps * 1e3)
        if r == 0:  # warm now: time the bare loop to size the rounds
            sync(dev)
            t0 = time.perf_counter()
            for i in range(steps):
                fns["bare"](i)
            sync(dev)
            steps = max(20, round(seconds * steps / (time.perf_counter() - t0)))
    delivered = {}
    for v, mon in monitors.items():
        ok = mon.flush(120)
        delivered[v] = {"steps": counters[v], "sent": mon.stats["sent"], "flushed": ok}
        mon.close()
    checked = {}
    for v in WATCHED if dev.type == "cuda" else ():  # no host sync in a watched step
        # the sync-debug mode is process-wide: the sender (whose one batched read per flush is
        # the sync it is allowed, off the training thread) stays idle meanwhile
        with Monitor(run_id=f"{monitors[v].run_id}-sync", url=monitors[v].url, flush_interval=3600.0,
                     batch_size=10**9) as mon:
            fn = make_step(v, model, opt, loss_fn, TorchWatcher(mon, model, opt))
            mon.flush(120)  # the metadata the watcher sent: the sender is idle from here on
            sync(dev)
            torch.cuda.set_sync_debug_mode("error")
            try:
                for i in range(sync_steps):
                    fn(i)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert mon.flush(120) and mon.stats["dropped"] == 0, (v, mon.stats)
            assert not mon.url or mon.stats["sent"] == sync_steps, (v, mon.stats)
        checked[v] = sync_steps
    rows = {}
    for v in VARIANTS:
        paired = [100 * (w / b - 1) for w, b in zip(wall[v], wall["bare"])]
        q1, med, q3 = quartiles(paired)
        rows[v] = {"wall_ms_per_step": round(statistics.median(wall[v]), 4),
                   "overhead_pct": round(med, 2), "overhead_iqr_pct": [round(q1, 2), round(q3, 2)],
                   "cpu_ms_per_step": round(statistics.median(cpu[v]), 4)}
    return {"rows": rows, "steps_per_round": steps, "per_call_us": micro(model, opt, loss_fn, url, dev),
            "sync_checked_steps": checked, "delivered": delivered}


def report(res: dict) -> str:
    lines = ["# Losswatch in a GPU training loop", "",
             f"Command: `python bench/gpu_overhead.py --rounds {res['rounds']} --seconds {res['seconds']:g}` on "
             f"{res['device']} (torch {res['torch']}, Python {res['python']}). Throughput between two "
             "`torch.cuda.synchronize()` calls; each round runs every variant (rotating order) and a "
             "variant's overhead is against the bare loop of the same round, median and quartiles over "
             "the rounds; process CPU time per step (training thread and the client's background "
             "thread). Workloads and variants: the module docstring.", ""]
    for name, w in res["workloads"].items():
        lines += [f"## {name} ({w['steps_per_round']} steps per round)", "",
                  "| variant | ms / step | overhead (median of rounds) | quartiles | CPU ms / step |",
                  "|---|---|---|---|---|"]
        for v, r in w["rows"].items():
            lo, hi = r["overhead_iqr_pct"]
            lines.append(f"| {v} | {r['wall_ms_per_step']:.3f} | {r['overhead_pct']:+.1f} % | "
                         f"{lo:+.1f} to {hi:+.1f} % | {r['cpu_ms_per_step']:.3f} |")
        calls = "; ".join(f"{k} {v:.1f} us" for k, v in w["per_call_us"].items())
        lines += ["", f"Per call, CPU side, GPU queue drained first (median): {calls}."]
        checked = ", ".join(f"{v}: {n}" for v, n in w["sync_checked_steps"].items())
        sent = ", ".join(f"{v}: {d['sent']}/{d['steps']}" for v, d in w["delivered"].items()
                         if v != "watch, no service")
        sync_line = (f"No host-device sync in the watched steps checked under "
                     f"`set_sync_debug_mode(\"error\")` ({checked} steps)." if checked
                     else "Sync check not run (not on CUDA).")
        lines += ["", f"{sync_line} Records delivered to the service: {sent}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one variant's round")
    ap.add_argument("--sync-steps", type=int, default=50)
    ap.add_argument("--workloads", default="mlp,gpt")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu-overhead.md"))
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out (no sync check)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run this on a GPU machine)")
        return 2
    from fixtures.service_proc import ServiceProc

    srv = ServiceProc()
    try:
        res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
               "python": sys.version.split()[0], "rounds": args.rounds, "seconds": args.seconds,
               "workloads": {}}
        for name in args.workloads.split(","):
            res["workloads"][name] = measure(name, srv.url, args.rounds, args.seconds, args.sync_steps, dev)
            print(name, json.dumps(res["workloads"][name]["rows"], indent=1), flush=True)
    finally:
        srv.stop()
    out = Path(args.out)
    out.write_text(report(res) + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
