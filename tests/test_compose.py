"""docker-compose.yml: valid (Debian's docker-compose v1 validates without a Docker engine), and it
mounts the very files the other tests check: deploy/prometheus.yml (test_prometheus_scrape), the
rule files (test_prometheus_rules), the Grafana provisioning and generated dashboards
(test_dashboards). The Dockerfile runs the service as a non-root user with a command the CLI takes."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (tests/run.sh installs Debian's package)"
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSWATCH_TOKENS", "GRAFANA_ADMIN_PASSWORD")}
    res = subprocess.run([exe, "-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def _mounts(service: dict) -> dict[str, str]:
    """container path -> host path (bind mounts) or volume name."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v["source"]
        else:
            parts = v.split(":")
            out[parts[1]] = parts[0]
    return out


def _host_path(mounts: dict[str, str], container_path: str) -> Path:
    """The host file behind a container path, through the longest bind mount that contains it."""
    p = PurePosixPath(container_path)
    for target in sorted(mounts, key=len, reverse=True):
        if p == PurePosixPath(target) or PurePosixPath(target) in p.parents:
            return Path(mounts[target]) / p.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def test_compose_validates_with_the_four_services(compose):
    assert set(compose["services"]) == {"losswatch", "redis", "prometheus", "grafana"}


def test_redis_persists(compose):
    redis = compose["services"]["redis"]
    cmd = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert _mounts(redis)["/data"] in compose["volumes"]  # a named volume, not the container's layer


def test_service_is_built_here_and_uses_redis(compose):
    svc = compose["services"]["losswatch"]
    assert Path(svc["build"]["context"]) == REPO and (REPO / "Dockerfile").exists()
    cmd = svc["command"]
    assert cmd[cmd.index("--store") + 1] == "redis://redis:6379/0"
    # the command is one the CLI accepts
    from losswatch.service.cli import build_parser

    args = build_parser().parse_args(cmd)
    assert args.command == "serve" and args.port == 8000


def test_prometheus_mounts_the_tested_config_and_rules(compose):
    prom = compose["services"]["prometheus"]
    mounts = _mounts(prom)
    cfg_path = _host_path(mounts, "/etc/prometheus/prometheus.yml")
    assert cfg_path == REPO / "deploy" / "prometheus.yml"
    from fixtures.prometheus_proc import DEPLOY_CONFIG

    assert cfg_path == DEPLOY_CONFIG  # the base of the config the scrape test runs
    cfg = yaml.safe_load(cfg_path.read_text())
    # rule_files resolved through the mounts: exactly the rule files promtool checks and tests
    resolved = set()
    for pattern in cfg["rule_files"]:
        host = _host_path(mounts, pattern)
        resolved |= {p for p in host.parent.iterdir() if fnmatch.fnmatch(p.name, host.name)}
    assert resolved == set((REPO / "dashboards" / "prometheus").glob("*.rules.yml"))
    assert len(resolved) == 2
    # the scrape target is the compose service on the port it serves
    job = [j for j in cfg["scrape_configs"] if j["job_name"] == "losswatch"][0]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    svc = compose["services"]["losswatch"]
    assert host in compose["services"] and host == "losswatch"
    assert port == svc["command"][svc["command"].index("--port") + 1]
    assert mounts["/prometheus"] in compose["volumes"]


def test_grafana_mounts_the_tested_provisioning_and_dashboards(compose):
    graf = compose["services"]["grafana"]
    mounts = _mounts(graf)
    prov = _host_path(mounts, "/etc/grafana/provisioning")
    assert prov == REPO / "dashboards" / "grafana" / "provisioning"
    providers = yaml.safe_load((prov / "dashboards" / "losswatch.yml").read_text())["providers"]
    dash_dir = _host_path(mounts, providers[0]["options"]["path"])
    assert dash_dir == REPO / "dashboards" / "generated"
    assert sorted(p.name for p in dash_dir.glob("*.json")) == ["losswatch-fleet.json", "losswatch-run.json",
                                                             "losswatch-service.json"]
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(mounts, home).exists()
    ds = yaml.safe_load((prov / "datasources" / "losswatch-prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    assert (prov / "alerting" / "losswatch-alerts.yml").exists()


def test_dockerfile_runs_as_non_root_with_a_valid_command():
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    final = lines[stages[-1]:]
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0")
    for ln in lines:
        if ln.upper().startswith("COPY ") and "--from" not in ln:
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    import json

    entry = json.loads([ln for ln in final if ln.startswith("ENTRYPOINT")][0].split(None, 1)[1])
    cmd = json.loads([ln for ln in final if ln.startswith("CMD")][0].split(None, 1)[1])
    assert entry == ["losswatch"]
    from losswatch.service.cli import build_parser

    args = build_parser().parse_args(cmd)
    assert args.command == "serve" and args.host == "0.0.0.0"


def test_compose_rejects_a_broken_file(tmp_path):
    # the validation above means something: v1 does reject a bad file
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  x:\n    image: 3\n    ports: {a: b}\n")
    res = subprocess.run([shutil.which("docker-compose"), "-f", str(bad), "config"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode != 0
