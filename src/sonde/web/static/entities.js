// Pages of the entities beside models: training projects and jobs, chains with their
// chainlets, trainer (loops) deployments. Each reads the API's own routes and draws the
// per-node compute of jobs and trainers the same way (nodeCharts), with the log viewer
// (and its live tail) on the entity's logs route.

import {api, enc} from "./api.js";
import {lineChart} from "./chart.js";
import {errorBox, h, showError} from "./dom.js";
import {logViewer} from "./logs.js";
import {WINDOWS} from "./windows.js";

const at = (iso) => Date.parse(iso);
const pts = (points) => (points || []).map((p) => [at(p.timestamp), p.value]);

/** A window picker of the presets; onPick(window) when one is chosen. */
function presetPicker(win, onPick) {
  return h("fieldset", {class: "window-picker"}, h("legend", {}, "Window: last"),
    WINDOWS.map((w) => h("label", {},
      h("input", {type: "radio", name: "window", value: w.id, checked: w === win, onchange: () => onPick(w)}),
      h("span", {text: w.label}))));
}

/** Per-node charts of a job's or trainer's nodes: [{node_id, gpu_utilization: {gpu: pts},
 * cpu_usage, cpu_memory_usage_bytes, ephemeral_storage: {usage_bytes}}]. */
function nodeCharts(nodes, start, end, stepMs, cache) {
  const specs = [
    {id: "gpu-utilization", title: "GPU utilisation", unit: "ratio", caption: "per node and GPU",
      series: nodes.flatMap((n) => Object.entries(n.gpu_utilization || {}).map(([g, p]) =>
        ({key: `${n.node_id}/${g}`, label: `${n.node_id} GPU ${g}`, points: pts(p)})))},
    {id: "gpu-memory", title: "GPU memory", unit: "bytes", caption: "used, per node and GPU",
      series: nodes.flatMap((n) => Object.entries(n.gpu_memory_usage_bytes || {}).map(([g, p]) =>
        ({key: `${n.node_id}/${g}`, label: `${n.node_id} GPU ${g}`, points: pts(p)})))},
    {id: "cpu", title: "CPU", unit: "cores", caption: "cores in use, per node",
      series: nodes.map((n) => ({key: n.node_id, label: n.node_id, points: pts(n.cpu_usage)}))},
    {id: "memory", title: "Memory", unit: "bytes", caption: "per node",
      series: nodes.map((n) => ({key: n.node_id, label: n.node_id, points: pts(n.cpu_memory_usage_bytes)}))},
    {id: "ephemeral", title: "Ephemeral storage", unit: "bytes", caption: "used, per node",
      series: nodes.map((n) => ({key: n.node_id, label: n.node_id,
        points: pts((n.ephemeral_storage || {}).usage_bytes)}))},
  ];
  if (cache) {
    specs.push({id: "cache", title: "Cache", unit: "bytes", caption: "used, the job's cache mount",
      series: [{key: "cache", label: "cache", points: pts(cache.usage_bytes)}]});
  }
  return specs
    .map((c) => ({...c, series: c.series.filter((sr) => sr.points.length)}))
    .filter((c) => c.series.length)
    .map((c) => lineChart({...c, start, end, step: stepMs}));
}

function table(columns, rows) {
  return h("table", {class: "deployments"},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col", text: c})))),
    h("tbody", {}, rows));
}

/** The frame every entity page shares: breadcrumb, title, error box, and a body that
 * load() fills; `charts` pages refresh with the window picker. */
