// Line charts as inline SVG. Every plotted value is also in the DOM (data-t and
// data-value on its point, a <title> tooltip), so people can hover and tests can read
// exactly what is drawn.

import {h, s} from "./dom.js";
import {axisTime, dateTime, formatValue} from "./format.js";

const W = 560;
const H = 210;
const M = {left: 64, right: 14, top: 12, bottom: 26};
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

/** About four round ticks from 0 (or the minimum, when negative) to at least max. */
function ticks(min, max, unit) {
  if (max <= min) max = min + 1;
  const span = max - min;
  const binary = unit === "bytes" || unit === "mib";
  const raw = span / 4;
  let step;
  if (binary && raw >= 1) {
    step = 2 ** Math.ceil(Math.log2(raw));
  } else {
    const mag = 10 ** Math.floor(Math.log10(raw));
    step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw);
  }
  const lo = Math.floor(min / step) * step;
  const out = [];
  for (let v = lo; v < max + step * 0.999; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function timeTicks(start, end) {
  const n = 5;
  return Array.from({length: n}, (_, i) => start + ((end - start) * (i + 0.5)) / n);
}

/**
 * series: [{key, label, cls, points: [[t_ms, value|null], ...]}]; start/end/step in ms.
 * onStep(startMs, endMs), when given, is called when a step is clicked.
 * Returns a <figure> holding the SVG and its legend.
 */
export function lineChart({id, title, unit, caption, series, start, end, step, onStep}) {
  const values = series.flatMap((sr) => sr.points.map((p) => p[1]).filter((v) => v !== null));
  const empty = values.length === 0;
  const ys = ticks(Math.min(0, ...values), Math.max(0, ...values), unit);
  const y0 = ys[0];
  const y1 = ys[ys.length - 1];
  const x = (t) => M.left + ((t - start) / (end - start)) * PW;
  const y = (v) => M.top + PH - ((v - y0) / (y1 - y0)) * PH;

  const svg = s("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${caption}`,
    "data-chart": id, "data-unit": unit, "data-start": start, "data-end": end, "data-step": step,
    "data-empty": String(empty),
  });
  const grid = s("g", {class: "grid"});
  for (const v of ys) {
    grid.append(
      s("line", {x1: M.left, x2: W - M.right, y1: y(v), y2: y(v)}),
      s("text", {class: "ylabel", x: M.left - 6, y: y(v) + 4}, formatValue(v, unit)),
    );
  }
  for (const t of timeTicks(start, end)) {
    grid.append(s("text", {class: "xlabel", x: x(t), y: H - 8}, axisTime(t, end - start)));
  }
  svg.append(grid);
  if (onStep && step > 0) {
    // one transparent band per step, under the series so their tooltips stay on top
    const hits = s("g", {class: "steps"});
    for (let a = start; a < end; a += step) {
      const b = Math.min(a + step, end);
      hits.append(s("rect", {class: "step-hit", x: x(a), y: M.top, width: Math.max(1, x(b) - x(a)), height: PH,
        "data-step-start": a, "data-step-end": b, onclick: () => onStep(a, b)},
      s("title", {}, `Requests from ${dateTime(a)}`)));
    }
    svg.append(hits);
  }
  if (empty) {
    svg.append(s("text", {class: "empty", x: M.left + PW / 2, y: M.top + PH / 2}, "No data in this window"));
  }
  series.forEach((sr, i) => {
    const g = s("g", {class: `series ${sr.cls || `s${i % 8}`}`, "data-key": sr.key, "data-label": sr.label});
    let d = "";
    let pen = false;
    const dots = [];
    for (const [t, v] of sr.points) {
      if (v === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      dots.push(s("circle", {class: "pt", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5,
        "data-t": t, "data-value": v},
      s("title", {}, `${sr.label} · ${dateTime(t)} · ${formatValue(v, unit)}`)));
    }
    if (d) g.append(s("path", {d}));
    g.append(...dots);
    svg.append(g);
  });

  const legend = h("ul", {class: "legend"}, series.map((sr, i) =>
    h("li", {class: sr.cls || `s${i % 8}`}, h("span", {class: "swatch", "aria-hidden": "true"}), sr.label)));
  return h("figure", {class: "chart-card", "data-chart": id},
    h("figcaption", {}, h("span", {class: "chart-title", text: title}), h("span", {class: "chart-unit", text: caption})),
    svg, series.length ? legend : null);
}
