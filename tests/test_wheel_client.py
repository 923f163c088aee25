"""The client alone, as a user installs it into a training environment: the wheel built from this
checkout, installed WITHOUT extras (so with no dependency at all) into a fresh virtual
environment, streams a small training-like loop to a real service, and never needs numpy. The
read-only commands (`losswatch runs`, `show`, `export`) work in that install too, and `show --png`
and `demo` name the extra they lack. Nothing is downloaded: the build uses this environment's setuptools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_helpers import get_json

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "client", "detectors", "service", "dashboards")

LOOP = """
import math, sys
import losswatch.client
from losswatch.client import Monitor
assert "numpy" not in sys.modules, "importing the client imported numpy"
try:
    import numpy
except ImportError:
    pass
else:
    raise SystemExit("numpy is installed here: this is not a client-only environment")
with Monitor(run_id=sys.argv[1], url=sys.argv[2], project="wheel") as mon:
    for step in range(200):
        loss = 2.0 * math.exp(-step / 60) + 0.05
        mon.log(step, loss=loss, grad_norm=1.0 / (1 + step), lr=1e-3)
    assert mon.flush(30), "the records did not all reach the service"
print("numpy imported:", "numpy" in sys.modules, "from", losswatch.client.__file__)
"""


def run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the losswatch wheel (no extras); its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info next to the sources
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                 str(src)], env)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("losswatch-*.whl")
    made = run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], env)
    assert made.returncode == 0, made.stderr
    python = tmp / "venv" / "bin" / "python"
    installed = run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (the tests' import shim would shadow the installed package) and no
    LOSSWATCH_* settings of the caller."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("LOSSWATCH_")}


@pytest.mark.timeout(60)
def test_the_wheel_without_extras_streams_a_loop_to_a_service(client_venv, service_proc, tmp_path):
    res = run([str(client_venv), "-c", LOOP, "wheel-loop", service_proc], clean_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "numpy imported: False" in res.stdout
    assert str(client_venv.parents[1]) in res.stdout  # the installed wheel ran, not the checkout
    summary = get_json(service_proc, "/v1/runs/wheel-loop?project=wheel")
    assert summary["n_steps"] == 200 and summary["last_step"] == 199 and summary["project"] == "wheel"
    series = get_json(service_proc, "/v1/runs/wheel-loop/steps?project=wheel")["series"]
    assert series["step"] == list(range(200))


@pytest.mark.timeout(60)
def test_the_read_commands_work_in_a_client_only_install(client_venv, service_proc, tmp_path):
    losswatch = client_venv.parent / "losswatch"
    env = dict(clean_env(), LOSSWATCH_URL=service_proc)
    listed = run([str(losswatch), "runs"], env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    run_ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    project = listed.stdout.splitlines()[1].split()[1]
    assert run_ids, listed.stdout
    shown = run([str(losswatch), "show", run_ids[0]], env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_ids[0]}" in shown.stdout
    exported = run([str(losswatch), "export", run_ids[0], "--format", "jsonl"], env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["step"] for line in exported.stdout.splitlines()] == \
        get_json(service_proc, f"/v1/runs/{run_ids[0]}/steps?project={project}")["series"]["step"]
    plot = run([str(losswatch), "show", run_ids[0], "--png", str(tmp_path / "p.png")], env, cwd=tmp_path)
    assert plot.returncode == 2 and "losswatch[plot]" in plot.stderr, plot.stderr
    assert not (tmp_path / "p.png").exists()
    demo = run([str(losswatch), "demo", "--no-wait"], env, cwd=tmp_path)  # needs the server extra
    assert demo.returncode == 2 and "losswatch[server]" in demo.stderr, demo.stderr


def test_the_wheel_holds_every_package_of_the_checkout(client_venv):
    """A folder with an ``__init__.py`` that pyproject's package list forgets is left out of the
    wheel, and the installed package then fails on import (an editable install hides that)."""
    site = next((client_venv.parent.parent / "lib").glob("python*/site-packages")) / "losswatch"
    folders = {"client": "client", "detectors": "detectors", "service": "service", "dashboards": "dashboards"}
    missing = []
    for top, folder in folders.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / folder)
            installed = site / top / rel / "__init__.py"
            if not installed.is_file():
                missing.append(f"losswatch.{top}" + "".join(f".{p}" for p in rel.parts))
    assert not missing, f"packages missing from the wheel (pyproject.toml's packages): {missing}"
