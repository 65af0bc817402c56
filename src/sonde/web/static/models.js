// Models and their deployments: the dashboard's front page; and a model's environment,
// whose logs span every deployment that sent it (an environment has no record of its own).

import {api, enc} from "./api.js";
import {errorBox, h, showError} from "./dom.js";
import {windowedView} from "./pages.js";

const envHref = (model, env) => `#/models/${enc(model)}/environments/${enc(env)}`;

function deploymentRow(model, d) {
  const href = `#/models/${enc(model.id)}/deployments/${enc(d.id)}`;
  return h("tr", {"data-deployment": d.id},
    h("th", {scope: "row"}, h("a", {href}, d.name && d.name !== d.id ? `${d.name} (${d.id})` : d.id)),
    h("td", {}, h("span", {class: `status status-${String(d.status).toLowerCase()}`, text: d.status})),
    h("td", {}, d.environment ? h("a", {href: envHref(model.id, d.environment), text: d.environment}) : "–"),
    h("td", {class: "num", text: String(d.active_replica_count)}),
    h("td", {text: d.instance_type_name || "–"}),
    h("td", {text: d.id === model.production_deployment_id ? "production" : ""}));
}

function modelSection(model, deployments) {
  const name = model.name && model.name !== model.id ? `${model.name} (${model.id})` : model.id;
  const headingId = `model-${model.id}`;
  return h("section", {class: "model", "data-model": model.id, "aria-labelledby": headingId},
    h("h2", {id: headingId}, name,
      h("span", {class: "count", text: ` · ${model.deployments_count} deployment${model.deployments_count === 1 ? "" : "s"}`})),
    deployments.length
      ? h("table", {class: "deployments"},
        h("thead", {}, h("tr", {}, ["Deployment", "Status", "Environment", "Active replicas", "Instance type", ""]
          .map((c) => h("th", {scope: "col", text: c})))),
        h("tbody", {}, deployments.map((d) => deploymentRow(model, d))))
      : h("p", {class: "note"}, "No deployments."));
}

export function modelsView() {
  const error = errorBox();
  const body = h("div", {class: "models", "aria-busy": "true"}, h("p", {class: "note"}, "Loading…"));
  const el = h("div", {class: "models-view"}, h("h1", {}, "Models"), error, body);

  (async () => {
    try {
      const {models} = await api("/v1/models");
      const lists = await Promise.all(models.map((m) => api(`/v1/models/${enc(m.id)}/deployments`)));
      body.replaceChildren(...(models.length
        ? models.map((m, i) => modelSection(m, lists[i].deployments))
        : [h("p", {class: "note"}, "No models yet: they appear when telemetry or a PUT names them.")]));
    } catch (err) {
      body.replaceChildren();
      showError(error, err);
    }
    body.setAttribute("aria-busy", "false");
    el.dataset.state = "done";
  })();
  return {el, dispose() {}};
}

export function environmentView(model, env, params) {
  return windowedView([h("a", {href: "#/"}, "Models"), ` / ${model} / environment `, h("span", {text: env})],
    `${model} · ${env}`, params, `/v1/models/${enc(model)}/environments/${enc(env)}/logs`,
    async (body) => {
      const {deployments} = await api(`/v1/models/${enc(model)}/deployments`);
      const here = deployments.filter((d) => d.environment === env);
      body.replaceChildren(h("p", {class: "env-deployments"}, "Deployments in this environment: ",
        ...(here.length ? here.flatMap((d, i) => [i ? ", " : "",
          h("a", {href: `#/models/${enc(model)}/deployments/${enc(d.id)}`, text: d.id})]) : ["none now"])));
    });
}
