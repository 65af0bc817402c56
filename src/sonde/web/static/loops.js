// Trainer (loops) deployments: the list, and one deployment's requests by status,
// response time and per-node compute from POST .../metrics, with its logs (their API
// filters by level only).

import {api, enc} from "./api.js";
import {lineChart} from "./chart.js";
import {h} from "./dom.js";
import {nodeCharts, page, pts, statusBadge, table, when, windowedView} from "./pages.js";

const at = (iso) => Date.parse(iso);

export function loopsListView() {
  const {el, run} = page([], "Trainers (loops)", async (body) => {
    const {deployments} = await api("/v1/loops/deployments");
    body.replaceChildren(deployments.length
      ? table(["Deployment", "Status", "Created"], deployments.map((d) => h("tr", {"data-loops": d.id},
        h("th", {scope: "row"}, h("a", {href: `#/loops/${enc(d.id)}`, text: d.id})),
        h("td", {}, d.status ? statusBadge(d.status) : "–"), h("td", {text: when(d.created_at)}))))
      : h("p", {class: "note"}, "No trainer deployments yet."));
  });
  run();
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
        // the API's volume is a rate: requests per time_divisor_seconds, 1 s by default
        lineChart({id: "requests", title: "Requests", unit: "per_s", caption: "per second, by status class", start, end,
          step: 0, series: ["2xx", "4xx", "5xx"].map((st) => ({key: st, label: st, cls: `st-${st}`,
            points: m.inference_volume_by_status.map((p) => [at(p.timestamp), p[`status_${st}`]])}))
            .filter((sr) => sr.points.some((p) => p[1]))}),
        lineChart({id: "latency", title: "Response time", unit: "ms", caption: "p50, p95, p99", start, end, step: 0,
          series: ["p50", "p95", "p99"].map((q) => ({key: q, label: q,
            points: m.response_time_stats.map((p) => [at(p.timestamp), p[q]])}))}),
        lineChart({id: "concurrent", title: "Concurrent requests", unit: "count", caption: "in flight", start, end,
          step: 0, series: [{key: "concurrent", label: "in flight", points: pts(m.concurrent_requests)}]}),
      ];
      charts.replaceChildren(...service, ...nodeCharts(m.per_node_metrics, start, end, null));
    }, {lineFilters: false});
}
