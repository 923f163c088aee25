"""The Prometheus rules in dashboards/prometheus/: valid (`promtool check rules`), unit-tested
(`promtool test rules`), and every rule covered by a unit test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "dashboards" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yml"))


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed (tests/run.sh installs Debian's prometheus package)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _rules() -> list[dict]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def test_rule_files_exist():
    assert {f.name for f in RULE_FILES} == {"alerts.rules.yml", "recording.rules.yml"}
    assert TEST_FILES


def test_promtool_check_rules():
    res = promtool("check", "rules", *map(str, RULE_FILES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_check_rejects_a_broken_rule(tmp_path):
    # the check above would be worthless if promtool passed anything: feed it a typo
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m])\n")
    res = promtool("check", "rules", str(broken))
    assert res.returncode != 0


def test_promtool_unit_tests():
    res = promtool("test", "rules", *[f.name for f in TEST_FILES], cwd=RULES_DIR / "tests")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_rule_has_a_unit_test():
    alerts_tested: set[str] = set()
    exprs_tested: set[str] = set()
    for f in TEST_FILES:
        for case in yaml.safe_load(f.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                if t.get("exp_alerts"):  # a test that it fires, not only that it stays quiet
                    alerts_tested.add(t["alertname"])
            for t in case.get("promql_expr_test", []):
                exprs_tested.add(t["expr"].strip())
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in alerts_tested, f"alert {rule['alert']} has no promtool test where it fires"
        else:
            assert rule["record"] in exprs_tested, f"recording rule {rule['record']} has no promtool test"


def test_alert_rules_are_complete():
    """What an on-call person needs: a severity and words that say what happened."""
    names = set()
    for rule in _rules():
        if "alert" not in rule:
            continue
        names.add(rule["alert"])
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
        # severity from the rule, or (divergence) from the detector's own severity label
        assert rule.get("labels", {}).get("severity") in ("warning", "critical") or "severity" in rule["expr"], rule
    assert names >= {"LosswatchRunCritical", "LosswatchRunNaN", "LosswatchRunDiverging",
                     "LosswatchRunStoppedReporting", "LosswatchIngestErrors", "LosswatchServiceDown"}
