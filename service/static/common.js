// What both pages share: building DOM nodes, reading the /v1 API with the stored token,
// asking for a token when the service wants one, and formatting values.

const TOKEN_KEY = "losswatch.token";
const SVG_NS = "http://www.w3.org/2000/svg";

/** An element with attributes and children; text is always set as text (never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** The service rejected the stored token (or wants one). */
export class AuthNeeded extends Error {}

/** A non-2xx answer other than 401. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function storedToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

/** GET a /v1 path as JSON, with the stored token when there is one. */
export async function getJSON(path) {
  const headers = { Accept: "application/json" };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new AuthNeeded(await detail(r));
  if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await detail(r)}`);
  return r.json();
}

async function detail(r) {
  try {
    const body = await r.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return r.statusText;
  }
}

/** Replace the contents of #auth with a token form; ``onSaved`` runs once a token is stored. */
export function askForToken(reason, onSaved) {
  const box = document.getElementById("auth");
  const input = el("input", { type: "password", id: "token", autocomplete: "off", size: 40,
    placeholder: "a token from LOSSWATCH_TOKENS" });
  const form = el("form", { id: "token-form", class: "token-form" },
    el("p", {}, storedToken() ? `The service refused the stored token (${reason}).`
      : "This service needs a token: it shows only the runs of the token's projects."),
    el("label", { for: "token" }, "Token "), input, " ", el("button", { type: "submit" }, "Use token"),
    el("p", { class: "muted" }, "Kept in this browser (localStorage) and sent as the Authorization header."));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    localStorage.setItem(TOKEN_KEY, value);
    box.replaceChildren();
    showTokenStatus();
    onSaved();
  });
  box.replaceChildren(form);
  document.body.dataset.state = "token";
  input.focus();
}

/** The header's "token set · forget" line. */
export function showTokenStatus() {
  const span = document.getElementById("token-status");
  if (!storedToken()) {
    span.replaceChildren();
    return;
  }
  const forget = el("a", { href: "#", id: "forget-token" }, "forget token");
  forget.addEventListener("click", (e) => {
    e.preventDefault();
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  span.replaceChildren("token set · ", forget);
}

export function notice(text) {
  const box = document.getElementById("notice");
  box.hidden = !text;
  box.textContent = text || "";
}

/** A value as the API writes it (numbers, "NaN"/"Infinity"/"-Infinity", null) -> number or null. */
export function num(v) {
  return v === null || v === undefined ? null : Number(v);
}

export function fmt(v) {
  if (v === null || v === undefined) return "–";
  const x = Number(v);
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a >= 1e5 || a < 1e-3 ? x.toExponential(2) : String(Number(x.toPrecision(4)));
}

export function ago(epochSeconds) {
  if (!epochSeconds) return "never";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function when(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "–";
}

export function badge(level) {
  return el("span", { class: `badge ${level}` }, level);
}

/** "scale_lr factor=0.1": an action's type and parameters, without its reason. */
export function actionText(action) {
  if (!action || !action.type) return "";
  const params = Object.entries(action)
    .filter(([k]) => k !== "type" && k !== "reason")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return [action.type, ...params].join(" ");
}

/** Run ``tick`` now and every ``ms`` while the tab is visible; a tick's errors go to ``onError``
 * (AuthNeeded pauses the loop until ``resume`` is called). */
export function poll(ms, tick, onError) {
  let timer = null;
  let paused = false;
  const run = async () => {
    timer = null;
    if (document.hidden) return schedule();
    try {
      await tick();
    } catch (e) {
      if (e instanceof AuthNeeded) {
        paused = true;
        onError(e);
        return;
      }
      onError(e);
    }
    schedule();
  };
  const schedule = () => {
    if (!paused && timer === null) timer = setTimeout(run, ms);
  };
  run();
  return {
    resume() {
      paused = false;
      if (timer !== null) clearTimeout(timer);
      run();
    },
  };
}
