"""The schedule monitor on LR streams produced by real torch schedulers, stepped right and wrong."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tls

from detector_helpers import in_batches, one_at_a_time
from losswatch.detectors.schedule_monitor import ScheduleMonitor


def _lrs(make_sched, n, lr=0.1, every=1, never=False):
    """The LR a loop sees at each of n optimizer steps, calling scheduler.step() every `every`
    optimizer steps (or never)."""
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=lr, momentum=0.9)
    sched = make_sched(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if not never and (s + 1) % every == 0:
                sched.step()
    return out


def _feed(mon, lrs, start=0):
    changes = []
    for s, lr in enumerate(lrs, start):
        mon.observe(s, lr)
        changes += mon.drain_changes()
    return changes


def test_correctly_stepped_schedules_raise_nothing():
    cases = [
        ({"name": "cosine", "lr": 0.1, "total_steps": 300}, lambda o: tls.CosineAnnealingLR(o, 300)),
        ({"name": "one_cycle", "max_lr": 0.1, "total_steps": 300}, lambda o: tls.OneCycleLR(o, 0.1, total_steps=300)),
        ({"name": "cyclic", "base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 20},
         lambda o: tls.CyclicLR(o, 1e-3, 0.1, 20)),
        ({"name": "multistep", "lr": 0.1, "milestones": [50, 120]}, lambda o: tls.MultiStepLR(o, [50, 120])),
    ]
    for spec, make in cases:
        mon = ScheduleMonitor(schedule=spec)
        assert _feed(mon, _lrs(make, 300)) == [], spec["name"]


def test_logging_after_scheduler_step_is_not_a_mismatch():
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 200), 201)
    mon = ScheduleMonitor(schedule={"name": "cosine", "lr": 0.1, "total_steps": 200})
    assert _feed(mon, lrs[1:]) == []  # off by one step: the loop logged after scheduler.step()


def test_per_epoch_stepping_is_explained_once():
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 500), 500, every=25)  # declared per step, stepped per epoch
    mon = ScheduleMonitor(schedule={"name": "cosine", "lr": 0.1, "total_steps": 500})
    changes = _feed(mon, lrs)
    opened = [a for a in changes if a.resolved_step is None]
    assert len({a.id for a in changes}) == 1, "one alert per episode"
    assert opened[-1].kind == "lr_anomaly" and opened[-1].evidence["diagnosis"] == "per_epoch"
    assert "once every 25 steps" in opened[-1].message


def test_per_epoch_step_decay_declared_in_steps():
    # StepLR(step_size=3) stepped per epoch of 10 steps, declared as if stepped per step
    lrs = _lrs(lambda o: tls.StepLR(o, 3, 0.5), 200, every=10)
    mon = ScheduleMonitor(schedule={"name": "step", "lr": 0.1, "step_size": 3, "gamma": 0.5})
    changes = _feed(mon, lrs)
    assert changes and changes[-1].evidence["diagnosis"] == "per_epoch"
    assert "every 10 steps" in changes[-1].message


def test_stepped_per_step_when_declared_per_epoch():
    lrs = _lrs(lambda o: tls.StepLR(o, 30, 0.1), 200)
    mon = ScheduleMonitor(schedule={"name": "step", "lr": 0.1, "step_size": 30, "interval": "epoch",
                                    "steps_per_epoch": 10})
    changes = _feed(mon, lrs)
    assert changes[-1].evidence["diagnosis"] == "per_step"


def test_missing_warmup_recommends_adding_it():
    # declared: HF linear warmup 100 then cosine; run: plain CosineAnnealingLR from full LR
    spec = {"name": "warmup_cosine", "lr": 0.1, "warmup_steps": 100, "total_steps": 1000}
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 1000), 150)
    changes = _feed(ScheduleMonitor(schedule=spec), lrs)
    assert changes[0].evidence["diagnosis"] == "warmup_missing"
    assert changes[0].action.type == "add_warmup" and changes[0].action.params["steps"] == 100
    assert changes[0].step < 10  # caught within the patience, not at the end of warmup


def test_stuck_lr_when_scheduler_is_never_stepped():
    lrs = _lrs(lambda o: tls.ExponentialLR(o, 0.98), 100, never=True)
    changes = _feed(ScheduleMonitor(schedule={"name": "exponential", "lr": 0.1, "gamma": 0.98}), lrs)
    assert len(changes) == 1 and changes[0].evidence["diagnosis"] == "stuck"
    assert "scheduler.step()" in changes[0].message


def test_wrong_peak_gives_the_factor_back():
    # the optimizer was built with 3x the declared LR
    lrs = _lrs(lambda o: tls.OneCycleLR(o, 0.3, total_steps=400), 400, lr=0.3)
    changes = _feed(ScheduleMonitor(schedule={"name": "one_cycle", "max_lr": 0.1, "total_steps": 400}), lrs)
    assert len({a.id for a in changes}) == 1
    a = changes[0]
    assert a.evidence["diagnosis"] == "wrong_peak" and a.action.type == "scale_lr"
    assert a.action.params["factor"] == pytest.approx(1 / 3, rel=1e-3)


def test_episode_resolves_and_rearms():
    spec = {"name": "constant", "lr": 0.1}
    lrs = [0.1] * 20 + [0.5] * 10 + [0.1] * 30 + [0.5] * 10
    changes = _feed(ScheduleMonitor(schedule=spec), lrs)
    ids = [a.id for a in changes]
    assert len(set(ids)) == 2  # two episodes
    assert [a.resolved_step is not None for a in changes] == [False, True, False]
    assert changes[1].resolved_step == 49  # 20 matching steps after step 30


def test_short_glitch_below_patience_is_ignored():
    lrs = [0.1] * 20 + [0.5] * 4 + [0.1] * 20
    assert _feed(ScheduleMonitor(schedule={"name": "constant", "lr": 0.1}), lrs) == []


def test_nan_and_missing_lr_are_not_mismatches():
    mon = ScheduleMonitor(schedule={"name": "constant", "lr": 0.1})
    assert _feed(mon, [float("nan")] * 10 + [float("inf")] * 10 + [0.1] * 5) == []


def test_unreadable_declaration_gives_one_info_alert():
    mon = ScheduleMonitor.from_meta({"lr_schedule": {"name": "cosine", "lr": 0.1}})
    changes = _feed(mon, [0.1] * 30)
    assert len(changes) == 1 and changes[0].severity == "info"
    assert "missing parameter 'total_steps'" in changes[0].message
    assert ScheduleMonitor.from_meta({"project": "x"}) is None


def test_state_round_trips_mid_episode():
    spec = {"name": "cosine", "lr": 0.1, "total_steps": 500}
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 500), 500, every=25)
    a = ScheduleMonitor(schedule=spec)
    _feed(a, lrs[:200])
    st = json.loads(json.dumps(a.to_state()))
    b = ScheduleMonitor(**st["params"])
    b.run_id = a.run_id
    b.load_state(st)
    assert _feed(a, lrs[200:], 200) == _feed(b, lrs[200:], 200)
    assert a.get_state() == b.get_state()


def test_runs_inside_the_engine_one_record_and_batch_paths_agree():
    from losswatch.detectors import Engine
    from losswatch.detectors.types import Record

    spec = {"name": "warmup_cosine", "lr": 0.1, "warmup_steps": 50, "total_steps": 400}
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 400), 400)  # warmup forgotten
    recs = [Record(step=s, loss=2.0 / (1 + 0.01 * s), lr=lr) for s, lr in enumerate(lrs)]
    meta = {"lr_schedule": spec}
    got_one = [a for a in one_at_a_time(recs, "r1", meta)[1] if a.detector == "schedule_monitor"]
    got_batch = [a for a in in_batches(recs, 64, "r1", meta)[1] if a.detector == "schedule_monitor"]
    assert [a.to_dict() for a in got_one] == [a.to_dict() for a in got_batch]
    assert got_one[0].kind == "lr_anomaly" and got_one[0].evidence["diagnosis"] == "warmup_missing"
    assert got_one[0].id == "r1:lr_anomaly.schedule_monitor:4"
    # the state survives Engine.to_bytes mid-run
    half = Engine(run_id="r1", meta={"lr_schedule": spec})
    for r in recs[:200]:
        half.update(r)
    resumed = Engine.from_bytes(half.to_bytes())
    assert [a.to_dict() for r in recs[200:] for a in resumed.update(r)] == \
           [a.to_dict() for r in recs[200:] for a in half.update(r)]


def test_engine_without_a_declared_schedule_has_no_monitor():
    from losswatch.detectors import Engine
    from losswatch.detectors.types import Record

    eng = Engine(run_id="r2", meta={"project": "p"})
    out = [a for s in range(100) for a in eng.update(Record(step=s, loss=1.0, lr=0.1 * (s % 2 + 1)))]
    assert not [a for a in out if a.detector == "schedule_monitor"]


def test_service_raises_the_schedule_alert_over_http(service_proc):
    """PUT the run's lr_schedule, POST steps stepped per epoch: the service's alert explains it."""
    import httpx

    spec = {"name": "cosine", "lr": 0.1, "total_steps": 400}
    lrs = _lrs(lambda o: tls.CosineAnnealingLR(o, 400), 400, every=20)
    with httpx.Client(base_url=service_proc, timeout=10) as c:
        assert c.put("/v1/runs/sched-http", json={"lr_schedule": spec}).status_code in (200, 201)
        recs = [{"step": s, "loss": 2.0 / (1 + 0.01 * s), "lr": lr} for s, lr in enumerate(lrs)]
        for k in range(0, 400, 100):
            assert c.post("/v1/runs/sched-http/steps", json={"records": recs[k:k + 100]}).status_code == 200
        alerts = [a for a in c.get("/v1/runs/sched-http/alerts").json()["alerts"] if a["detector"] == "schedule_monitor"]
    assert len(alerts) == 1 and alerts[0]["kind"] == "lr_anomaly"
    assert alerts[0]["evidence"]["diagnosis"] == "per_epoch" and "once every 20 steps" in alerts[0]["message"]


def test_hugging_face_trainer_logs_match_their_declared_schedule(tmp_path):
    """A real (tiny) HF Trainer run: its logged learning_rate follows warmup_cosine as declared;
    declared with half the LR, the monitor reports the wrong peak and the factor."""
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=64,
                                                                 n_positions=32))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 256

        def __getitem__(self, i):
            x = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": x, "labels": x}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=40, per_device_train_batch_size=8, learning_rate=1e-3,
        lr_scheduler_type="cosine", warmup_steps=4, logging_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens())
    trainer.train()
    logged = [(e["step"], e["learning_rate"]) for e in trainer.state.log_history if "learning_rate" in e]
    assert len(logged) == 40
    declared = {"name": "warmup_cosine", "lr": 1e-3, "warmup_steps": 4, "total_steps": 40}
    ok = ScheduleMonitor(schedule=declared)
    assert [a for s, lr in logged for a in (ok.observe(s, lr), ok.drain_changes())[1]] == []
    wrong = ScheduleMonitor(schedule={**declared, "lr": 5e-4})
    alerts = [a for s, lr in logged for a in (wrong.observe(s, lr), wrong.drain_changes())[1]]
    assert len({a.id for a in alerts}) == 1 and alerts[0].evidence["diagnosis"] == "wrong_peak"
    assert alerts[0].action.params["factor"] == pytest.approx(0.5, rel=1e-3)
