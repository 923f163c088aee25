// One panel of the run page: series over steps as SVG, hand-written so that the page ships no
// library. Log y when asked and every finite value is > 0 (else linear, said in the title).
// A non-finite value (NaN, +-Infinity) breaks its line and gets a red mark at the top of the
// panel; alerts are vertical lines with a marker holding their message and advice; reported
// actions are marks at the bottom.

import { actionText, fmt, svg } from "./common.js";

const MARGIN = { left: 64, right: 14, top: 22, bottom: 24 };

/**
 * @param {object} o
 * @param {string} o.title       e.g. "loss"
 * @param {number} o.width       pixels
 * @param {number} o.height      pixels
 * @param {number[]} o.xDomain   [first step, last step] shared by the panels
 * @param {boolean} o.log        log y wanted
 * @param {{name: string, steps: number[], values: (number|null)[]}[]} o.series
 *        values: null = not logged at that step (skipped), NaN/+-Infinity = non-finite (marked)
 * @param {object[]} o.alerts    alert objects from the API
 * @param {object[]} o.actions   action reports from the API
 */
export function panel(o) {
  const { width, height } = o;
  const x0 = MARGIN.left, x1 = width - MARGIN.right, y0 = height - MARGIN.bottom, y1 = MARGIN.top;
  const [sMin, sMax] = o.xDomain[0] === o.xDomain[1] ? [o.xDomain[0] - 1, o.xDomain[1] + 1] : o.xDomain;
  const xOf = (step) => x0 + ((step - sMin) / (sMax - sMin)) * (x1 - x0);

  const finite = [];
  for (const s of o.series) for (const v of s.values) if (v !== null && Number.isFinite(v)) finite.push(v);
  const log = o.log && finite.length > 0 && finite.every((v) => v > 0);
  const scale = yScale(finite, log, y0, y1);

  const root = svg("svg", { class: "panel", width, height, viewBox: `0 0 ${width} ${height}`,
    "data-panel": o.title, "data-scale": log ? "log" : "linear", role: "img", "aria-label": `${o.title} over steps` });
  root.append(svg("rect", { class: "frame", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));

  for (const t of scale.ticks) {
    const y = scale.y(t);
    root.append(svg("line", { class: "grid", x1: x0, x2: x1, y1: y, y2: y }),
      svg("text", { class: "tick", x: x0 - 6, y: y + 4, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of niceTicks(sMin, sMax, 6)) {
    if (t < sMin || t > sMax || !Number.isInteger(t)) continue;
    root.append(svg("text", { class: "tick", x: xOf(t), y: y0 + 16, "text-anchor": "middle" }, fmt(t)));
  }
  const scaleNote = o.log && !log && finite.length ? " (linear: values <= 0)" : log ? " (log)" : "";
  root.append(svg("text", { class: "title", x: x0, y: 14 }, o.title + scaleNote));

  // the lines, broken at every non-finite value
  const bad = new Map();   // step -> "loss NaN, grad_norm Infinity"
  o.series.forEach((s, i) => {
    let d = "";
    let pen = "M";
    let points = 0;
    for (let k = 0; k < s.steps.length; k++) {
      const v = s.values[k];
      if (v === null) continue;
      if (!Number.isFinite(v)) {
        const step = s.steps[k];
        bad.set(step, (bad.has(step) ? bad.get(step) + ", " : "") + `${s.name} ${v}`);
        pen = "M";
        continue;
      }
      d += `${pen}${xOf(s.steps[k]).toFixed(1)} ${scale.y(v).toFixed(1)}`;
      pen = "L";
      points++;
    }
    root.append(svg("path", { class: `line series-${i}`, d: d || "M0 0", "data-series": s.name, "data-points": points }));
    if (o.series.length > 1) {
      root.append(svg("text", { class: `legend series-${i}`, x: x1 - 4, y: y1 + 14 + 14 * i, "text-anchor": "end" }, s.name));
    }
  });
  if (!finite.length) {
    root.append(svg("text", { class: "empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle" },
      bad.size ? "no finite value" : "not logged"));
  }

  for (const [step, what] of bad) {
    const x = xOf(step);
    root.append(svg("path", { class: "nan-mark", d: `M${x - 4} ${y1 - 7}L${x + 4} ${y1 - 7}L${x} ${y1}Z`, "data-step": step },
      svg("title", {}, `step ${step}: ${what}`)));
  }

  for (const a of o.alerts) {
    if (a.step < sMin || a.step > sMax) continue;
    const x = xOf(a.step);
    const advice = a.action && a.action.reason ? a.action.reason : "";
    const g = svg("g", { class: `alert-mark ${a.severity}`, "data-alert-id": a.id, "data-kind": a.kind,
      "data-message": a.message, "data-step": a.step },
    svg("title", {}, `${a.severity} ${a.kind} at step ${a.step}: ${a.message}` +
      (advice ? `\nAdvice: ${actionText(a.action)}: ${advice}` : "")),
    svg("line", { x1: x, x2: x, y1: y1, y2: y0 }),
    svg("circle", { cx: x, cy: y1 + 6, r: 5 }));
    root.append(g);
  }

  for (const r of o.actions) {
    if (r.step < sMin || r.step > sMax) continue;
    const x = xOf(r.step);
    const outcome = r.dry_run ? "dry run" : r.applied ? "applied" : "not applied";
    root.append(svg("rect", { class: `action-mark ${r.dry_run ? "dry" : ""}`, x: x - 4, y: y0 - 9, width: 8, height: 8,
      "data-step": r.step, "data-type": r.action.type },
    svg("title", {}, `step ${r.step}: ${actionText(r.action)} (${outcome})${r.action.reason ? ": " + r.action.reason : ""}`)));
  }

  hover(root, o.series, xOf, { x0, x1, y1, y0 }, sMin, sMax);
  return root;
}

/** y mapping and ticks; log: log10 space padded a little, ticks at powers of ten (or 1-2-5
 * when fewer than three fall inside, plus the data's extremes when that still leaves one). */
function yScale(values, log, y0, y1) {
  if (!values.length) return { y: () => (y0 + y1) / 2, ticks: [] };
  let lo = Math.min(...values), hi = Math.max(...values);
  if (log) {
    let a = Math.log10(lo), b = Math.log10(hi);
    const pad = Math.max((b - a) * 0.05, 0.05);
    a -= pad;
    b += pad;
    const y = (v) => y0 - ((Math.log10(v) - a) / (b - a)) * (y0 - y1);
    const ticks = [];
    for (let e = Math.ceil(a); e <= Math.floor(b); e++) ticks.push(10 ** e);
    if (ticks.length < 3) {
      ticks.length = 0;
      for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
        for (const m of [1, 2, 5]) {
          const t = m * 10 ** e;
          if (Math.log10(t) >= a && Math.log10(t) <= b) ticks.push(t);
        }
      }
    }
    // a narrow range (a constant LR): label the data's own lowest and highest values
    if (ticks.length < 2) ticks.push(...new Set([lo, hi]));
    return { y, ticks };
  }
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 || 1;
    hi += Math.abs(hi) * 0.1 || 1;
  }
  const pad = (hi - lo) * 0.05;
  lo -= pad;
  hi += pad;
  const y = (v) => y0 - ((v - lo) / (hi - lo)) * (y0 - y1);
  return { y, ticks: niceTicks(lo, hi, 5).filter((t) => t >= lo && t <= hi) };
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

/** A vertical rule and the values at the nearest plotted step under the pointer. */
function hover(root, series, xOf, box, sMin, sMax) {
  const steps = series.length ? series[0].steps : [];
  if (!steps.length) return;
  const rule = svg("line", { class: "hover", y1: box.y1, y2: box.y0, visibility: "hidden" });
  const label = svg("text", { class: "readout", x: box.x1 - 4, y: box.y0 - 14, "text-anchor": "end" });
  root.append(rule, label);
  root.addEventListener("mousemove", (e) => {
    const r = root.getBoundingClientRect();
    const step = sMin + ((e.clientX - r.left - box.x0) / (box.x1 - box.x0)) * (sMax - sMin);
    let lo = 0, hi = steps.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (steps[mid] < step) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && step - steps[lo - 1] < steps[lo] - step) lo--;
    const x = xOf(steps[lo]);
    rule.setAttribute("x1", x);
    rule.setAttribute("x2", x);
    rule.setAttribute("visibility", "visible");
    label.textContent = `step ${steps[lo]}: ` + series.map((s) => `${s.name} ${fmt(s.values[lo])}`).join(", ");
  });
  root.addEventListener("mouseleave", () => {
    rule.setAttribute("visibility", "hidden");
    label.textContent = "";
  });
}
