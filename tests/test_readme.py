"""What README.md tells a user to run, run as written.

Every ```python block runs in its own interpreter against a real service, started with the
README's own `losswatch serve` (the port comes from LOSSWATCH_PORT, as a user's environment may
set it), with LOSSWATCH_URL pointing at it as the README says; the framework examples train their
tiny models for real and must print the alert they promise. Every command line of the ```bash
blocks is checked: `losswatch ...` commands run (`losswatch demo` until it says where to look,
then Ctrl-C), `docker compose up` is validated with `docker-compose config` (no Docker engine
here), the install lines are checked against pyproject.toml, and `bash tests/run.sh` is this test
suite itself. A command line the test does not know fails the test, so a new README command comes
with its check."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from fixtures.ports import free_port, terminate, wait_http_ok
from service_helpers import get_json

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
LOSSWATCH = [sys.executable, "-m", "losswatch.service.cli"]  # what the `losswatch` script runs


def fenced(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)


def command_lines() -> list[str]:
    """Each command of the ```bash blocks, without its comment."""
    out = []
    for block in fenced("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words))
    return out


def snippet_id(code: str) -> str:
    """The framework a snippet shows (its last losswatch import), for the test's name."""
    imports = re.findall(r"^from losswatch\.client(?:\.integrations\.(\w+))? import (\w+)", code, re.M)
    name = imports[-1][0] or imports[-1][1]
    return f"{name}-acting" if "act=True" in code else name


PYTHON = fenced("python")
COMMANDS = command_lines()


def test_the_readme_has_the_examples_it_promises() -> None:
    shown = {snippet_id(c) for c in PYTHON}
    assert {"Monitor", "torch", "lightning", "huggingface", "keras", "ray_tune", "torch-acting"} <= shown
    assert "losswatch serve" in COMMANDS and "docker compose up" in COMMANDS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The README's `losswatch serve`, on a free port chosen through LOSSWATCH_PORT."""
    assert "losswatch serve" in COMMANDS
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    env.update(LOSSWATCH_PORT=str(port), PYTHONUNBUFFERED="1")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*LOSSWATCH, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_http_ok(proc, "127.0.0.1", port, "/readyz", name="losswatch serve", output=log.read_text, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(proc)


@pytest.mark.parametrize("code", PYTHON, ids=[snippet_id(c) for c in PYTHON])
def test_python_example_runs_as_written(code: str, served: str, tmp_path: Path) -> None:
    for module in re.findall(r"^(?:from|import) (\w+)", code, re.M):
        if module != "losswatch" and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (tests/run.sh installs losswatch[dev])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    # HOME: what frameworks write there (ray_results, ~/.keras) stays in the test's folder
    env.update(LOSSWATCH_URL=served, HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    runs_before = len(get_json(served, "/v1/runs")["runs"])
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    # it streamed to the service the README started (not only to in-process detectors)
    assert len(get_json(served, "/v1/runs")["runs"]) > runs_before
    if "def show(alert)" in code:  # the example promises to show the alert a far too high LR raises
        alerts = [line for line in res.stdout.splitlines() if line.startswith("ALERT")]
        assert any(" critical " in a or " warning " in a for a in alerts), res.stdout[-3000:]
    if "act=True" in code:  # the Actor cut the LR of the run that was blowing up
        assert "scale_lr" in res.stdout.splitlines()[-1], res.stdout[-3000:] + res.stderr[-3000:]


def _check(command: str, tmp_path: Path) -> None:
    words = shlex.split(command)
    if command == "bash tests/run.sh":
        # this suite's own entry point: it exists and ends by running pytest with what it installed
        text = (REPO / "tests" / "run.sh").read_text()
        assert "pip install -q -e '.[dev]'" in text and text.rstrip().endswith('pytest "$@"')
    elif words[:2] == ["pip", "install"]:
        spec = words[2]
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        if spec == ".":  # the client alone: standard library only, so no dependency at all
            assert project["dependencies"] == []
        else:
            extra = re.fullmatch(r"\.\[(\w+)\]", spec).group(1)
            assert extra in project["optional-dependencies"]
    elif "&&" in words:  # the set-up line: venv, install, then its losswatch command
        parts = " ".join(words).split(" && ")
        assert parts[0] == "python3 -m venv .venv" and parts[1] == ".venv/bin/pip install -e .[server]"
        _check(parts[2].removeprefix(".venv/bin/"), tmp_path)
    elif command == "losswatch serve":
        pass  # the `served` fixture runs it for the Python examples
    elif words[:2] == ["losswatch", "demo"]:
        _demo_until_ctrl_c(words[2:])
    elif words[:2] == ["losswatch", "replay"]:
        res = subprocess.run([*LOSSWATCH, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "critical" in res.stdout + res.stderr  # the recorded run blew up: the replay says so
    elif command == "docker compose up":
        exe = shutil.which("docker-compose")
        assert exe, "docker-compose is not installed (tests/run.sh installs Debian's package)"
        res = subprocess.run([exe, "-f", "docker-compose.yml", "config", "--quiet"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    else:
        raise AssertionError(f"README command {command!r} has no check in tests/test_readme.py")


def _demo_until_ctrl_c(args: list[str]) -> None:
    """`losswatch demo` trains, prints the alerts and where to look, then waits for Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([*LOSSWATCH, "demo", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("explore:") or time.monotonic() > deadline:
                break
        assert any(line.startswith("explore:") for line in lines), "".join(lines)
        assert any("ALERT CRITICAL" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            terminate(proc)
        proc.stdout.close()


@pytest.mark.parametrize("command", COMMANDS)
def test_command_runs_or_validates(command: str, tmp_path: Path) -> None:
    _check(command, tmp_path)


def test_the_quickstart_without_a_url_watches_in_process(tmp_path: Path) -> None:
    """The README: without a URL the detectors run inside the training process (numpy is here)."""
    code = next(c for c in PYTHON if snippet_id(c) == "Monitor")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert any(line.startswith("ALERT critical") for line in res.stdout.splitlines()), res.stdout
    assert "health: critical" in res.stdout
