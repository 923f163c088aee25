// The run page: summary, loss / grad-norm / LR over steps, alerts, actions; polls while open.

import {
  AuthNeeded, actionText, ago, askForToken, badge, el, fmt, getJSON, notice, num, poll, showTokenStatus, storedToken, when,
} from "./common.js";
import { panel } from "./plot.js";

const POLL_MS = 3000;
const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const api = `/v1/runs/${encodeURIComponent(runId)}`;
// a run is named by its project and its run id: ?project= names the project (none: the token's
// only project, or `default` with auth off)
const project = new URLSearchParams(location.search).get("project");
const inProject = project === null ? "" : `project=${encodeURIComponent(project)}`;
const query = (...parts) => {
  const q = [...parts, inProject].filter(Boolean).join("&");
  return q ? `?${q}` : "";
};

let series = null;      // the last steps document (its "total": the steps stored when it was read)
let alertsDoc = { alerts: [], actions: [] };

async function tick() {
  const stepsPath = `${api}/steps${query(`max_points=${maxPoints()}`)}`;
  // the first time all three calls at once; then the series only when the run has new steps
  // (the downsampled read is the costly call)
  const [run, alerts, fresh] = await Promise.all([
    getJSON(`${api}${query()}`), getJSON(`${api}/alerts${query()}`), series === null ? getJSON(stepsPath) : null,
  ]);
  series = fresh || (series.total === run.n_steps ? series : await getJSON(stepsPath));
  alertsDoc = alerts;
  notice("");
  document.getElementById("run-section").hidden = false;
  renderSummary(run);
  renderPlots();
  renderAlerts(run);
  renderActions();
  renderCheckpoints(run.meta || {});
  if (document.body.dataset.state !== "ready") {
    // the first full render: what bench/page_load.py times from the start of navigation
    performance.mark("losswatch:ready");
    document.body.dataset.state = "ready";
  }
}

function maxPoints() {
  // about two points per pixel of plot width: the minmax buckets keep up to four per bucket
  return Math.max(400, Math.min(4000, 2 * plotWidth()));
}

function plotWidth() {
  return Math.max(480, Math.floor(document.getElementById("plots").clientWidth || 960));
}

