// The log viewer: newest first, filters as the API takes them, "Load older" pages back
// by end_epoch_millis from the oldest line shown, and "Live" adds new lines on top as the
// stream sends them (stream.js), with "Pause" holding them until resumed.

import {api} from "./api.js";
import {errorBox, h, showError} from "./dom.js";
import {dateTime, isoTime, logTime} from "./format.js";
import {setQuery} from "./range.js";
import {liveTail} from "./stream.js";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"];
const PAGE_SIZES = [20, 50, 100, 200, 500];
const MAX_LIMIT = 1000; // the API's
const DEFAULT_PAGE = "100";
// The form's fields, named as the API's parameters and kept under those names in the
// address (includes and excludes as typed, comma-separated), so a shared link repeats
// the search.
const TEXT_FIELDS = ["search_pattern", "includes", "excludes", "replica", "request_id", "component"];

function field(label, control, hint) {
  return h("label", {class: "field"}, h("span", {class: "field-label", text: label}), control,
    hint ? h("span", {class: "field-hint", text: hint}) : null);
}

function terms(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function msOf(ns) {
  return BigInt(ns) / 1000000n;
}

/** The logs of `path` (any logs route); range(): the page's window {start, end} in ms, the
 * viewer shows [start, end). lineFilters: false for loops logs, whose API takes the level
 * only. params: the address's query, where the filters (and live=1) start from. */
export function logViewer(path, range, {lineFilters = true, params: initial = new URLSearchParams()} = {}) {
  const ctl = {
    min_level: h("select", {name: "min_level"}, h("option", {value: ""}, "any level"),
      LEVELS.map((l) => h("option", {value: l}, `${l} and above`))),
    search_pattern: h("input", {name: "search_pattern", type: "search", spellcheck: "false",
      placeholder: "e.g. status=5\\d\\d"}),
    includes: h("input", {name: "includes", type: "text", spellcheck: "false"}),
    excludes: h("input", {name: "excludes", type: "text", spellcheck: "false"}),
    replica: h("input", {name: "replica", type: "text", spellcheck: "false"}),
    request_id: h("input", {name: "request_id", type: "text", spellcheck: "false"}),
    component: h("input", {name: "component", type: "text", spellcheck: "false"}),
    limit: h("select", {name: "limit"}, PAGE_SIZES.map((n) => h("option", {value: String(n)}, String(n)))),
  };
  ctl.limit.value = DEFAULT_PAGE;
  for (const name of ["min_level", "limit", ...(lineFilters ? TEXT_FIELDS : [])]) {
    const v = initial.get(name);
    if (v !== null) ctl[name].value = v;
  }
  if (!ctl.limit.value) ctl.limit.value = DEFAULT_PAGE; // not one of the sizes offered
  const lineFields = lineFilters ? [
    field("Search (RE2)", ctl.search_pattern),
    field("Includes", ctl.includes, "all of, comma-separated"),
    field("Excludes", ctl.excludes, "none of, comma-separated"),
    field("Replica", ctl.replica),
    field("Request ID", ctl.request_id),
    field("Component", ctl.component),
  ] : [];
  const form = h("form", {class: "log-filters", "aria-label": "Log filters"},
    field("Level", ctl.min_level),
    ...lineFields,
    field("Lines per page", ctl.limit),
    h("div", {class: "actions"},
      h("button", {type: "submit", class: "primary"}, "Apply"),
      h("button", {type: "button", onclick: () => clear()}, "Clear")),
  );
  const error = errorBox();
  const status = h("p", {class: "log-status", "aria-live": "polite"});
  const list = h("ol", {class: "log-lines", "aria-label": "Log lines, newest first"});
  const older = h("button", {type: "button", class: "load-older", hidden: true, onclick: () => loadOlder()},
    "Load older");
  const liveButton = h("button", {type: "button", class: "live-toggle", "aria-pressed": "false",
    onclick: () => (tail ? endLive() : startLive())}, "Live");
  const pauseButton = h("button", {type: "button", class: "live-pause", hidden: true,
    onclick: () => togglePause()}, "Pause");
  const liveState = h("span", {class: "live-state", "aria-live": "polite"});
  const el = h("section", {class: "logs", "aria-labelledby": "logs-title", "data-loads": "0", "data-live": "off"},
    h("div", {class: "logs-head"}, h("h2", {id: "logs-title"}, "Logs"),
      h("div", {class: "live-controls"}, liveButton, pauseButton, liveState)),
    form, error, status, list, older);

  // One query's state: its parameters are frozen at Apply so older pages continue the
  // same search over the same window even as the clock moves.
  let query = null;
  let lines = [];
  let done = false;
  let generation = 0;
  // live: the open stream, whether Pause holds new lines (in `held`), how many came live
  let tail = null;
  let paused = false;
  let held = [];
  let liveCount = 0;

  function params() {
    const {start, end} = range();
    return {
      min_level: ctl.min_level.value,
      search_pattern: ctl.search_pattern.value,
      includes: terms(ctl.includes.value),
      excludes: terms(ctl.excludes.value),
      replica: ctl.replica.value.trim(),
      request_id: ctl.request_id.value.trim(),
      component: ctl.component.value.trim(),
      start_epoch_millis: start,
      end_epoch_millis: end,
      pageSize: Number(ctl.limit.value),
    };
  }

  function lineItem(ln) {
    const level = ln.level || "none";
    // a request id narrows the viewer to its lines where the API filters by it
    const rid = ln.request_id && !lineFilters ? h("span", {class: "rid", text: ln.request_id}) : ln.request_id
      ? h("button", {type: "button", class: "rid", title: "Show only this request's lines",
        onclick: () => { ctl.request_id.value = ln.request_id; reload(); }}, ln.request_id)
      : null;
    return h("li", {class: `log-line lvl-${level.toLowerCase()}`, "data-level": ln.level || "",
      "data-ts": ln.timestamp},
    h("time", {datetime: isoTime(ln.timestamp)}, logTime(ln.timestamp)),
    h("span", {class: "lvl", text: ln.level || "–"}),
    h("span", {class: "replica", text: ln.replica || ""}),
    rid,
    h("span", {class: "msg", text: ln.message}));
  }

  function showStatus() {
    const span = `${dateTime(query.start_epoch_millis)} – ${dateTime(query.end_epoch_millis)}` +
      (liveCount ? `, then ${liveCount} live` : "");
    status.textContent = lines.length === 0
      ? `No lines match in ${span}.`
      : `${lines.length} line${lines.length === 1 ? "" : "s"}, newest first (${span})` +
        (done ? ". No older lines in this window." : ".");
  }

  function render(added) {
    list.append(...added.map(lineItem));
    older.hidden = done || lines.length === 0;
    showStatus();
  }

  function remember() {
    const state = {min_level: ctl.min_level.value, limit: ctl.limit.value === DEFAULT_PAGE ? null : ctl.limit.value};
    if (lineFilters) for (const name of TEXT_FIELDS) state[name] = ctl[name].value.trim();
    setQuery(state);
  }

  function clear() {
    form.reset();
    ctl.limit.value = DEFAULT_PAGE;
    reload();
  }

  async function fetchPage(end, limit) {
    const {pageSize, ...q} = query;
    return (await api(path, {...q, end_epoch_millis: end, limit, direction: "desc"})).logs;
  }

  function finish(g, err) {
    if (g !== generation) return;
    showError(error, err);
    el.dataset.loads = String(Number(el.dataset.loads) + 1);
    el.dataset.state = err ? "error" : "done";
  }

  async function reload() {
    const g = ++generation;
    query = params();
    remember();
    lines = [];
    liveCount = 0;
    done = false;
    list.replaceChildren();
    older.hidden = true;
    status.textContent = "Loading…";
    el.dataset.state = "loading";
    try {
      const page = await fetchPage(query.end_epoch_millis, query.pageSize);
      if (g !== generation) return;
      lines = page;
      done = page.length < query.pageSize;
      render(page);
      finish(g, null);
    } catch (err) {
      if (g === generation) status.textContent = "";
      finish(g, err);
    }
  }

  async function loadOlder() {
    const g = ++generation;
    // Lines sharing the oldest line's millisecond may straddle the page boundary, and
    // the API's end is in whole milliseconds: ask up to the end of that millisecond
    // and skip the lines of it already shown. Order is (timestamp, arrival) both ways,
    // so those come first, in the same order.
    const boundary = msOf(lines[lines.length - 1].timestamp);
    const skip = lines.filter((ln) => msOf(ln.timestamp) === boundary).length;
    if (skip + query.pageSize > MAX_LIMIT) {
      showError(error, {message: `More than ${MAX_LIMIT - query.pageSize} lines share one millisecond; ` +
        "narrow the filters or use fewer lines per page to see older ones."});
      return;
    }
    older.disabled = true;
    el.dataset.state = "loading";
    try {
      const limit = skip + query.pageSize;
      const page = await fetchPage(Number(boundary) + 1, limit);
      if (g !== generation) return;
      const added = page.slice(skip);
      lines = lines.concat(added);
      done = page.length < limit;
      render(added);
      finish(g, null);
    } catch (err) {
      finish(g, err);
    } finally {
      older.disabled = false;
    }
  }

  // --- live ---------------------------------------------------------------------------

  const keyOf = (ln) => JSON.stringify([ln.timestamp, ln.message, ln.replica, ln.request_id, ln.level]);

  function showLine(ln) {
    lines.unshift(ln);
    list.prepend(lineItem(ln));
    liveCount += 1;
    el.dataset.liveLines = String(liveCount);
    if (query) showStatus();
  }

  function setLiveState(state, err) {
    el.dataset.live = state;
    liveState.textContent = {live: paused ? "paused" : "live", connecting: "connecting…",
      reconnecting: "reconnecting…", error: "stopped",
      off: ""}[state] || "";
    if (state === "error") {
      showError(error, err);
      stopLive(true);
    }
  }

  function startLive() {
    const q = query || params();
    const filters = {min_level: q.min_level};
    if (lineFilters) {
      Object.assign(filters, {search_pattern: q.search_pattern, includes: q.includes, excludes: q.excludes,
        replica: q.replica, request_id: q.request_id, component: q.component});
    }
    // From the newest line shown, skipping the lines of its millisecond already on the
    // page: nothing stored between the last load and the stream's start is missed.
    const newest = lines.length ? msOf(lines[0].timestamp) : null;
    const shown = new Set(lines.filter((ln) => msOf(ln.timestamp) === newest).map(keyOf));
    if (newest !== null) filters.start_epoch_millis = String(newest);
    paused = false;
    held = [];
    setLiveState("connecting");
    tail = liveTail(path, filters, {
      onLine: (ln) => {
        if (shown.size && msOf(ln.timestamp) === newest && shown.delete(keyOf(ln))) return;
        if (paused) {
          held.push(ln);
          pauseButton.textContent = `Resume (${held.length} new)`;
        } else {
          showLine(ln);
        }
      },
      onState: setLiveState,
    });
    liveButton.setAttribute("aria-pressed", "true");
    liveButton.textContent = "Stop live";
    pauseButton.hidden = false;
    pauseButton.textContent = "Pause";
    setQuery({live: "1"});
  }

  function stopLive(keepState) {
    if (tail) tail.stop();
    tail = null;
    held.forEach(showLine);
    held = [];
    paused = false;
    liveButton.setAttribute("aria-pressed", "false");
    liveButton.textContent = "Live";
    pauseButton.hidden = true;
    if (!keepState) setLiveState("off");
  }

  function endLive() {
    stopLive();
    setQuery({live: null});
  }

  function togglePause() {
    paused = !paused;
    if (!paused) {
      held.forEach(showLine);
      held = [];
    }
    pauseButton.textContent = paused ? "Resume (0 new)" : "Pause";
    el.dataset.paused = String(paused);
    liveState.textContent = paused ? "paused" : "live";
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const wasLive = Boolean(tail);
    if (wasLive) stopLive();
    await reload();
    if (wasLive) startLive(); // the new filters apply to the stream too
  });
  // A shared link with live=1 opens following, once the first page is in.
  let follow = initial.get("live") === "1";
  async function load() {
    await reload();
    if (follow && !tail) startLive();
    follow = false;
  }
  return {el, reload: load, stop: () => stopLive()};
}
