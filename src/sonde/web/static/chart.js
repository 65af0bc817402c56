// Line charts drawn by uPlot (vendor/uplot, MIT; docs/dashboard.md). Hovering shows every
// series' value at that time in the legend. The figure keeps its uPlot instance
// (`figure.uplot`) with the values it was given, so tests read exactly what is drawn.

import uPlot from "./vendor/uplot/uPlot.esm.js";
import {h} from "./dom.js";
import {axisTime, dateTime, formatValue} from "./format.js";

const HEIGHT = 210;
const WIDTH = 560; // until the card is laid out; then the card's width
const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
const BY_CLASS = {"st-2xx": "#16a34a", "st-3xx": "#0891b2", "st-4xx": "#d97706", "st-5xx": "#dc2626"};

/** What hovering a point says: series, time, value. */
export function pointText(label, t, v, unit) {
  return `${label} · ${dateTime(t)} · ${formatValue(v, unit)}`;
}

/**
 * series: [{key, label, cls, points: [[t_ms, value|null], ...]}]; start/end/step in ms;
 * until: when the data was asked for, where the window reaches past it (the figure's
 * data-until). onStep(startMs, endMs), when given, is called when a step is clicked.
 * Returns a <figure> holding the chart and its legend.
 */
export function lineChart({id, title, unit, caption, series, start, end, step, until, onStep}) {
  // uPlot takes one time axis: the union of the series' times, a gap where one has none
  const times = [...new Set(series.flatMap((sr) => sr.points.map((p) => p[0])))].sort((a, b) => a - b);
  const empty = !series.some((sr) => sr.points.some((p) => p[1] !== null));
  const plot = h("div", {class: "plot"});
  const figure = h("figure", {class: "chart-card", "data-chart": id, "data-unit": unit, "data-start": start,
    "data-end": end, "data-step": step, "data-until": until, "data-empty": String(empty)},
  h("figcaption", {}, h("span", {class: "chart-title", text: title}), h("span", {class: "chart-unit", text: caption})),
  plot, empty ? h("p", {class: "empty", text: "No data in this window"}) : null);

  // uPlot paints on a canvas, which CSS cannot reach: the axes take the palette's colours
  // (light or dark) from the stylesheet's variables when drawn.
  const css = getComputedStyle(document.documentElement);
  const muted = css.getPropertyValue("--muted").trim() || "#475569";
  const grid = {stroke: css.getPropertyValue("--line").trim() || "#dde2e8", width: 1};
  const opts = {
    width: WIDTH,
    height: HEIGHT,
    scales: {x: {time: true, range: () => [start / 1000, end / 1000]},
      y: {range: (u, lo, hi) => [Math.min(0, lo ?? 0), Math.max(hi ?? 1, Math.min(0, lo ?? 0) + 1e-9)]}},
    axes: [
      {values: (u, ticks) => ticks.map((t) => axisTime(t * 1000, end - start)), stroke: muted, grid, ticks: grid},
      // as wide as its longest label ("0.15 cores"), measured in characters of the 12px font
      {values: (u, ticks) => ticks.map((v) => formatValue(v, unit)), stroke: muted, grid, ticks: grid,
        size: (u, values) => 24 + 7 * Math.max(4, ...(values || []).map((v) => String(v).length))},
    ],
    cursor: {points: {size: 7}},
    legend: {live: true},
    series: [
      {label: "time", value: (u, t) => (t == null ? "–" : dateTime(t * 1000))},
      ...series.map((sr, i) => ({
        label: sr.label,
        stroke: BY_CLASS[sr.cls] || PALETTE[i % PALETTE.length],
        width: 1.5,
        spanGaps: false, // a step without data is a gap, not a zero
        points: {show: true, size: 5},
        value: (u, v) => (v == null ? "–" : formatValue(v, unit)),
      })),
    ],
  };
  const data = [times.map((t) => t / 1000), ...series.map((sr) => {
    const at = new Map(sr.points);
    return times.map((t) => (at.has(t) ? at.get(t) : null));
  })];
  const u = new uPlot(opts, data, plot);
  figure.uplot = u;
  figure.seriesKeys = series.map((sr) => sr.key);
  figure.pointText = (k, t, v) => pointText(series[k].label, t, v, unit);
  if (onStep && step > 0) {
    plot.classList.add("steps");
    plot.title = "Click a step to list its slowest requests";
    u.over.addEventListener("click", () => {
      if (u.cursor.left == null || u.cursor.left < 0) return;
      const t = u.posToVal(u.cursor.left, "x") * 1000;
      const a = start + Math.floor((t - start) / step) * step;
      if (a >= start && a < end) onStep(a, Math.min(a + step, end));
    });
  }
  // Fill the card's width, and follow it when the window resizes.
  new ResizeObserver(() => {
    const w = plot.clientWidth;
    if (w > 0 && w !== u.width) u.setSize({width: w, height: HEIGHT});
  }).observe(plot);
  return figure;
}
