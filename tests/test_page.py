"""The built-in page and the offline API docs, through real HTTP and a real headless browser.

A real ``losswatch serve`` process; runs logged with the real client (losswatch.client.Monitor);
pages loaded in Debian's chromium (tests/fixtures/chromium_proc.py), which skips with the reason
when chromium is absent. Screenshots stay in the test's tmp_path (the path is printed)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service_helpers import client, get_json, get_response, get_text

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "service" / "static"
# src="...", href="...", spec-url="..." (ReDoc), url: '...' (Swagger UI's spec URL), import ... from "..."
ASSET_RE = re.compile(r"""(?:\b(?:src|href|spec-url)\s*=\s*|\burl\s*:\s*|\bfrom\s+)["']([^"']+)["']""")


def referenced(html: str) -> list[str]:
    return ASSET_RE.findall(html)


def healthy_then_diverging(mon, start: int, stop: int) -> None:
    """A loss that falls until step 200, then runs away (LR x10) and turns NaN at step 300."""
    for s in range(start, stop):
        if s < 200:
            loss, gn, lr = 3.0 * math.exp(-s / 80) + 0.5, 1.0, 3e-4
        elif s < 300:
            loss, gn, lr = 0.5 * 1.03 ** (s - 200) + 0.6, 1.05 ** (s - 200), 3e-3
        else:
            loss, gn, lr = float("nan"), float("nan"), 3e-3
        mon.log(s, loss=loss, grad_norm=gn, lr=lr)
    assert mon.flush(timeout=20)


def monitor(url: str, run_id: str, project: str, token: str | None = None):
    from losswatch.client import Monitor

    return Monitor(run_id=run_id, url=url, project=project, token=token, flush_interval=0.1,
                   meta={"task": "page test", "optimizer": "adamw"})


# --- offline docs --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_reference_only_local_assets_that_answer(service_proc, path):
    html = get_text(service_proc, path)
    urls = referenced(html)
    assert len(urls) >= 2, html
    for u in urls:
        assert "//" not in u and u.startswith("/"), f"{path} loads {u} from another host"
        assert get_response(service_proc, u), u
    assert "/openapi.json" in urls


def test_swagger_ui_renders_the_spec_offline(chromium, service_proc):
    """Swagger UI 5 reads FastAPI's OpenAPI 3.1 (version 4 says "Unable to render this definition")."""
    chromium.goto(service_proc + "/docs")
    paths = chromium.wait_for("[...document.querySelectorAll('.opblock-summary-path')]"
                              ".map(e => e.dataset.path).filter(Boolean)")
    assert "/v1/runs/{run_id}/steps" in paths
    assert "Unable to render" not in chromium.js("document.body.innerText")


# --- the page's files ----------------------------------------------------------------------

def test_pages_load_only_their_own_files(service_proc):
    for path in ("/", "/runs/any-run"):
        r = client(service_proc).get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        urls = referenced(r.text)
        assert urls
        for u in urls:
            assert u.startswith("/") and "//" not in u, u
            get_response(service_proc, u)
    for js in STATIC.glob("*.js"):
        for u in referenced(js.read_text()):
            assert u.startswith("./") and (STATIC / u[2:]).is_file(), (js.name, u)
    # a run id the API could never hold is refused like the API refuses it
    assert client(service_proc).get("/runs/has%20space").status_code == 422


