"""Grid and random search over LR policies, in local processes or on Ray Tune, with trials that
the detectors call lost (NaN, critical divergence) stopped early.

The user's training function (``module:function``) follows the protocol of
``losswatch.service.lr.examples``::

    train(policy: dict, *, steps: int, seed: int, report) -> {"final_loss": ..., ...}

It sets the LR from ``policy`` (an LR schedule declaration), and after each step calls
``report(step, loss=..., lr=..., grad_norm=...)``. ``report`` feeds the losswatch detectors
(a local :class:`~losswatch.detectors.Engine`, the same code the service runs) and streams the
step to the service when a URL is given (``losswatch.client.Monitor``, one run per trial, meta
carrying the trial's ``lr_schedule``); it returns True once the trial is lost, and the function
stops. Why decide locally rather than wait for the service's verdict: the decision is then
immediate and the same with or without a service; the service sees the same alerts.

Search spaces: a list of policy templates (schedule declarations without their LR) times a grid
of LRs, or ``samples`` LRs drawn log-uniformly from [lr_min, lr_max] (seeded). The LR goes into
``max_lr`` for one_cycle and cyclic (cyclic's base_lr defaults to max_lr / 10), else ``lr``.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Any, Callable, Sequence

from losswatch.detectors.schedules import build_schedule

LOST_KINDS = {"nan": ("critical",), "divergence": ("critical",)}


@dataclass
class Trial:
    trial_id: str
    policy: dict[str, Any]
    seed: int = 0


#: TrialResult fields that are None for a run with no finite loss (sent through Ray with a flag:
#: a sentinel value could be a real loss)
_OPTIONAL_LOSSES = ("final_loss", "best_loss")


@dataclass
class TrialResult:
    trial_id: str
    policy: dict[str, Any]
    seed: int
    final_loss: float | None
    best_loss: float | None
    steps_run: int
    steps_budget: int
    stopped_early: bool
    reason: str
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_lr(template: dict[str, Any], lr: float) -> dict[str, Any]:
    """A policy from a template and an LR (see the module docstring for which key)."""
    from losswatch.detectors.schedules import canonical_name

    p = dict(template)
    name = canonical_name(str(p.get("name", "")))
    if name in ("one_cycle", "cyclic"):
        p["max_lr"] = lr
        if name == "cyclic":
            p.setdefault("base_lr", lr / 10)
    else:
        p["lr"] = lr
    return build_schedule(p).to_spec()  # validates; ValueError names what is missing


def grid_trials(templates: Sequence[dict[str, Any]], lrs: Sequence[float], seeds: Sequence[int] = (0,)) -> list[Trial]:
    out = []
    for ti, t in enumerate(templates):
        for lr in lrs:
            for s in seeds:
                out.append(Trial(f"t{ti}-lr{lr:.3g}-s{s}", with_lr(t, float(lr)), s))
    return out


def random_trials(templates: Sequence[dict[str, Any]], samples: int, lr_min: float, lr_max: float,
                  seed: int = 0, seeds: Sequence[int] = (0,)) -> list[Trial]:
    if not 0 < lr_min < lr_max:
        raise ValueError(f"need 0 < lr_min < lr_max, got {lr_min}, {lr_max}")
    rng = random.Random(seed)
    out = []
    for k in range(samples):
        t = templates[rng.randrange(len(templates))]
        lr = math.exp(rng.uniform(math.log(lr_min), math.log(lr_max)))
        for s in seeds:
            out.append(Trial(f"r{k}-lr{lr:.3g}-s{s}", with_lr(t, lr), s))
    return out


def load_function(path: str) -> Callable[..., dict[str, Any]]:
    """``module:function`` -> the function (the current directory is importable, like python -m)."""
    mod, sep, fn = path.partition(":")
    if not sep or not mod or not fn:
        raise ValueError(f"training function must be module:function, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {path}: {e}") from None
    if not callable(f):
        raise ValueError(f"{path} is not callable")
    return f


class Reporter:
    """The ``report`` callable a trial gets: detectors + optional stream; True = stop."""

    def __init__(self, trial: Trial, early_stop: bool, url: str | None, project: str | None,
                 run_prefix: str) -> None:
        from losswatch.detectors import Engine

        self.run_id = f"{run_prefix}-{trial.trial_id}"
        meta = {"lr_schedule": trial.policy, "kind": "tune_trial", "seed": trial.seed}
        self.engine = Engine(self.run_id, meta=meta)
        self.early_stop = early_stop
        self.lost: str | None = None
        self.steps = 0
        self.monitor = None
        if url:
            from losswatch.client import Monitor

            self.monitor = Monitor(run_id=self.run_id, url=url, project=project, meta=meta)

    def __call__(self, step: int, loss: float | None = None, lr: float | None = None,
                 grad_norm: float | None = None, **extra: Any) -> bool:
        from losswatch.detectors.types import Record

        self.steps = step + 1
        if self.monitor is not None:
            self.monitor.log(step, loss=loss, lr=lr, grad_norm=grad_norm)
        rec = Record(step=step, loss=None if loss is None else float(loss), lr=lr,
                     grad_norm=None if grad_norm is None else float(grad_norm))
        for a in self.engine.update(rec):
            if self.lost is None and a.resolved_step is None and a.severity in LOST_KINDS.get(a.kind, ()):
                self.lost = f"{a.kind} ({a.severity}) at step {a.step}: {a.message}"
        return self.early_stop and self.lost is not None

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


def run_trial(fn_path: str, trial: Trial, steps: int, early_stop: bool = True, url: str | None = None,
              project: str | None = None, run_prefix: str = "tune") -> TrialResult:
    """Run one trial in this process (what every worker, local or Ray, executes)."""
    fn = load_function(fn_path)
    rep = Reporter(trial, early_stop, url, project, run_prefix)
    t0 = time.perf_counter()
    try:
        out = fn(trial.policy, steps=steps, seed=trial.seed, report=rep) or {}
    finally:
        rep.close()
    wall = time.perf_counter() - t0
    final, best = _finite_or_none(out.get("final_loss")), _finite_or_none(out.get("best_loss"))
    stopped = early_stop and rep.lost is not None and rep.steps < steps
    return TrialResult(trial.trial_id, trial.policy, trial.seed, final, best, rep.steps, steps, stopped,
                       rep.lost or ("finished" if final is not None else "no finite loss"), wall)


def _finite_or_none(v: Any) -> float | None:
    """A loss the training function returned, as a float; None when absent or not finite."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _run_trial_args(a: tuple) -> TrialResult:
    return run_trial(*a)


