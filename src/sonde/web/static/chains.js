// Chains: every chain with its deployments and their chainlets (status, active replicas,
// instance type); a chainlet's page shows its record, the replicas its logs name, and
// its logs with every filter.

import {api, enc} from "./api.js";
import {h} from "./dom.js";
import {details, named, page, statusBadge, table, windowedView} from "./pages.js";

function chainletRow(c, d, cl) {
  const href = `#/chains/${enc(c.id)}/deployments/${enc(d.id)}/chainlets/${enc(cl.id)}`;
  return h("tr", {"data-chainlet": cl.id},
    h("th", {scope: "row"}, h("a", {href, text: named(cl)})),
    h("td", {}, statusBadge(cl.status)), h("td", {class: "num", text: String(cl.active_replica_count)}),
    h("td", {text: cl.instance_type_name || "–"}));
}

function chainDeployment(c, d) {
  return h("div", {class: "chain-deployment", "data-chain-deployment": d.id},
    h("h3", {}, `Deployment ${d.id} `, statusBadge(d.status)),
    table(["Chainlet", "Status", "Active replicas", "Instance type"], d.chainlets.map((cl) => chainletRow(c, d, cl))));
}

export function chainsView() {
  const {el, run} = page([], "Chains", async (body) => {
    const {chains} = await api("/v1/chains");
    const lists = await Promise.all(chains.map((c) => api(`/v1/chains/${enc(c.id)}/deployments`)));
    body.replaceChildren(...(chains.length
      ? chains.map((c, i) => h("section", {class: "model", "data-chain": c.id}, h("h2", {text: named(c)}),
        ...lists[i].deployments.map((d) => chainDeployment(c, d))))
      : [h("p", {class: "note"}, "No chains yet.")]));
  });
  run();
  return {el, dispose() {}};
}

export function chainletView(chain, deployment, chainlet, params) {
  const base = `/v1/chains/${enc(chain)}/deployments/${enc(deployment)}`;
  const path = `${base}/chainlets/${enc(chainlet)}/logs`;
  return windowedView([h("a", {href: "#/chains"}, "Chains"), ` / ${chain} / ${deployment} / `,
    h("span", {text: chainlet})], chainlet, params, path, async (body, charts, start, end) => {
    const [d, sample] = await Promise.all([api(base),
      // The API has no replica list of a chainlet: the replicas its newest lines name.
      api(path, {start_epoch_millis: start, end_epoch_millis: end, limit: 1000})]);
    const cl = (d.deployment || d).chainlets.find((c) => c.id === chainlet);
    const replicas = [...new Set(sample.logs.map((ln) => ln.replica).filter(Boolean))].sort();
    body.replaceChildren(details([["Status", cl ? cl.status : "–"],
      ["Active replicas", cl ? String(cl.active_replica_count) : "–"],
      ["Instance type", (cl && cl.instance_type_name) || "–"],
      ["Replicas in its logs", replicas.length ? replicas.join(", ") : "none in this window"]]));
    charts.replaceChildren();
  });
}