def test_the_wheel_ships_the_page(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md", "client", "detectors", "service", "dashboards"):
        p = REPO / part
        (shutil.copytree if p.is_dir() else shutil.copy)(p, src / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("losswatch-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(f.name for f in STATIC.iterdir() if f.is_file())
    assert "run.html" in shipped
    missing = [n for n in shipped if f"losswatch/service/static/{n}" not in names]
    assert not missing, missing


# --- the pages in a browser ----------------------------------------------------------------

def panel_state(browser, panel: str) -> dict:
    return browser.js(f"""(() => {{
        const p = document.querySelector('svg.panel[data-panel="{panel}"]');
        if (!p) return null;
        return {{
          scale: p.dataset.scale,
          points: Object.fromEntries([...p.querySelectorAll('path.line')].map(e => [e.dataset.series, +e.dataset.points])),
          nan_marks: p.querySelectorAll('.nan-mark').length,
          alerts: [...p.querySelectorAll('.alert-mark')].map(e => ({{id: e.dataset.alertId, message: e.dataset.message,
                                                                    title: e.querySelector('title').textContent}})),
          actions: [...p.querySelectorAll('.action-mark')].map(e => e.dataset.type),
        }};
    }})()""")


def test_run_page_plots_a_diverging_run_live(chromium, service_factory, tmp_path):
    svc = service_factory()
    mon = monitor(svc.url, "page-div", "vision")
    try:
        healthy_then_diverging(mon, 0, 150)
        chromium.goto(f"{svc.url}/runs/page-div?project=vision")
        chromium.wait_for("document.body.dataset.state === 'ready'")
        first = panel_state(chromium, "loss")
        assert first["points"]["loss"] == 150 and first["scale"] == "log"
        assert first["alerts"] == [] and first["nan_marks"] == 0

        # the run goes on reporting: the open page follows it (it polls every few seconds)
        healthy_then_diverging(mon, 150, 400)
        mon.report_action(240, {"type": "scale_lr", "factor": 0.1, "reason": "the loss is running away"},
                          applied=True)
        mon.checkpoint(200, "ckpt-200.pt")  # a token: the page shows what the client recorded
        assert mon.flush(timeout=20)
        # until the page shows the whole run (every NaN step marked) and the reported action
        chromium.wait_for("document.querySelectorAll('svg.panel[data-panel=\"loss\"] .nan-mark').length === 100 && "
                          "document.querySelectorAll('#actions tr.action-row').length > 0", timeout=30)
    finally:
        mon.close()
    alerts = get_json(svc.url, "/v1/runs/page-div/alerts?project=vision")["alerts"]
    bad = [a for a in alerts if a["kind"] in ("divergence", "nan") and a["severity"] == "critical"]
    assert bad, alerts

    loss = panel_state(chromium, "loss")
    assert loss["points"]["loss"] == 300           # every finite loss; the NaNs (steps 300-399) are marks
    shown = {a["id"]: a for a in loss["alerts"]}
    for a in bad:
        assert shown[a["id"]]["message"] == a["message"]
        assert a["action"]["reason"] in shown[a["id"]]["title"]    # the advice, on hover
    assert loss["actions"] == ["scale_lr"]
    grad = panel_state(chromium, "grad-norm")
    assert grad["scale"] == "log" and grad["points"]["grad_norm"] == 300
    assert panel_state(chromium, "LR")["points"]["lr"] == 400

    table = chromium.js("document.querySelector('#alerts').innerText")
    for a in bad:
        assert a["message"] in table and a["action"]["reason"] in table
    # the alerts of one incident (the NaN that ends the divergence) are one group, named by its
    # first alert
    rows = chromium.js("[...document.querySelectorAll('#alerts tr.alert-row')].map(r => "
                       "[r.dataset.alertId, r.dataset.incident, r.cells[0].innerText])")
    incident = {a["id"]: a["incident"] for a in alerts}
    assert [r[1] for r in rows] == [incident[r[0]] for r in rows]
    groups = [r[1] for r in rows]
    assert groups == sorted(groups, key=groups.index)  # each incident's rows are adjacent
    nan_alert = next(a for a in bad if a["kind"] == "nan")
    opener = next(a for a in alerts if a["id"] == nan_alert["incident"])
    assert opener["kind"] != "nan"  # the NaN joined the incident the run-away opened
    assert f"{opener['kind']} at step {opener['step']}" in [r[2] for r in rows if r[0] == nan_alert["id"]][0]
    assert "the loss is running away" in chromium.js("document.querySelector('#actions').innerText")
    chromium.wait_for("document.querySelectorAll('#checkpoints tr.checkpoint-row').length === 1", timeout=30)
    assert "ckpt-200.pt" in chromium.js("document.querySelector('#checkpoints').innerText")
    assert chromium.js("document.querySelector('h1 .badge').textContent") == "critical"

    shot = chromium.screenshot(tmp_path / "run-page.png")
    print(f"run page screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chromium.console == [], chromium.console


def test_runs_page_newest_first_with_project_filter(chromium, service_factory, tmp_path):
    svc = service_factory()
    for run_id, project in (("old-run", "nlp"), ("mid-run", "vision"), ("new-run", "nlp")):
        mon = monitor(svc.url, run_id, project)
        healthy_then_diverging(mon, 0, 400 if run_id == "mid-run" else 100)
        mon.close()
    chromium.goto(svc.url + "/")
    chromium.wait_for("document.body.dataset.state === 'ready'")
    rows = "[...document.querySelectorAll('#runs tr.run-row')].map(r => [r.dataset.runId, r.dataset.health])"
    assert chromium.js(rows) == [["new-run", "ok"], ["mid-run", "critical"], ["old-run", "ok"]]
    active = chromium.js("document.querySelector('tr[data-run-id=\"mid-run\"] td.alerts').innerText")
    assert "nan" in active and "divergence" in active

    chromium.js("(() => { const s = document.getElementById('project'); s.value = 'nlp';"
                " s.dispatchEvent(new Event('change')); })()")
    chromium.wait_for(f"JSON.stringify({rows}.map(r => r[0])) === JSON.stringify(['new-run', 'old-run'])")
    assert chromium.js("location.search") == "?project=nlp"

    print(f"runs page screenshot: {chromium.screenshot(tmp_path / 'runs-page.png')}")
    chromium.js("document.querySelector('tr[data-run-id=\"new-run\"] a').click()")
    chromium.wait_for("location.pathname === '/runs/new-run' && document.body.dataset.state === 'ready'")


def test_with_tokens_the_page_asks_for_one_and_shows_only_its_projects(chromium, service_factory):
    svc = service_factory(env={"LOSSWATCH_TOKENS": "tokA=projA;tokB=projB"})
    for run_id, project, token in (("run-a", "projA", "tokA"), ("run-b", "projB", "tokB")):
        mon = monitor(svc.url, run_id, project, token)
        healthy_then_diverging(mon, 0, 50)
        mon.close()

    chromium.goto(svc.url + "/")
    chromium.wait_for("document.body.dataset.state === 'token'")
    assert chromium.js("document.querySelectorAll('#runs tr.run-row').length") == 0

    chromium.js("(() => { document.getElementById('token').value = 'tokA';"
                " document.getElementById('token-form').requestSubmit(); })()")
    chromium.wait_for("document.body.dataset.state === 'ready'")
    assert chromium.js("[...document.querySelectorAll('#runs tr.run-row')].map(r => r.dataset.runId)") == ["run-a"]
    assert chromium.js("localStorage.getItem('losswatch.token')") == "tokA"

    # another project's run is as absent as a run that does not exist
    chromium.goto(svc.url + "/runs/run-b")
    chromium.wait_for("document.body.dataset.state === 'missing'")
    assert chromium.js("document.querySelectorAll('svg.panel').length") == 0
    chromium.goto(svc.url + "/runs/run-a")
    chromium.wait_for("document.body.dataset.state === 'ready'")
    assert panel_state(chromium, "loss")["points"]["loss"] == 50

    # a token the service refuses brings the form back
    chromium.js("localStorage.setItem('losswatch.token', 'wrong')")
    chromium.goto(svc.url + "/")
    chromium.wait_for("document.body.dataset.state === 'token'")
    assert "refused" in chromium.js("document.getElementById('auth').innerText")


def test_a_panel_with_values_at_or_below_zero_is_linear(chromium, service_proc):
    """Log y only where every value can have one: a loss that goes negative (a log-likelihood)
    is drawn on a linear axis, and says so."""
    recs = [{"step": s, "loss": 1.0 - s / 50, "grad_norm": 0.5, "lr": 1e-3} for s in range(100)]
    c = client(service_proc)
    assert c.post("/v1/runs/page-negative/steps", content=json.dumps({"records": recs}),
                  headers={"Content-Type": "application/json"}).status_code == 200
    chromium.goto(service_proc + "/runs/page-negative")
    chromium.wait_for("document.body.dataset.state === 'ready'")
    loss, grad = panel_state(chromium, "loss"), panel_state(chromium, "grad-norm")
    assert loss["scale"] == "linear" and loss["points"]["loss"] == 100
    assert "linear" in chromium.js("document.querySelector('svg.panel[data-panel=\"loss\"] .title').textContent")
    assert grad["scale"] == "log"