function page(crumbs, heading, load) {
  const error = errorBox();
  const body = h("div", {class: "entity-body", "data-loads": "0"});
  const el = h("div", {class: "entity-view"},
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"}, ...crumbs), h("h1", {text: heading}), error, body);
  const run = async () => {
    try {
      await load(body);
      showError(error, null);
    } catch (err) {
      showError(error, err);
    }
    body.dataset.loads = String(Number(body.dataset.loads) + 1);
  };
  run();
  return {el, run};
}

export function trainingView() {
  const {el} = page([], "Training", async (body) => {
    const {training_projects: projects} = await api("/v1/training_projects");
    const lists = await Promise.all(projects.map((p) => api(`/v1/training_projects/${enc(p.id)}/jobs`)));
    body.replaceChildren(...(projects.length ? projects.map((p, i) => h("section", {class: "model", "data-project": p.id},
      h("h2", {text: p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id}),
      table(["Job", "Status", "Error", "Created"], lists[i].training_jobs.map((j) => h("tr", {"data-job": j.id},
        h("th", {scope: "row"}, h("a", {href: `#/training/${enc(p.id)}/jobs/${enc(j.id)}`, text: j.id})),
        h("td", {}, h("span", {class: `status status-${j.current_status.toLowerCase()}`, text: j.current_status})),
        h("td", {text: j.error_message || ""}), h("td", {text: j.created_at}))))))
      : [h("p", {class: "note"}, "No training projects yet.")]));
  });
  return {el, dispose() {}};
}

/** A view with a window: charts redrawn on a window change, logs below. */
function windowedView(crumbs, heading, params, logsPath, draw) {
  let win = WINDOWS.find((w) => w.id === params.get("window")) || WINDOWS[1];
  const range = () => {
    const end = Date.now();
    return {start: end - win.ms, end};
  };
  const charts = h("div", {class: "charts", "data-loads": "0"});
  const logs = logViewer(logsPath, range, {lineFilters: false});
  const {el, run} = page(crumbs, heading, async (body) => {
    const {start, end} = range();
    await draw(body, charts, start, end);
  });
  const picker = presetPicker(win, (w) => {
    win = w;
    history.replaceState(null, "", `${location.hash.split("?")[0]}?window=${w.id}`);
    run();
    logs.reload();
  });
  el.insertBefore(h("div", {class: "toolbar"}, picker), el.querySelector(".entity-body"));
  el.append(charts, logs.el);
  logs.reload();
  return {el, dispose: () => logs.stop()};
}

export function jobView(project, job, params) {
  const base = `/v1/training_projects/${enc(project)}/jobs/${enc(job)}`;
  return windowedView([h("a", {href: "#/training"}, "Training"), ` / ${project} / `, h("span", {text: job})],
    job, params, `${base}/logs`, async (body, charts, start, end) => {
      const m = await api(`${base}/metrics`, {start_epoch_millis: start, end_epoch_millis: end});
      const j = m.training_job;
      body.replaceChildren(h("dl", {class: "details"},
        ...[["Status", j.current_status], ["Error", j.error_message || "–"], ["Instance type", j.instance_type.name],
          ["Nodes", String(m.per_node_metrics.length)]].map(([k, v]) =>
          h("div", {class: "detail"}, h("dt", {text: k}), h("dd", {text: v})))));
      const nodes = m.per_node_metrics.map((n) => ({node_id: n.node_id, ...n.metrics}));
      const figures = nodeCharts(nodes, start, end, 0, m.cache);
      charts.replaceChildren(...(figures.length ? figures : [h("p", {class: "note"}, "No telemetry in this window.")]));
      charts.dataset.loads = String(Number(charts.dataset.loads) + 1);
    });
}

const named = (x) => (x.name && x.name !== x.id ? `${x.name} (${x.id})` : x.id);

function chainletRow(c, d, cl) {
  const href = `#/chains/${enc(c.id)}/deployments/${enc(d.id)}/chainlets/${enc(cl.id)}`;
  return h("tr", {"data-chainlet": cl.id},
    h("th", {scope: "row"}, h("a", {href, text: named(cl)})),
    h("td", {text: cl.status}), h("td", {class: "num", text: String(cl.active_replica_count)}),
    h("td", {text: cl.instance_type_name || "–"}));
}

function chainDeployment(c, d) {
  return h("div", {class: "chain-deployment", "data-chain-deployment": d.id},
    h("h3", {}, `Deployment ${d.id} `, h("span", {class: `status status-${d.status.toLowerCase()}`, text: d.status})),
    table(["Chainlet", "Status", "Active replicas", "Instance type"], d.chainlets.map((cl) => chainletRow(c, d, cl))));
}

export function chainsView() {
  const {el} = page([], "Chains", async (body) => {
    const {chains} = await api("/v1/chains");
    const lists = await Promise.all(chains.map((c) => api(`/v1/chains/${enc(c.id)}/deployments`)));
    body.replaceChildren(...(chains.length
      ? chains.map((c, i) => h("section", {class: "model", "data-chain": c.id}, h("h2", {text: named(c)}),
        ...lists[i].deployments.map((d) => chainDeployment(c, d))))
      : [h("p", {class: "note"}, "No chains yet.")]));
  });
  return {el, dispose() {}};
}

export function chainletView(chain, deployment, chainlet) {
  const path = `/v1/chains/${enc(chain)}/deployments/${enc(deployment)}/chainlets/${enc(chainlet)}/logs`;
  const logs = logViewer(path, () => ({start: Date.now() - 3600e3, end: Date.now()}));
  const {el} = page([h("a", {href: "#/chains"}, "Chains"), ` / ${chain} / ${deployment} / `,
    h("span", {text: chainlet})], chainlet, async (body) => {
    const d = await api(`/v1/chains/${enc(chain)}/deployments/${enc(deployment)}`);
    const cl = (d.deployment || d).chainlets.find((c) => c.id === chainlet);
    body.replaceChildren(h("dl", {class: "details"},
      ...[["Status", cl ? cl.status : "–"], ["Active replicas", cl ? String(cl.active_replica_count) : "–"],
        ["Instance type", (cl && cl.instance_type_name) || "–"]].map(([k, v]) =>
        h("div", {class: "detail"}, h("dt", {text: k}), h("dd", {text: v})))));
  });
  el.append(logs.el);
  logs.reload();
  return {el, dispose: () => logs.stop()};
}

export function loopsListView() {
  const {el} = page([], "Trainers (loops)", async (body) => {
    const {deployments} = await api("/v1/loops/deployments");
    body.replaceChildren(deployments.length
      ? table(["Deployment", "Status", "Created"], deployments.map((d) => h("tr", {"data-loops": d.id},
        h("th", {scope: "row"}, h("a", {href: `#/loops/${enc(d.id)}`, text: d.id})),
        h("td", {text: d.status || "–"}), h("td", {text: d.created_at || "–"}))))
      : h("p", {class: "note"}, "No trainer deployments yet."));
  });
  return {el, dispose() {}};
}

export function loopsView(id, params) {
  const base = `/v1/loops/deployments/${enc(id)}`;
  return windowedView([h("a", {href: "#/loops"}, "Trainers"), " / ", h("span", {text: id})], id, params,
    `${base}/logs`, async (body, charts, start, end) => {
      const m = (await api(`${base}/metrics`, {}, {method: "POST",
        body: {start_epoch_millis: start, end_epoch_millis: end}})).metrics;
      body.replaceChildren();
      const service = [
        lineChart({id: "requests", title: "Requests", unit: "count", caption: "per step, by status class", start, end,
          step: 0, series: ["2xx", "4xx", "5xx"].map((st) => ({key: st, label: st, cls: `st-${st}`,
            points: m.inference_volume_by_status.map((p) => [at(p.timestamp), p[`status_${st}`]])}))
            .filter((sr) => sr.points.some((p) => p[1]))}),
        lineChart({id: "latency", title: "Response time", unit: "ms", caption: "p50, p95, p99", start, end, step: 0,
          series: ["p50", "p95", "p99"].map((q) => ({key: q, label: q,
            points: m.response_time_stats.map((p) => [at(p.timestamp), p[q]])}))}),
      ];
      charts.replaceChildren(...service, ...nodeCharts(m.per_node_metrics, start, end, 0, null));
      charts.dataset.loads = String(Number(charts.dataset.loads) + 1);
    });
}
