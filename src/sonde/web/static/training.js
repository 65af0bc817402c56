// Training projects with their jobs, and one job: its record, per-node compute (GPU, CPU,
// memory, ephemeral storage, the cache mount) from GET .../jobs/{j}/metrics, and its logs.

import {api, enc} from "./api.js";
import {h} from "./dom.js";
import {details, named, nodeCharts, page, statusBadge, table, when, windowedView} from "./pages.js";

export function trainingView() {
  const {el, run} = page([], "Training", async (body) => {
    const {training_projects: projects} = await api("/v1/training_projects");
    const lists = await Promise.all(projects.map((p) => api(`/v1/training_projects/${enc(p.id)}/jobs`)));
    body.replaceChildren(...(projects.length
      ? projects.map((p, i) => h("section", {class: "model", "data-project": p.id}, h("h2", {text: named(p)}),
        table(["Job", "Status", "Error", "Created"], lists[i].training_jobs.map((j) => h("tr", {"data-job": j.id},
          h("th", {scope: "row"}, h("a", {href: `#/training/${enc(p.id)}/jobs/${enc(j.id)}`, text: j.id})),
          h("td", {}, statusBadge(j.current_status)),
          h("td", {text: j.error_message || ""}), h("td", {text: when(j.created_at)}))))))
      : [h("p", {class: "note"}, "No training projects yet.")]));
  });
  run();
  return {el, dispose() {}};
}

export function jobView(project, job, params) {
  const base = `/v1/training_projects/${enc(project)}/jobs/${enc(job)}`;
  return windowedView([h("a", {href: "#/training"}, "Training"), ` / ${project} / `, h("span", {text: job})],
    job, params, `${base}/logs`, async (body, charts, start, end) => {
      const m = await api(`${base}/metrics`, {start_epoch_millis: start, end_epoch_millis: end});
      const j = m.training_job;
      body.replaceChildren(details([["Status", j.current_status], ["Error", j.error_message || "–"],
        ["Instance type", j.instance_type.name], ["Nodes", String(m.per_node_metrics.length)]]));
      const nodes = m.per_node_metrics.map((n) => ({node_id: n.node_id, ...n.metrics}));
      const figures = nodeCharts(nodes, start, end, m.cache);
      charts.replaceChildren(...(figures.length ? figures : [h("p", {class: "note"}, "No telemetry in this window.")]));
    });
}
