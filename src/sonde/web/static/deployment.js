// One deployment: its record, a window picker, SERIES charts refreshed every 10 s, and
// its logs.

import {api, deploymentPath, enc} from "./api.js";
import {lineChart} from "./chart.js";
import {errorBox, h, showError} from "./dom.js";
import {clock} from "./format.js";
import {logViewer} from "./logs.js";
import {rangePicker} from "./range.js";
import {requestsPanel} from "./requests.js";

const REFRESH_MS = 10_000;


const LATENCY = {"0.5": "p50", "0.95": "p95", "0.99": "p99"};
const byReplica = (ls) => ls.replica ?? "(no replica)";
const byGpu = (ls) => (ls.gpu === undefined ? byReplica(ls) : `${byReplica(ls)} GPU ${ls.gpu}`);

// Each chart draws series from one or more metrics of the one SERIES response. `rate`
// divides a counter's per-step increase by the step's length (CPU seconds -> cores).
const CHARTS = [
  {id: "requests", title: "Requests", unit: "count", caption: "per step, by status class",
    parts: [{metric: "baseten_inference_requests_total", label: (ls) => ls.status, cls: (ls) => `st-${ls.status}`}]},
  {id: "latency", title: "End-to-end latency", unit: "seconds", caption: "p50, p95, p99",
    parts: [{metric: "baseten_end_to_end_response_time_seconds", label: (ls) => LATENCY[ls.quantile] ?? null}]},
  {id: "replicas", title: "Replicas", unit: "count", caption: "active and starting",
    parts: [{metric: "baseten_replicas_active", label: () => "active"},
      {metric: "baseten_replicas_starting", label: () => "starting"}]},
  {id: "cpu", title: "CPU", unit: "cores", caption: "cores in use, per replica",
    parts: [{metric: "baseten_container_cpu_usage_seconds_total", label: byReplica, rate: true}]},
  {id: "memory", title: "Memory", unit: "bytes", caption: "working set, per replica",
    parts: [{metric: "baseten_container_cpu_memory_working_set_bytes", label: byReplica}]},
  {id: "gpu-utilization", title: "GPU utilisation", unit: "ratio", caption: "per replica and GPU", gpu: true,
    parts: [{metric: "baseten_gpu_utilization", label: byGpu}]},
  {id: "gpu-memory", title: "GPU memory", unit: "mib", caption: "used, per replica and GPU", gpu: true,
    parts: [{metric: "baseten_gpu_memory_used", label: byGpu}]},
  // LLM panels: drawn wherever a model server reports them (vLLM, SGLang, TGI pages, or
  // the GenAI conventions; docs/model-servers.md), left out silently elsewhere
  {id: "ttft", title: "Time to first token", unit: "seconds", caption: "p50, p95, p99", llm: true,
    parts: [{metric: "sonde_llm_time_to_first_token_seconds", label: (ls) => LATENCY[ls.quantile] ?? null}]},
  {id: "tpot", title: "Time per output token", unit: "seconds", caption: "p50, p95, p99", llm: true,
    parts: [{metric: "sonde_llm_time_per_output_token_seconds", label: (ls) => LATENCY[ls.quantile] ?? null}]},
  {id: "tokens", title: "Output tokens", unit: "per_s", caption: "tokens per second, per replica", llm: true,
    parts: [{metric: "baseten_llm_output_tokens_total", label: byReplica, rate: true}]},
  {id: "kv-cache", title: "KV cache", unit: "ratio", caption: "in use, per replica", llm: true,
    parts: [{metric: "sonde_llm_kv_cache_usage_ratio", label: byReplica}]},
  {id: "queue", title: "Queue", unit: "count", caption: "requests running and waiting", llm: true,
    parts: [{metric: "baseten_llm_num_requests", label: () => "running"},
      {metric: "sonde_llm_requests_waiting", label: () => "waiting"}]},
];
const METRICS = CHARTS.flatMap((c) => c.parts.map((p) => p.metric));

function labelKey(ls) {
  return Object.entries(ls).map(([k, v]) => `${k}=${v}`).join(",");
}

/** The chart's series from a GetDeploymentMetricsResponseV1 asked at `now`; series with
 * no value in the window are left out. */
function seriesFor(chart, resp, now) {
  const stepMs = resp.step_seconds * 1000;
  const out = [];
  for (const part of chart.parts) {
    const i = resp.metric_descriptors.findIndex((d) => d.name === part.metric);
    if (i < 0) continue;
    resp.metric_descriptors[i].label_sets.forEach((ls, j) => {
      const label = part.label(ls);
      if (label === null) return;
      const points = resp.metric_values.map((mv) => {
        // A step's point sits mid-step. The last step may end early, at the window's end,
        // and a step still filling holds the time up to now: a rate divides by that.
        const elapsed = now > mv.start_epoch_millis ? now - mv.start_epoch_millis : stepMs;
        const len = Math.min(stepMs, resp.end_epoch_millis - mv.start_epoch_millis, elapsed);
        let v = mv.values[i][j];
        if (v !== null && part.rate) v /= len / 1000;
        return [mv.start_epoch_millis + len / 2, v];
      });
      if (!points.some((p) => p[1] !== null)) return;
      const key = labelKey(ls);
      out.push({key: key ? `${part.metric}{${key}}` : part.metric, label,
        cls: part.cls ? part.cls(ls) : undefined, points});
    });
  }
  return out;
}

