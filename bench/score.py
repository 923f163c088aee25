"""Score losswatch's detectors on the labelled benchmark runs (bench/runs/).

Usage::

    .venv/bin/python bench/score.py            # table on stdout, writes bench/results/detection.md
    .venv/bin/python bench/score.py --json     # the figures as JSON on stdout
    .venv/bin/python bench/score.py --verify-causal 300  # replay every run one step at a time too

Every run is replayed strictly online through :class:`losswatch.detectors.Engine`: records go in
``update_batch`` chunks in step order, and the engine is told nothing but the run metadata a
user (or a framework integration) passes: the declared ``lr_schedule``, the ``optimizer`` and,
for SGD, its ``momentum`` (``--no-optimizer-meta``: the schedule only). Chunking cannot leak the
future into an alert because the Engine contract is "same result as one at a time"; ``--verify-causal N`` checks
exactly that on N runs (default 6; one record at a time through ``update``) and fails loudly if
it does not hold. Alert times are exact either way: the engine returns a snapshot per step at
which an alert was raised, escalated or updated, and the scorer times an episode by the step of
the first snapshot at warning or worse.

Figures, per labelled condition (rules in bench/labels.py):

* recall: runs with the condition on which an accepted alert kind fired (warning or worse; any
  severity for a spike). nan: a nan alert *at* the first non-finite loss (or open then: raised on a non-finite grad-norm before it). divergence: any time,
  lead = deadline - alert step. lr_schedule_bug: an lr_anomaly at or after the bug's onset. spike:
  within 5 steps of a labelled spike.
* precision: of the runs where such an alert fired and no true condition of the run explains it
  (labels.EXPLAINS), how many had the condition. Alerts after a run's first NaN are ignored there.
* false alarms per 10,000 healthy steps: warning/critical episodes on runs labelled healthy
  (look-sick runs included), spikes aside, and with spikes.
* action direction: on runs whose label implies a direction (LR too high/too low, a schedule bug),
  the first warning-or-worse alert that carries an LR-directional action (scale_lr factor < 1,
  rollback, stop, add_warmup = down; scale_lr factor > 1 = up) must point the right way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gen_runs import SGD_MOMENTUM  # noqa: E402
from labels import DETECTED_BY, EXPLAINS, LABELS_PATH, RUNS_DIR, read_run  # noqa: E402

RESULTS = HERE / "results" / "detection.md"
SEV = {"info": 0, "warning": 1, "critical": 2}
SPIKE_TOLERANCE = 5
#: a divergence lost at or after this step had time to build up (see the lead-time breakdown)
LATE_LOSS = 20
CONDITIONS = ("nan", "divergence", "lr_too_high", "lr_too_low", "lr_schedule_bug", "spike_transient", "overfitting")

#: the issue's targets (checked by tests/test_benchmark.py)
TARGETS = {
    "nan_recall": 1.0,
    "divergence_recall": 0.95,
    "lr_too_high_f1": 0.8,
    "lr_too_low_f1": 0.8,
    "false_alarms_per_10k": 1.0,
    "direction_accuracy": 0.9,
}


# --------------------------------------------------------------------------- replay
def replay(run_id: str, cols: dict, meta: dict | None, chunk: int = 64) -> list[dict]:
    """Feed one run to a fresh Engine; returns every alert event as a plain dict.

    ``chunk == 1`` feeds one ``Record`` at a time through ``update`` (the causal reference)."""
    from losswatch.detectors import Batch, Engine
    from losswatch.detectors.types import Record

    eng = Engine(run_id=run_id, meta=meta)
    n = len(cols["step"])
    events: list[dict] = []
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        if chunk == 1:
            changed = eng.update(Record(step=cols["step"][a], loss=cols["loss"][a], grad_norm=cols["grad_norm"][a],
                                        lr=cols["lr"][a], val_loss=cols["val_loss"][a]))
        else:
            changed = eng.update_batch(Batch.from_columns(**{k: v[a:b] for k, v in cols.items()}))
        for al in changed:
            d = al.to_dict()
            d["_at"] = d["last_step"] if d.get("last_step") is not None else d["step"]
            events.append(d)
    return events


def episodes(events: list[dict]) -> dict[str, dict]:
    """Alert episodes by id: kind, first step, first step at warning+ and the action it carried."""
    out: dict[str, dict] = {}
    for e in events:
        ep = out.setdefault(e["id"], {"id": e["id"], "kind": e["kind"], "step": e["step"], "max_sev": "info",
                                      "warn_at": None, "warn_action": None, "message": e["message"],
                                      "first_action": e.get("action"), "resolved_step": None})
        if e.get("resolved_step") is not None:
            ep["resolved_step"] = e["resolved_step"]
        if SEV.get(e["severity"], 0) > SEV[ep["max_sev"]]:
            ep["max_sev"] = e["severity"]
        if SEV.get(e["severity"], 0) >= 1 and ep["warn_at"] is None and e.get("resolved_step") is None:
            ep["warn_at"] = e["_at"]
            ep["warn_action"] = e.get("action")
            ep["message"] = e["message"]
    return out


def direction_of(action: dict | None) -> str:
    """"down", "up" or "none" for an action dict (Action.to_dict())."""
    from losswatch.detectors.types import Action

    return Action.from_dict(action).direction if action else "none"


# --------------------------------------------------------------------------- scoring one run
def score_run(label: dict, eps: dict[str, dict]) -> dict:
    """What fired on one run against its label: detections, unexplained alerts, direction."""
    cond = set(label["conditions"])
    nan_step = label.get("nan_step")
    explained = {k for c in cond for k in EXPLAINS.get(c, ())}
    res: dict = {"detected": {}, "predicted": set(), "false_alarms": [], "direction": None, "warn_episodes": []}
    warn = sorted((e for e in eps.values() if e["warn_at"] is not None), key=lambda e: e["warn_at"])
    res["warn_episodes"] = warn
    for c in CONDITIONS:
        kinds = DETECTED_BY[c]
        if c == "nan":
            # raised on the first NaN loss, or already open then (raised on a non-finite
            # grad-norm the record before: the NaN was seen even earlier)
            hit = [e for e in eps.values() if e["kind"] == "nan" and nan_step is not None and
                   (e["step"] == nan_step or (e["step"] < nan_step and
                                              (e["resolved_step"] is None or e["resolved_step"] >= nan_step)))]
            at = [nan_step] if hit else []
        elif c == "spike_transient":
            spikes = (label["evidence"].get("spike_transient") or {}).get("steps", [])
            at = [e["step"] for e in eps.values() if e["kind"] == "spike"
                  and any(0 <= e["step"] - s <= SPIKE_TOLERANCE for s in spikes)]
        elif c in ("lr_schedule_bug", "overfitting"):
            onset = (label["evidence"].get(c) or {}).get("onset_step", 0)
            at = [e["warn_at"] for e in warn if e["kind"] in kinds and e["warn_at"] >= onset]
        else:
            at = [e["warn_at"] for e in warn if e["kind"] in kinds]
        if c in cond:
            res["detected"][c] = min(at) if at else None
        # a prediction of c that nothing true on this run explains
        if c not in cond:
            for e in eps.values():
                sev_ok = e["warn_at"] is not None or (c == "spike_transient" and e["kind"] == "spike")
                t = e["warn_at"] if e["warn_at"] is not None else e["step"]
                if not sev_ok or e["kind"] not in kinds or e["kind"] in explained:
                    continue
                if nan_step is not None and t > nan_step:
                    continue
                if c == "nan" and e["kind"] != "nan":
                    continue
                res["predicted"].add(c)
    for e in warn:
        if e["kind"] in explained:
            continue
        if nan_step is not None and e["warn_at"] > nan_step:
            continue
        res["false_alarms"].append(e)
    for e in warn:
        d = direction_of(e["warn_action"])
        if d != "none":
            res["direction"] = (d, e["kind"], e["warn_at"])
            break
    return res


def _prf(tp: int, fn: int, fp: int) -> tuple[float | None, float | None, float | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return p, r, f


def _median(xs):
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- whole benchmark
def run_meta(lab: dict, optimizer_meta: bool = True) -> dict | None:
    """The metadata a user (or an integration) passes for this run: its declared LR schedule and,
    unless ``optimizer_meta`` is False, its optimizer and momentum."""
    meta: dict = {}
    if lab.get("declared_schedule"):
        meta["lr_schedule"] = lab["declared_schedule"]
    if optimizer_meta and lab.get("optimizer"):
        meta["optimizer"] = lab["optimizer"]
        if lab["optimizer"] == "sgd":
            meta["momentum"] = SGD_MOMENTUM
    return meta or None


def score(labels: dict, runs_dir: Path = RUNS_DIR, chunk: int = 64, verify_causal: int = 0,
          optimizer_meta: bool = True, variant=None) -> dict:
    """Replay and score every labelled run; returns the figures (see the module docstring).

    ``variant(run_id, label, cols) -> cols`` replays another version of each log (thinned, cut
    to an excerpt: bench/cadence.py) against the same labels."""
    t0 = time.perf_counter()
    per_run = {}
    n_records = 0
    causal_checked = []
    for i, (rid, lab) in enumerate(sorted(labels.items())):
        cols = read_run(runs_dir / f"{rid}.csv")
        if variant is not None:
            cols = variant(rid, lab, cols)
        n_records += len(cols["step"])
        meta = run_meta(lab, optimizer_meta)
        events = replay(rid, cols, meta, chunk=chunk)
        if i < verify_causal:
            ref = replay(rid, cols, meta, chunk=1)
            key = lambda ev: [(e["id"], e["severity"], e["_at"], json.dumps(e["action"], sort_keys=True)) for e in ev]  # noqa: E731
            if _final_state(ref) != _final_state(events):
                raise AssertionError(f"{rid}: alerts differ between chunk={chunk} and one record at a time: "
                                     f"{key(ref)[:5]} vs {key(events)[:5]}")
            causal_checked.append(rid)
        per_run[rid] = score_run(lab, episodes(events))
    elapsed = time.perf_counter() - t0

    by_cond = {}
    for c in CONDITIONS:
        have = [rid for rid, lab in labels.items() if c in lab["conditions"]]
        tp = sum(1 for rid in have if per_run[rid]["detected"].get(c) is not None)
        fn = len(have) - tp
        fp = sum(1 for rid, lab in labels.items() if c not in lab["conditions"] and c in per_run[rid]["predicted"])
        p, r, f = _prf(tp, fn, fp)
        entry = {"runs": len(have), "tp": tp, "fn": fn, "fp": fp, "precision": p, "recall": r, "f1": f,
                 "kinds": list(DETECTED_BY[c])}
        det = [(rid, per_run[rid]["detected"][c]) for rid in have if per_run[rid]["detected"].get(c) is not None]
        if c == "divergence":
            leads = [labels[rid]["lost_step"] - at for rid, at in det]
            entry["median_lead"] = _median(leads)
            entry["positive_lead_fraction"] = (sum(1 for x in leads if x > 0) / len(leads)) if leads else None
            # most ladder runs blow up within a few steps, where no lead is possible; the runs
            # lost later (after a build-up) are where an early warning can exist
            late = [rid for rid in have if labels[rid]["lost_step"] >= LATE_LOSS]
            late_leads = [labels[rid]["lost_step"] - per_run[rid]["detected"][c] for rid in late
                          if per_run[rid]["detected"].get(c) is not None]
            entry["late_runs"] = len(late)
            entry["late_recall"] = len(late_leads) / len(late) if late else None
            entry["late_median_lead"] = _median(late_leads)
        elif c == "nan":
            entry["median_delay"] = _median([at - labels[rid]["nan_step"] for rid, at in det])
        elif c in ("lr_schedule_bug", "overfitting"):
            entry["median_delay"] = _median([at - labels[rid]["evidence"][c]["onset_step"] for rid, at in det])
        elif c == "spike_transient":
            entry["median_delay"] = _median([
                at - min((s for s in labels[rid]["evidence"]["spike_transient"]["steps"] if s <= at), default=at)
                for rid, at in det])
        else:
            entry["median_delay"] = _median([at for _, at in det])
        by_cond[c] = entry

    healthy = [rid for rid, lab in labels.items() if "healthy" in lab["conditions"]]
    h_steps = sum(labels[rid]["n_steps"] for rid in healthy)
    fa_no_spike = sum(1 for rid in healthy for e in per_run[rid]["false_alarms"] if e["kind"] != "spike")
    fa_all = sum(len(per_run[rid]["false_alarms"]) for rid in healthy)
    runs_with_fa = sorted({rid for rid in healthy for e in per_run[rid]["false_alarms"] if e["kind"] != "spike"})

    dir_runs = [rid for rid, lab in labels.items() if lab.get("expected_direction") in ("down", "up")]
    given = [rid for rid in dir_runs if per_run[rid]["direction"] is not None]
    right = [rid for rid in given if per_run[rid]["direction"][0] == labels[rid]["expected_direction"]]
    healthy_scale = [rid for rid in healthy
                     if any((e["warn_action"] or {}).get("type") == "scale_lr" for e in per_run[rid]["warn_episodes"])]

    # per alert kind: how many warning+ episodes fired, and how many a true condition explains
    per_kind: dict[str, dict] = {}
    for rid, res in per_run.items():
        false_ids = {e["id"] for e in res["false_alarms"]}
        nan_step = labels[rid].get("nan_step")
        for e in res["warn_episodes"]:
            if nan_step is not None and e["warn_at"] > nan_step:
                continue
            k = per_kind.setdefault(e["kind"], {"episodes": 0, "explained": 0, "runs": set()})
            k["episodes"] += 1
            k["explained"] += e["id"] not in false_ids
            k["runs"].add(rid)
    per_kind = {k: {"episodes": v["episodes"], "explained": v["explained"], "runs": len(v["runs"]),
                    "precision": v["explained"] / v["episodes"]} for k, v in sorted(per_kind.items())}

    families = sorted({lab["family"] for lab in labels.values()})
    figures = {
        "runs": len(labels),
        "records": n_records,
        "families": families,
        "replay_seconds": round(elapsed, 2),
        "chunk": chunk,
        "optimizer_meta": optimizer_meta,
        "causal_verified_runs": len(causal_checked),
        "conditions": by_cond,
        "alert_kinds": per_kind,
        "healthy_runs": len(healthy),
        "healthy_steps": h_steps,
        "false_alarms": fa_no_spike,
        "false_alarms_with_spikes": fa_all,
        "false_alarms_per_10k": 1e4 * fa_no_spike / h_steps if h_steps else None,
        "false_alarms_with_spikes_per_10k": 1e4 * fa_all / h_steps if h_steps else None,
        "healthy_runs_with_false_alarm": runs_with_fa,
        "healthy_runs_with_scale_lr": healthy_scale,
        "direction_runs": len(dir_runs),
        "direction_given": len(given),
        "direction_right": len(right),
        "direction_accuracy": len(right) / len(given) if given else None,
        "direction_coverage": len(given) / len(dir_runs) if dir_runs else None,
        "per_run": {rid: _run_row(labels[rid], per_run[rid]) for rid in sorted(labels)},
    }
    figures["targets"] = check_targets(figures)
    return figures


def _final_state(events):
    """Alert id -> (kind, highest severity, resolved or not, last action): what chunking must not change."""
    st = {}
    for e in events:
        prev = st.get(e["id"])
        sev = e["severity"] if prev is None or SEV[e["severity"]] >= SEV[prev[1]] else prev[1]
        st[e["id"]] = (e["kind"], sev, e.get("resolved_step"), json.dumps(e["action"], sort_keys=True))
    return st


def _run_row(lab: dict, res: dict) -> dict:
    missed = [c for c, at in res["detected"].items() if at is None]
    return {
        "conditions": lab["conditions"],
        "detected": res["detected"],
        "missed": missed,
        "false_alarms": [{"kind": e["kind"], "step": e["warn_at"], "message": e["message"],
                          "action": e["warn_action"]} for e in res["false_alarms"]],
        "expected_direction": lab.get("expected_direction"),
        "direction": res["direction"][0] if res["direction"] else None,
        "direction_from": list(res["direction"][1:]) if res["direction"] else None,
        "deadline_step": lab.get("deadline_step"),
    }


def check_targets(fig: dict) -> dict:
    """Each target of the issue: (value, target, met)."""
    c = fig["conditions"]
    div = c["divergence"]

    def ge(v, t):
        return v is not None and v >= t

    out = {
        "nan_recall": (c["nan"]["recall"], TARGETS["nan_recall"], ge(c["nan"]["recall"], 1.0)),
        "divergence_recall": (div["recall"], TARGETS["divergence_recall"], ge(div["recall"], TARGETS["divergence_recall"])),
        "divergence_median_lead_positive": (div.get("median_lead"), 0, div.get("median_lead") is not None and div["median_lead"] > 0),
        "lr_too_high_f1": (c["lr_too_high"]["f1"], TARGETS["lr_too_high_f1"], ge(c["lr_too_high"]["f1"], TARGETS["lr_too_high_f1"])),
        "lr_too_low_f1": (c["lr_too_low"]["f1"], TARGETS["lr_too_low_f1"], ge(c["lr_too_low"]["f1"], TARGETS["lr_too_low_f1"])),
        "false_alarms_per_10k": (fig["false_alarms_per_10k"], TARGETS["false_alarms_per_10k"],
                                 fig["false_alarms_per_10k"] is not None and fig["false_alarms_per_10k"] <= TARGETS["false_alarms_per_10k"]),
        "direction_accuracy": (fig["direction_accuracy"], TARGETS["direction_accuracy"], ge(fig["direction_accuracy"], TARGETS["direction_accuracy"])),
    }
    return {k: {"value": v, "target": t, "met": bool(m)} for k, (v, t, m) in out.items()}


# --------------------------------------------------------------------------- report
def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def report(fig: dict) -> str:
    lines = [
        "# Detection benchmark",
        "",
        f"{fig['runs']} real training runs ({', '.join(fig['families'])}), {fig['records']:,} records, replayed online "
        f"through `losswatch.detectors.Engine` in chunks of {fig['chunk']} ({fig['replay_seconds']} s; "
        f"{fig['causal_verified_runs']} runs re-checked one record at a time). "
        "Labels: objective rules in bench/labels.py. Command: `.venv/bin/python bench/score.py`.",
        "",
        "Run metadata the engine is given: the declared `lr_schedule`"
        + (", and the `optimizer` with its `momentum` (what the framework integrations send)"
           if fig.get("optimizer_meta", True) else " only (`--no-optimizer-meta`)") + ".",
        "",
        "| condition | runs | alert kinds that count | precision | recall | F1 | median lead / delay (steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, e in fig["conditions"].items():
        if "median_lead" in e:
            ld = f"lead {_f(e['median_lead'], 1)}"
        else:
            ld = f"delay {_f(e.get('median_delay'), 1)}"
        lines.append(f"| {c} | {e['runs']} | {', '.join(e['kinds'])} | {_f(e['precision'])} | {_f(e['recall'])} | "
                     f"{_f(e['f1'])} | {ld} |")
    dv = fig["conditions"]["divergence"]
    lines += ["", f"Divergence lead time: median {_f(dv.get('median_lead'), 1)} steps over all "
              f"{dv['runs']} lost runs ({_f(dv.get('positive_lead_fraction'))} caught before the lost step); on the "
              f"{dv.get('late_runs')} runs lost at step >= {LATE_LOSS} (a build-up to see): recall "
              f"{_f(dv.get('late_recall'))}, median lead {_f(dv.get('late_median_lead'), 1)} steps."]
    lines += ["", "Per alert kind (warning or worse, before a run's first NaN): episodes, and the share that a "
              "true condition of the run explains (labels.EXPLAINS).", "",
              "| alert kind | episodes | runs | explained | precision |", "|---|---|---|---|---|"]
    for k, e in fig["alert_kinds"].items():
        lines.append(f"| {k} | {e['episodes']} | {e['runs']} | {e['explained']} | {_f(e['precision'])} |")
    lines += [
        "",
        f"False alarms on {fig['healthy_runs']} healthy runs ({fig['healthy_steps']:,} steps; cyclic, one-cycle, warm-up, "
        f"cosine and multistep included): **{_f(fig['false_alarms_per_10k'])} per 10,000 steps** spikes aside "
        f"({fig['false_alarms']} episodes), {_f(fig['false_alarms_with_spikes_per_10k'])} with spikes "
        f"({fig['false_alarms_with_spikes']}). Healthy runs given a scale_lr at warning or worse: "
        f"{len(fig['healthy_runs_with_scale_lr'])}.",
        "",
        f"Action direction: {fig['direction_right']}/{fig['direction_given']} right "
        f"(**{_f(fig['direction_accuracy'])}**) among the {fig['direction_runs']} runs whose label implies a direction; "
        f"{_f(fig['direction_coverage'])} of them got a directional action at all.",
        "",
        "## Targets",
        "",
        "| target | value | required | met |",
        "|---|---|---|---|",
    ]
    for k, t in fig["targets"].items():
        lines.append(f"| {k} | {_f(t['value'])} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Misses, false alarms and wrong directions (per run)", "",
              "| run | conditions | missed | false alarms (kind@step) | direction expected / given |", "|---|---|---|---|---|"]
    for rid, row in fig["per_run"].items():
        wrong_dir = (row["expected_direction"] in ("down", "up") and row["direction"] is not None
                     and row["direction"] != row["expected_direction"])
        if not (row["missed"] or row["false_alarms"] or wrong_dir):
            continue
        fa = ", ".join(f"{a['kind']}@{a['step']}" for a in row["false_alarms"][:4])
        if len(row["false_alarms"]) > 4:
            fa += f" (+{len(row['false_alarms']) - 4})"
        lines.append(f"| {rid} | {', '.join(row['conditions'])} | {', '.join(row['missed'])} | {fa} | "
                     f"{row['expected_direction']} / {row['direction'] or '-'} |")
    return "\n".join(lines) + "\n"


def load_labels(path: Path = LABELS_PATH) -> dict:
    return json.loads(Path(path).read_text())["runs"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--chunk", type=int, default=64, help="records per update_batch call (default 64)")
    ap.add_argument("--verify-causal", type=int, default=6, metavar="N",
                    help="also replay the first N runs one record at a time and require identical alerts (default 6)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/detection.md")
    ap.add_argument("--no-optimizer-meta", action="store_true",
                    help="tell the engine the declared schedule only, not the optimizer (what a user "
                         "who passes no optimizer metadata gets)")
    args = ap.parse_args(argv)
    labels = load_labels()
    fig = score(labels, chunk=args.chunk, verify_causal=args.verify_causal,
                optimizer_meta=not args.no_optimizer_meta)
    md = report(fig)
    if not args.no_optimizer_meta:  # what a user who sends no optimizer gets
        bare = score(labels, chunk=args.chunk, optimizer_meta=False)
        low = bare["conditions"]["lr_too_low"]
        md += (f"\nWithout optimizer metadata (`--no-optimizer-meta`; the `sgd_efficiency` rule needs it): "
               f"lr_too_low precision {_f(low['precision'])}, recall {_f(low['recall'])}, F1 {_f(low['f1'])}; "
               f"false alarms {_f(bare['false_alarms_per_10k'])} per 10,000 healthy steps; action direction "
               f"{bare['direction_right']}/{bare['direction_given']}.\n")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(md)
    if args.json:
        print(json.dumps({k: v for k, v in fig.items()}, indent=1, default=str))
    else:
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
