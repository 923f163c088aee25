"""One rank of a real torch.distributed job on CPU (gloo), started twice by tests/test_distributed.py.

    python tests/distributed_worker.py SCENARIO RANK WORLD PORT OUT_DIR [URL]

Writes OUT_DIR/rank<RANK>.json with what this rank saw and holds at the end.

Scenarios:
- ``train``: a tiny model in DistributedDataParallel at a far too high LR, each rank on its own
  shard of the data, ``Monitor(act=True)`` on every rank (the same call on each, as a real script
  does; ``WATCHER=1``: a plain Monitor, and ``TorchWatcher(act=True)`` asks for acting); the loop
  stops when the Actor asks it to. ``LR``, ``K`` (sync_every) and ``RANKS`` set the rest.
- ``stops_early``: rank ``EARLY_RANK`` stops calling ``log()`` after step 9 and, with
  ``EARLY_MODE=stuck``, stays alive as a stuck rank would (else its process ends) while the other
  goes on to step 40, which must not hang.
- ``zero_only``: a Monitor with acting on rank 0 alone: it must give up once and act on no rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from losswatch.client import Monitor
from losswatch.client.integrations.torch import TorchWatcher

torch.set_num_threads(1)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def params_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(rank: int, world: int, url: str | None, out: dict) -> None:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    x = torch.randn(512, 8)
    y = x @ torch.randn(8, 1) + 0.05 * torch.randn(512, 1)
    xs, ys = x[rank::world], y[rank::world]  # each rank its own shard
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=float(os.environ.get("LR", "4.0")))
    run_id = os.environ["RUN_ID"]
    acting = dict(act=True, actor_options={"cooldown_steps": 10})
    watcher = os.environ.get("WATCHER") == "1"  # acting asked for by TorchWatcher, not the Monitor
    mon = Monitor(run_id=run_id, url=url, project="ddp-test", flush_interval=0.05,
                  sync_every=int(os.environ.get("K", "5")), sync_timeout=30.0,
                  ranks=os.environ.get("RANKS", "zero"), **({} if watcher else dict(acting, optimizer=opt)))
    watch = TorchWatcher(mon, model, opt, **acting) if watcher else None
    logged, lrs = [], []
    for step in range(120):
        i = (step * 32) % len(xs)
        loss = torch.nn.functional.mse_loss(ddp(xs[i:i + 32]), ys[i:i + 32])
        opt.zero_grad()
        loss.backward()
        gn = float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
        if watch is not None:
            watch.step(step, loss)
        else:
            mon.log(step, loss=float(loss.detach()), grad_norm=gn, lr=opt.param_groups[0]["lr"])
        logged.append(step)
        lrs.append(opt.param_groups[0]["lr"])
        if rank == 0 and step % 5 == 4:
            # a real step takes long enough for the verdict to come back; this tiny one does
            # not: wait for the round trip before the next sync step (rank 1 waits there for us)
            mon.flush(5.0)
        if mon.actor.stop_requested:
            break
        opt.step()
    mon.close()
    out.update(run_id=mon.run_id, logged=logged, lrs=lrs, lr=opt.param_groups[0]["lr"],
               digest=params_digest(model), finite=all(bool(torch.isfinite(p).all()) for p in model.parameters()),
               applied=[{"step": a["step"], "type": a["action"]["type"]} for a in mon._actor_hook.sync.applied],
               decided=[{"step": o.step, "type": o.action["type"], "status": o.status.value}
                        for o in mon.actor.actions],
               stats=mon.stats,
               spool_dir_exists=Path(mon.spool_dir).exists(), stopped=mon.actor.stop_requested)


def stops_early(rank: int, world: int, url: str | None, out: dict, out_dir: Path) -> None:
    early = int(os.environ.get("EARLY_RANK", "0"))
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    mon = Monitor(run_id=os.environ["RUN_ID"], url=url, act=True, optimizer=opt, sync_every=5, sync_timeout=3.0)
    last = 9 if rank == early else 40
    t0 = time.monotonic()
    for step in range(last + 1):
        mon.log(step, loss=1.0 / (step + 1), lr=0.1)
    out.update(last=last, seconds=time.monotonic() - t0, off=mon._actor_hook.sync.off, decides=mon._actor_hook.sync.decides)
    if rank == early and os.environ.get("EARLY_MODE") == "stuck":
        # stuck, not gone: alive (its sockets open) until the other rank is done or a minute has passed
        deadline = time.monotonic() + 60
        while not (out_dir / f"rank{1 - rank}.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    mon.close()


def zero_only(rank: int, world: int, url: str | None, out: dict, out_dir: Path) -> None:
    if rank != 0:  # the pattern ``if rank == 0: mon = Monitor(...)``: no Monitor here
        deadline = time.monotonic() + 60
        while not (out_dir / "rank0.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    mon = Monitor(run_id=os.environ["RUN_ID"], url=url, act=True, optimizer=opt, sync_every=5, sync_timeout=3.0)
    for step in range(21):
        mon.log(step, loss=1.0 / (step + 1), lr=0.1)
    out.update(last=step, off=mon._actor_hook.sync.off, decides=mon._actor_hook.sync.decides,
               refused=mon.actor.apply(20, {"type": "scale_lr", "factor": 0.5}).status.value,
               lr=opt.param_groups[0]["lr"])
    mon.close()


def main() -> None:
    scenario, rank, world, port, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    url = sys.argv[6] if len(sys.argv) > 6 else None
    handler = Collect()
    logging.getLogger("losswatch").addHandler(handler)
    logging.getLogger("losswatch").setLevel(logging.INFO)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out: dict = {"rank": rank}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if scenario == "train":
            train(rank, world, url, out)
        elif scenario == "zero_only":
            zero_only(rank, world, url, out, out_dir)
        else:
            stops_early(rank, world, url, out, out_dir)
    out["log"] = handler.lines
    out["warnings"] = [str(w.message) for w in caught]
    tmp = out_dir / f".rank{rank}.json"
    tmp.write_text(json.dumps(out))
    tmp.rename(out_dir / f"rank{rank}.json")  # whole, for the other rank's wait
    if scenario == "train":
        dist.destroy_process_group()
    else:
        os._exit(0)  # rank 0 of stops_early may still be waited for in the default group


if __name__ == "__main__":
    main()