def run_local(fn_path: str, trials: Sequence[Trial], steps: int, workers: int = 2, early_stop: bool = True,
              url: str | None = None, project: str | None = None, run_prefix: str = "tune") -> list[TrialResult]:
    """Trials in parallel local processes (spawned: safe with torch, whatever the parent did)."""
    args = [(fn_path, t, steps, early_stop, url, project, run_prefix) for t in trials]
    if workers <= 1:
        return [_run_trial_args(a) for a in args]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        return list(ex.map(_run_trial_args, args))


def run_ray(fn_path: str, trials: Sequence[Trial], steps: int, workers: int = 2, early_stop: bool = True,
            url: str | None = None, project: str | None = None, run_prefix: str = "tune",
            storage_path: str | None = None) -> list[TrialResult]:
    """Trials on Ray Tune (a local cluster of ``workers`` CPUs unless RAY_ADDRESS points to one).
    Each Ray trial runs :func:`run_trial` and reports its result once (``tune.report``)."""
    import ray
    from ray import tune

    started = False
    if not ray.is_initialized():
        env = {"PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        started = True
    by_id = {t.trial_id: t for t in trials}

    def trainable(config: dict[str, Any]) -> None:
        t = by_id[config["trial_id"]]
        r = run_trial(fn_path, t, steps, early_stop, url, project, run_prefix)
        d = r.to_dict()
        d["policy"] = str(d["policy"])  # Ray's result frames want flat scalars: no None either
        for k in _OPTIONAL_LOSSES:
            d[k + "_missing"] = d[k] is None
            d[k] = 0.0 if d[k] is None else d[k]
        tune.report(d)

    import contextlib
    import tempfile

    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"trial_id": tune.grid_search(list(by_id))},
            run_config=tune.RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="losswatch-tune-"),
                                      verbose=0),
        )
        # Ray prints its progress tables on stdout: keep stdout for our results (--format json)
        with contextlib.redirect_stdout(sys.stderr):
            grid = tuner.fit()
        results = []
        for res in grid:
            if res.error:
                raise RuntimeError(f"ray trial failed: {res.error}")
            m = res.metrics
            t = by_id[res.config["trial_id"]]  # metrics["trial_id"] is Ray's own id
            results.append(TrialResult(
                t.trial_id, t.policy, t.seed, *(None if m[k + "_missing"] else m[k] for k in _OPTIONAL_LOSSES),
                int(m["steps_run"]), int(m["steps_budget"]),
                bool(m["stopped_early"]), str(m["reason"]), float(m["wall_time_s"])))
        order = {t.trial_id: i for i, t in enumerate(trials)}
        return sorted(results, key=lambda r: order[r.trial_id])
    finally:
        if started:
            ray.shutdown()


def best_result(results: Sequence[TrialResult]) -> TrialResult | None:
    """Lowest final loss among trials that finished (a stopped trial cannot win)."""
    ok = [r for r in results if not r.stopped_early and r.final_loss is not None]
    return min(ok, key=lambda r: r.final_loss) if ok else None


def summary(results: Sequence[TrialResult]) -> dict[str, Any]:
    run = sum(r.steps_run for r in results)
    budget = sum(r.steps_budget for r in results)
    b = best_result(results)
    return {"trials": len(results), "stopped_early": sum(r.stopped_early for r in results),
            "steps_run": run, "steps_budget": budget, "steps_saved_fraction": 1 - run / budget if budget else 0.0,
            "best": b.to_dict() if b else None}


def record_results(results: Sequence[TrialResult], task: dict[str, Any], db_path: str | None = None) -> int:
    """Store every trial in the policy database (source "tune"); returns how many."""
    from .policy_db import PolicyDB

    db = PolicyDB(db_path)
    try:
        entries = [{**task, "policy": r.policy, "final_metric": r.final_loss, "best_metric": r.best_loss,
                    "steps": r.steps_run, "wall_time_s": r.wall_time_s, "diverged": r.stopped_early or r.final_loss is None,
                    "source": "tune", "notes": f"losswatch tune trial {r.trial_id} seed {r.seed}: {r.reason}"[:4000]}
                   for r in results]
        return len(db.add_many(entries))
    finally:
        db.close()
