// Requests behind a latency step: clicking a step of the latency chart lists that step's
// slowest requests; clicking one shows its spans (a waterfall) and its log lines.

import {api, enc} from "./api.js";
import {errorBox, h, showError} from "./dom.js";
import {dateTime, logTime} from "./format.js";

const LIMIT = 10;

function seconds(s) {
  return s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1000).toFixed(1)} ms`;
}

function msOf(ns) {
  return Number(BigInt(ns) / 1000000n);
}

/** base: the deployment's API path. */
export function requestsPanel(base) {
  const title = h("h2", {id: "requests-title"}, "Requests");
  const hint = h("p", {class: "note", text: "Click a step of the latency chart to list its slowest requests."});
  const error = errorBox();
  const table = h("table", {class: "requests", hidden: true},
    h("thead", {}, h("tr", {}, ["Start", "Duration", "Status", "Route", "Replica", "Request ID", "Log lines"]
      .map((c) => h("th", {scope: "col", text: c})))),
    h("tbody"));
  const detail = h("div", {class: "request-detail", hidden: true});
  const el = h("section", {class: "requests-panel", "aria-labelledby": "requests-title", "data-loads": "0"},
    title, hint, error, table, detail);
  let generation = 0;

  function loaded() {
    el.dataset.loads = String(Number(el.dataset.loads) + 1);
  }

  async function showStep(startMs, endMs) {
    const g = ++generation;
    title.textContent = `Slowest requests, ${dateTime(startMs)} to ${dateTime(endMs)}`;
    detail.hidden = true;
    try {
      const resp = await api(`${base}/requests`, {start_epoch_millis: Math.floor(startMs),
        end_epoch_millis: Math.ceil(endMs), order: "slowest", limit: LIMIT});
      if (g !== generation) return;
      showError(error, null);
      hint.textContent = resp.requests.length ? "" : "No traced requests in this step.";
      table.hidden = !resp.requests.length;
      table.tBodies[0].replaceChildren(...resp.requests.map((r) => h("tr", {"data-request": r.request_id},
        h("td", {text: dateTime(msOf(r.timestamp))}), h("td", {class: "num", text: seconds(r.duration_seconds)}),
        h("td", {text: r.status_code ?? "–"}), h("td", {text: r.route}), h("td", {text: r.replica ?? "–"}),
        h("td", {}, h("button", {type: "button", class: "link", text: r.request_id,
          onclick: () => showRequest(r.request_id)})),
        h("td", {class: "num", text: String(r.log_count)}))));
    } catch (err) {
      if (g === generation) showError(error, err);
    }
    loaded();
  }

  async function showRequest(id) {
    const g = ++generation;
    try {
      const r = await api(`${base}/requests/${enc(id)}`);
      if (g !== generation) return;
      showError(error, null);
      detail.replaceChildren(h("h3", {text: `Request ${r.request_id} · ${seconds(r.duration_seconds)}`}),
        waterfall(r), h("h3", {text: `Log lines (${r.logs.length})`}),
        h("ol", {class: "request-logs"}, r.logs.map((l) => h("li", {"data-level": l.level ?? ""},
          h("time", {text: logTime(l.timestamp)}), " ", h("span", {class: "msg", text: l.message})))));
      detail.hidden = false;
    } catch (err) {
      if (g === generation) showError(error, err);
    }
    loaded();
  }

  return {el, showStep};
}

/** Spans in start order, indented under their parent, each bar placed on the request's
 * time line (CSSOM widths: allowed by the page's strict CSP, unlike style attributes). */
function waterfall(r) {
  const t0 = BigInt(r.spans.length ? r.spans[0].start : r.timestamp);
  const total = Math.max(r.duration_seconds, ...r.spans.map((s) => Number(BigInt(s.start) - t0) / 1e9
    + s.duration_seconds)) || 1;
  const depth = new Map();
  const rows = r.spans.map((s) => {
    const d = s.parent_span_id && depth.has(s.parent_span_id) ? depth.get(s.parent_span_id) + 1 : 0;
    depth.set(s.span_id, d);
    const bar = h("span", {class: `bar${s.status_code === 2 ? " error" : ""}`});
    bar.style.marginLeft = `${(100 * Number(BigInt(s.start) - t0)) / 1e9 / total}%`;
    bar.style.width = `${Math.max(0.5, (100 * s.duration_seconds) / total)}%`;
    const name = h("span", {class: "span-name", text: s.name});
    name.style.paddingLeft = `${d * 1.2}em`;
    return h("li", {class: "span", "data-span": s.span_id, "data-depth": String(d)}, name,
      h("span", {class: "span-track"}, bar), h("span", {class: "num", text: seconds(s.duration_seconds)}));
  });
  return h("ol", {class: "waterfall", "aria-label": "Spans"}, rows);
}