function stepText(seconds) {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}

function detail(label, value) {
  return h("div", {class: "detail"}, h("dt", {text: label}), h("dd", {}, value ?? "–"));
}

export function deploymentView(model, deployment, params) {
  const base = deploymentPath(model, deployment);
  let timer = null;
  let generation = 0;

  const title = h("h1", {}, deployment);
  const details = h("dl", {class: "details"});
  const error = errorBox();
  const picker = rangePicker(params, (w) => {
    // a fixed range does not move: nothing new to refresh
    if (w.id === "custom") auto.checked = false;
    schedule();
    refresh();
    logs.reload();
  }, error);
  const auto = h("input", {type: "checkbox", id: "auto-refresh", checked: true, onchange: () => schedule()});
  if (picker.win().id === "custom") auto.checked = false;
  const updated = h("p", {class: "updated", "aria-live": "polite"});
  const charts = h("div", {class: "charts", "data-loads": "0", "aria-busy": "true"});
  const logs = logViewer(`${base}/logs`, picker.range, {params});
  const requests = requestsPanel(base);
  const el = h("div", {class: "deployment-view"},
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"},
      h("a", {href: "#/"}, "Models"), " / ", h("span", {text: model}), " / ", h("span", {text: deployment})),
    title, details,
    h("div", {class: "toolbar"}, picker.el,
      h("label", {class: "toggle", for: "auto-refresh"}, auto, "Auto refresh every 10 s"), updated),
    error, charts, requests.el, logs.el);

  function showDeployment(d) {
    title.textContent = d.name && d.name !== d.id ? `${d.name} (${d.id})` : d.id;
    details.replaceChildren(
      detail("Status", d.status),
      // an environment's logs span every deployment that sent it
      detail("Environment", d.environment ? h("a", {href: `#/models/${enc(model)}/environments/${enc(d.environment)}`,
        text: d.environment}) : null),
      detail("Active replicas", String(d.active_replica_count)), detail("Instance type", d.instance_type_name),
      detail("Production", d.is_production ? "yes" : "no"));
  }

  function showCharts(resp, now) {
    const gpuless = [];
    const blank = [];
    const figures = [];
    for (const chart of CHARTS) {
      const series = seriesFor(chart, resp, now);
      // Empty axes would push the charts that have data down the page (an LLM server
      // reporting no HTTP metrics): one line names what is missing instead.
      if (!series.length) {
        if (chart.gpu) gpuless.push(chart.title);
        else if (!chart.llm) blank.push(chart.title);
        continue;
      }
      figures.push(lineChart({id: chart.id, title: chart.title, unit: chart.unit,
        caption: `${chart.caption} · ${stepText(resp.step_seconds)} steps`, series,
        start: resp.start_epoch_millis, end: resp.end_epoch_millis, step: resp.step_seconds * 1000, until: now,
        onStep: chart.id === "latency" ? requests.showStep : undefined}));
    }
    if (blank.length) figures.push(h("p", {class: "note blank"}, `No data in this window: ${blank.join(", ")}.`));
    if (gpuless.length) figures.push(h("p", {class: "note gpu"}, `No GPU telemetry in this window (${gpuless.join(", ")}).`));
    charts.replaceChildren(...figures);
  }

  async function refresh() {
    const g = ++generation;
    const now = Date.now();
    const {start, end} = picker.steps(now);
    charts.setAttribute("aria-busy", "true");
    try {
      const [d, resp] = await Promise.all([
        api(base),
        api(`${base}/metrics`, {mode: "SERIES", start_epoch_millis: start, end_epoch_millis: end,
          metrics: METRICS.join(",")}),
      ]);
      if (g !== generation) return;
      showDeployment(d);
      showCharts(resp, now);
      showError(error, null);
      updated.textContent = `Updated ${clock(Date.now(), true)}`;
    } catch (err) {
      if (g !== generation) return;
      showError(error, err);
    }
    charts.setAttribute("aria-busy", "false");
    charts.dataset.loads = String(Number(charts.dataset.loads) + 1);
  }

  function schedule() {
    clearInterval(timer);
    timer = auto.checked ? setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS) : null;
  }

  refresh();
  logs.reload();
  schedule();
  return {el, dispose: () => { clearInterval(timer); generation += 1; logs.stop(); }};
}