function renderSummary(run) {
  document.title = `losswatch: ${run.run_id}`;
  document.getElementById("run-title").replaceChildren(run.run_id, " ", badge(run.health));
  const meta = run.meta || {};
  const rows = [
    ["project", run.project],
    ["last step", run.last_step ?? "–"],
    ["steps stored", run.n_steps],
    ["loss", fmt(run.last.loss)], ["grad-norm", fmt(run.last.grad_norm)], ["LR", fmt(run.last.lr)],
    ["val loss", fmt(run.last.val_loss)],
    ["last seen", ago(run.last_seen)], ["created", when(run.created_at)],
  ];
  for (const k of ["task", "model", "optimizer", "batch_size", "status"]) if (meta[k] !== undefined) rows.push([k, meta[k]]);
  document.getElementById("summary").replaceChildren(...rows.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
  const advice = document.getElementById("advice");
  const rec = run.recommendation;
  advice.hidden = !rec;
  advice.replaceChildren(...(rec ? [el("strong", {}, `Advice: ${actionText(rec)}. `), rec.reason || ""] : []));
}

function renderPlots() {
  const s = series.series;
  const box = document.getElementById("plots");
  const width = plotWidth();
  const steps = s.step;
  const xDomain = steps.length ? [steps[0], steps[steps.length - 1]] : [0, 1];
  const col = (name) => s[name].map(num);
  const shared = { width, height: 220, xDomain, alerts: alertsDoc.alerts, actions: alertsDoc.actions };
  const lossSeries = [{ name: "loss", steps, values: col("loss") }];
  if (s.val_loss.some((v) => v !== null)) lossSeries.push({ name: "val_loss", steps, values: col("val_loss") });
  box.replaceChildren(
    panel({ ...shared, title: "loss", log: true, series: lossSeries }),
    panel({ ...shared, title: "grad-norm", log: true, series: [{ name: "grad_norm", steps, values: col("grad_norm") }] }),
    panel({ ...shared, title: "LR", log: true, series: [{ name: "lr", steps, values: col("lr") }] }),
  );
  const d = series.downsampled;
  document.getElementById("points").textContent = d
    ? `${series.count.toLocaleString()} of ${series.total.toLocaleString()} points shown (${d.method}: ${d.description})`
    : `${series.count.toLocaleString()} points; refreshed ${new Date().toLocaleTimeString()}`;
}

function renderAlerts(run) {
  const active = new Set(run.active_alerts.map((a) => a.id));
  // the alerts of one incident (a spike inside a divergence, the NaN that ends it) sit together,
  // newest incident first; the incident is named by its first alert ("divergence at step 120")
  const opened = new Map();
  for (const a of alertsDoc.alerts) {
    const key = a.incident || a.id;
    opened.set(key, Math.min(opened.has(key) ? opened.get(key) : Infinity, a.step));
  }
  const incidentOf = (a) => a.incident || a.id;
  const incidentName = (a) => {
    const parts = incidentOf(a).split(":");
    return parts.length >= 3 ? `${parts[parts.length - 2].split(".")[0]} at step ${parts[parts.length - 1]}` : incidentOf(a);
  };
  const order = (a, b) => (opened.get(incidentOf(b)) - opened.get(incidentOf(a))) || (b.step - a.step);
  const rows = [...alertsDoc.alerts].sort(order).map((a) => {
    const state = active.has(a.id) ? "active" : a.resolved_step !== null && a.resolved_step !== undefined
      ? `resolved at step ${a.resolved_step}` : "ended";
    const advice = a.action && a.action.type ? [el("code", {}, actionText(a.action)), " ", a.action.reason || ""] : [];
    return el("tr", { class: `alert-row ${a.severity}`, "data-alert-id": a.id, "data-incident": incidentOf(a) },
      el("td", {}, incidentName(a)), el("td", {}, badge(a.severity)), el("td", {}, a.kind),
      el("td", { class: "num" }, a.last_step && a.last_step !== a.step ? `${a.step}–${a.last_step}` : a.step),
      el("td", {}, a.message), el("td", {}, ...advice),
      el("td", {}, state + (a.acknowledged ? ", acknowledged" : "")));
  });
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no alert"))]));
}

function renderActions() {
  const rows = [...alertsDoc.actions].sort((a, b) => b.step - a.step).map((r) => el("tr", { class: "action-row" },
    el("td", { class: "num" }, r.step),
    el("td", {}, el("code", {}, actionText(r.action))),
    el("td", {}, r.dry_run ? "dry run" : r.applied ? "applied" : "not applied"),
    el("td", {}, [r.action.reason || "", r.note ? ` (${r.note})` : ""].join("")),
    el("td", {}, when(r.reported_at))));
  const body = document.querySelector("#actions tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no action reported"))]));
}

// the checkpoints the client recorded (mon.checkpoint) and the rewinds after a rollback, as the
// client keeps them in the run metadata: a rollback goes to the latest checkpoint before its incident
function renderCheckpoints(meta) {
  const rows = [
    ...(Array.isArray(meta.checkpoints) ? meta.checkpoints : []).map((c) => [c.step, c.path ? `checkpoint ${c.path}` : "checkpoint"]),
    ...(Array.isArray(meta.rewinds) ? meta.rewinds : []).map((r) => [r.at_step, `rewound to step ${r.to_step}`]),
  ].sort((a, b) => b[0] - a[0]).map(([step, what]) => el("tr", { class: "checkpoint-row" },
    el("td", { class: "num" }, step), el("td", {}, what)));
  const body = document.querySelector("#checkpoints tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 2, class: "muted" }, "none recorded"))]));
}

showTokenStatus();
const loop = poll(POLL_MS, tick, (e) => {
  if (e instanceof AuthNeeded) {
    document.getElementById("run-section").hidden = true;   // nothing stays on screen without a valid token
    askForToken(e.message, () => loop.resume());
  } else if (e.status === 404) {
    notice(`No run ${JSON.stringify(runId)}${storedToken() ? " visible with this token" : ""}.`);
    document.body.dataset.state = "missing";
  } else {
    notice(`Could not refresh: ${e.message} (retrying every ${POLL_MS / 1000} s)`);
  }
});
