// The runs page: every run the token may see, newest first, with a project filter; polls.

import { AuthNeeded, ago, askForToken, badge, el, fmt, getJSON, notice, poll, showTokenStatus, when } from "./common.js";

const POLL_MS = 5000;
const select = document.getElementById("project");
const projects = new Set();

async function tick() {
  const { runs } = await getJSON("/v1/runs");
  notice("");
  document.getElementById("runs-section").hidden = false;
  for (const r of runs) projects.add(r.project);
  renderFilter();
  const chosen = select.value;
  const shown = runs.filter((r) => !chosen || r.project === chosen).sort((a, b) => b.created_at - a.created_at);
  document.getElementById("runs-count").textContent = `${shown.length} of ${runs.length} runs`;
  const rows = shown.map((r) => {
    const alerts = r.active_alerts.map((a) => el("span", { class: `badge ${a.severity}`, title: a.message }, a.kind));
    return el("tr", { class: "run-row", "data-run-id": r.run_id, "data-health": r.health },
      el("td", {}, el("a", { href: `/runs/${encodeURIComponent(r.run_id)}?project=${encodeURIComponent(r.project)}` },
                      r.run_id)),
      el("td", {}, r.project), el("td", {}, badge(r.health)),
      el("td", { class: "num" }, r.last_step ?? "–"), el("td", { class: "num" }, fmt(r.last.loss)),
      el("td", { class: "alerts" }, ...(alerts.length ? alerts : ["–"])),
      el("td", {}, ago(r.last_seen)), el("td", {}, when(r.created_at)));
  });
  const body = document.querySelector("#runs tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no run yet"))]));
  document.body.dataset.state = "ready";
}

function renderFilter() {
  const have = new Set([...select.options].map((o) => o.value));
  for (const p of [...projects].sort()) if (!have.has(p)) select.append(el("option", { value: p }, p));
  const wanted = new URLSearchParams(location.search).get("project");
  if (wanted !== null && select.value !== wanted && projects.has(wanted)) select.value = wanted;
}

select.addEventListener("change", () => {
  const url = new URL(location.href);
  if (select.value) url.searchParams.set("project", select.value); else url.searchParams.delete("project");
  history.replaceState(null, "", url);
  loop.resume();
});

showTokenStatus();
const loop = poll(POLL_MS, tick, (e) => {
  if (e instanceof AuthNeeded) {
    document.getElementById("runs-section").hidden = true;   // nothing stays on screen without a valid token
    askForToken(e.message, () => loop.resume());
  }
  else notice(`Could not refresh: ${e.message} (retrying every ${POLL_MS / 1000} s)`);
});
