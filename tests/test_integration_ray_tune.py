"""Ray Tune + LosswatchTuneCallback against a real service: one local cluster, two trials of a
tiny torch regression (a sane LR and a far too high one). Each trial must be a run of the
experiment's project, holding every result the trial reported (as Ray itself recorded them), and
the too-high trial must have an alert."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request

import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from losswatch.client.integrations.ray_tune import LosswatchTuneCallback  # noqa: E402

BAD = ("divergence", "nan", "grad_explosion", "spike", "oscillation")
STEPS = 30


# Not service_helpers.get_json / LR_TOO_HIGH_KINDS: Ray's workers import this module to run
# `trainable`, and tests/ is not on their path, so this module imports nothing from tests/.
def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return json.loads(r.read())


def num(col: list) -> list:
    """A series column as floats: the wire spells non-finite values "NaN", "Infinity"."""
    return [float(v) if isinstance(v, str) else v for v in col]


def trainable(config: dict) -> None:
    import torch

    from losswatch.client.integrations.torch import global_grad_norm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    for step in range(STEPS):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        gn = global_grad_norm(model.parameters())
        tune.report({"step": step, "loss": float(loss), "grad_norm": float(gn), "lr": opt.param_groups[0]["lr"]})
        opt.step()


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_every_trial_is_a_run_of_the_experiment_with_every_result(service_proc, ray_cluster, tmp_path,
                                                                    caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    cb = LosswatchTuneCallback(url=service_proc, monitor_options={"flush_interval": 0.1})
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search([0.05, 8.0])},
        run_config=tune.RunConfig(name="lw-sweep", storage_path=str(tmp_path), callbacks=[cb], verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    runs = get(service_proc, "/v1/runs?project=lw-sweep")["runs"]
    by_id = {r["run_id"]: r for r in runs}
    assert len(results) == 2
    for res in results:
        trial_id = res.metrics["trial_id"]
        assert trial_id in by_id and by_id[trial_id]["project"] == "lw-sweep"
        assert by_id[trial_id]["meta"]["status"] == "finished"  # completed: its silence is expected
        df = res.metrics_dataframe.sort_values("step")
        series = get(service_proc, f"/v1/runs/{trial_id}/steps?project=lw-sweep")["series"]
        assert series["step"] == list(range(STEPS)) == df["step"].tolist()
        assert num(series["loss"]) == pytest.approx(df["loss"].tolist(), rel=1e-9, nan_ok=True)
        assert num(series["grad_norm"]) == pytest.approx(df["grad_norm"].tolist(), rel=1e-9, nan_ok=True)
        assert series["lr"] == pytest.approx(df["lr"].tolist(), rel=1e-12)
        alerts = get(service_proc, f"/v1/runs/{trial_id}/alerts?project=lw-sweep")["alerts"]
        bad = [a for a in alerts if a["kind"] in BAD and a["severity"] in ("warning", "critical")]
        if res.config["lr"] == 8.0:
            assert bad, alerts
        told = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "losswatch"
                and r.getMessage().startswith(f"losswatch: run {trial_id} ")]
        assert told[0] == (logging.INFO, f"losswatch: run {trial_id} -> {service_proc}/runs/{trial_id}?project=lw-sweep "
                                         f"(API {service_proc}/v1/runs/{trial_id}?project=lw-sweep)")
        for a in bad:  # on the driver, where the sweep is watched (escalated: the client's NaN check told it first)
            assert any(lvl == logging.WARNING and (f" {a['detector']} raised: " in m or f" {a['detector']} escalated: " in m)
                       for lvl, m in told), told


def test_a_loss_key_the_trials_never_report_is_said_once_per_trial(ray_cluster, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    cb = LosswatchTuneCallback(loss_key="objective", warn_no_loss_after=(5, 0.0))
    tuner = tune.Tuner(trainable, param_space={"lr": 0.05},
                       run_config=tune.RunConfig(name="lw-no-loss", storage_path=str(tmp_path), callbacks=[cb],
                                                 verbose=0))
    (res,) = tuner.fit()
    told = [r.getMessage() for r in caplog.records if "has recorded no loss" in r.getMessage()]
    assert len(told) == 1, told
    assert told[0].startswith(f"losswatch: run {res.metrics['trial_id']} has recorded no loss in 5 steps")
    assert "no 'objective' key" in told[0] and "loss_key=" in told[0]


def test_importing_the_integration_does_not_import_ray() -> None:
    code = ("import sys, losswatch.client.integrations.ray_tune;"
            "assert not {'ray', 'torch'} & set(sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
