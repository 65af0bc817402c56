// What the entity pages share (training jobs, chains, trainers, environments): the page
// frame, tables, the windowed frame with its range picker and log viewer, and the
// per-node compute charts of jobs and trainers.

import {lineChart} from "./chart.js";
import {errorBox, h, showError} from "./dom.js";
import {dateTime} from "./format.js";
import {logViewer} from "./logs.js";
import {rangePicker} from "./range.js";

export const named = (x) => (x.name && x.name !== x.id ? `${x.name} (${x.id})` : x.id);
const at = (iso) => Date.parse(iso);
// the API's ISO instants, in the browser's time zone as every other time on the page
export const when = (iso) => (iso ? dateTime(Date.parse(iso)) : "–");
export const pts = (points) => (points || []).map((p) => [at(p.timestamp), p.value]);

export function table(columns, rows) {
  return h("table", {class: "deployments"},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col", text: c})))),
    h("tbody", {}, rows));
}

export function details(pairs) {
  return h("dl", {class: "details"}, ...pairs.map(([k, v]) =>
    h("div", {class: "detail"}, h("dt", {text: k}), h("dd", {text: v ?? "–"}))));
}

export function statusBadge(status) {
  return h("span", {class: `status status-${String(status).toLowerCase()}`, text: status});
}

/** The frame every entity page shares: breadcrumb, title, error box, and a body that
 * load(stage) fills when run() is called. load draws into detached stand-ins, moved into
 * the page only if no later run started meanwhile: a slow answer for an old window never
 * replaces a newer one. data-loads counts the loads done (tests wait on it). Returns
 * {el, error, body, run}; `extra` are more containers staged the same way. */
export function page(crumbs, heading, load, extra = []) {
  const error = errorBox();
  const body = h("div", {class: "entity-body", "data-loads": "0"});
  const el = h("div", {class: "entity-view"},
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"}, ...crumbs), h("h1", {text: heading}), error, body);
  let generation = 0;
  const run = async () => {
    const g = ++generation;
    const targets = [body, ...extra];
    const stage = targets.map(() => h("div"));
    let failure = null;
    try {
      await load(...stage);
    } catch (err) {
      failure = err;
    }
    if (g !== generation) return;
    if (!failure) targets.forEach((t, i) => t.replaceChildren(...stage[i].childNodes));
    showError(error, failure);
    for (const t of targets) t.dataset.loads = String(Number(t.dataset.loads) + 1);
  };
  return {el, error, body, run};
}

/** A page with a window (presets or a custom range, in the address): draw(body, charts,
 * start, end) fills the record and the charts; the log viewer of `logsPath` follows the
 * same window. logOptions go to logViewer (lineFilters). */
export function windowedView(crumbs, heading, params, logsPath, draw, logOptions = {}) {
  const charts = h("div", {class: "charts", "data-loads": "0"});
  let picker = null;
  const {el, error, run} = page(crumbs, heading, async (body, staged) => {
    const {start, end} = picker.range();
    await draw(body, staged, start, end);
  }, [charts]);
  picker = rangePicker(params, () => { run(); logs.reload(); }, error);
  const logs = logViewer(logsPath, picker.range, {...logOptions, params});
  el.append(h("div", {class: "toolbar"}, picker.el), charts, logs.el);
  run();
  logs.reload();
  return {el, dispose: () => logs.stop()};
}

/** Per-node charts of a job's or trainer's nodes: [{node_id, gpu_utilization: {gpu: pts},
 * gpu_memory_usage_bytes, cpu_usage, cpu_memory_usage_bytes, ephemeral_storage:
 * {usage_bytes}}], and the job's cache mount when given. Charts with no points are left
 * out. */
export function nodeCharts(nodes, start, end, cache) {
  const perGpu = (field) => nodes.flatMap((n) => Object.entries(n[field] || {}).map(([g, p]) =>
    ({key: `${n.node_id}/${g}`, label: `${n.node_id} GPU ${g}`, points: pts(p)})));
  const perNode = (get) => nodes.map((n) => ({key: n.node_id, label: n.node_id, points: pts(get(n))}));
  const specs = [
    {id: "gpu-utilization", title: "GPU utilisation", unit: "ratio", caption: "per node and GPU",
      series: perGpu("gpu_utilization")},
    {id: "gpu-memory", title: "GPU memory", unit: "bytes", caption: "used, per node and GPU",
      series: perGpu("gpu_memory_usage_bytes")},
    {id: "cpu", title: "CPU", unit: "cores", caption: "cores in use, per node", series: perNode((n) => n.cpu_usage)},
    {id: "memory", title: "Memory", unit: "bytes", caption: "per node", series: perNode((n) => n.cpu_memory_usage_bytes)},
    {id: "ephemeral", title: "Ephemeral storage", unit: "bytes", caption: "used, per node",
      series: perNode((n) => (n.ephemeral_storage || {}).usage_bytes)},
  ];
  if (cache) {
    specs.push({id: "cache", title: "Cache", unit: "bytes", caption: "used, the job's cache mount",
      series: [{key: "cache", label: "cache", points: pts(cache.usage_bytes)}]});
  }
  return specs
    .map((c) => ({...c, series: c.series.filter((sr) => sr.points.length)}))
    .filter((c) => c.series.length)
    .map((c) => lineChart({...c, start, end, step: 0}));
}
