// Elements are built with properties and textContent only, never innerHTML: log lines
// and ids are untrusted text.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children, svg) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (!svg && k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/", class: "x"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children, false);
}

/** An SVG element, attributes as for h(). */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children, true);
}

/** Shows an API error's message verbatim (it is written for people), its status and
 * field beside it; hides the box when err is null. */
export function showError(box, err) {
  box.replaceChildren();
  box.hidden = !err;
  if (!err) return;
  box.append(h("span", {class: "error-message", text: err.message}));
  const meta = [err.status ? `HTTP ${err.status}` : "", err.code || "", err.field ? `field ${err.field}` : ""]
    .filter(Boolean).join(" · ");
  if (meta) box.append(h("span", {class: "error-meta", text: ` (${meta})`}));
}

export function errorBox() {
  return h("div", {class: "error", role: "alert", hidden: true});
}
