// The time range every windowed page shares (deployments, environments, training jobs,
// chainlets, trainers): the presets, a custom from/to, and its place in the address, so
// a copied URL opens the same view (docs/dashboard.md, "URL state").

import {h, showError} from "./dom.js";

export const WINDOWS = [
  {id: "15m", label: "15 min", ms: 15 * 60e3},
  {id: "1h", label: "1 h", ms: 3600e3},
  {id: "6h", label: "6 h", ms: 6 * 3600e3},
  {id: "24h", label: "24 h", ms: 24 * 3600e3},
  {id: "7d", label: "7 d", ms: 7 * 24 * 3600e3},
];

/** Sets (or, for "", null or undefined, removes) parameters of the address's hash query.
 * replaceState, not a new history entry: a filter change is not a page to go back to,
 * and it fires no hashchange, so the page is not rebuilt. */
export function setQuery(changes) {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === "") params.delete(k);
    else params.set(k, String(v));
  }
  const q = params.toString();
  history.replaceState(null, "", `#${path}${q ? `?${q}` : ""}`);
}

/** The window the address names: `?from=MS&to=MS`, `?window=1h`, else the last hour. */
export function windowFrom(params) {
  const from = Number(params.get("from"));
  const to = Number(params.get("to"));
  if (Number.isFinite(from) && Number.isFinite(to) && from > 0 && to > from) {
    return {id: "custom", label: "custom", ms: to - from, from, to};
  }
  return WINDOWS.find((w) => w.id === params.get("window")) || WINDOWS[1];
}

/** The window as [start, end) in ms: a preset ends now, a custom range where it was set. */
export function spanOf(win) {
  if (win.id === "custom") return {start: win.from, end: win.to};
  const end = Date.now();
  return {start: end - win.ms, end};
}

// The deployment metrics API's steps (docs/api.md#steps): the smallest of these giving at
// most 360 steps over the window.
const STEP_LADDER_MS = [60e3, 300e3, 900e3, 1800e3, 3600e3];

/** The step the deployment metrics API takes for a window of `ms`. */
export function stepOf(ms) {
  return STEP_LADDER_MS.find((s) => Math.ceil(ms / s) <= 360) ?? STEP_LADDER_MS[STEP_LADDER_MS.length - 1];
}

/** A preset window moved onto the API's steps: it ends where the step holding `now` ends,
 * so each step is whole and the server answers from what it keeps per bucket instead of
 * reading the window's points (docs/dashboard.md, "Windows on steps"). The last step is
 * still filling. A custom range stays as set. */
export function stepSpanOf(win, now = Date.now()) {
  if (win.id === "custom") return spanOf(win);
  const step = stepOf(win.ms);
  const end = Math.ceil(now / step) * step;
  return {start: end - win.ms, end};
}

// <input type="datetime-local"> speaks local wall time without a zone
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

/** The presets and the custom form, reading and writing the address. onChange(win) after
 * every choice; `error` is the page's error box (an empty custom range is said there).
 * Returns {el, win(), range(), steps(now)}: range() as spanOf, steps() as stepSpanOf. */
export function rangePicker(params, onChange, error) {
  let win = windowFrom(params);
  const picker = h("fieldset", {class: "window-picker"}, h("legend", {}, "Window: last"),
    WINDOWS.map((w) => h("label", {},
      h("input", {type: "radio", name: "window", value: w.id, checked: w === win,
        onchange: () => choose(w)}),
      h("span", {text: w.label}))));
  const now = Date.now();
  const fromInput = h("input", {type: "datetime-local", name: "from", "aria-label": "From",
    value: localInput(win.id === "custom" ? win.from : now - win.ms)});
  const toInput = h("input", {type: "datetime-local", name: "to", "aria-label": "To",
    value: localInput(win.id === "custom" ? win.to : now)});
  const custom = h("form", {class: "custom-range", "aria-label": "Custom range"},
    h("span", {text: "or from"}), fromInput, h("span", {text: "to"}), toInput,
    h("button", {type: "submit"}, "Show"));
  custom.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = new Date(fromInput.value).getTime();
    const to = new Date(toInput.value).getTime();
    if (!(to > from)) {
      showError(error, {message: "The custom range's end must be after its start."});
      return;
    }
    picker.querySelectorAll("input").forEach((i) => { i.checked = false; });
    choose({id: "custom", label: "custom", ms: to - from, from, to});
  });

  function choose(w) {
    win = w;
    setQuery(w.id === "custom" ? {window: null, from: w.from, to: w.to} : {window: w.id, from: null, to: null});
    onChange(w);
  }

  return {el: h("div", {class: "range"}, picker, custom), win: () => win, range: () => spanOf(win),
    steps: (now) => stepSpanOf(win, now)};
}
