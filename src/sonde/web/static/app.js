// Start-up, the key box and the hash router: #/ (models), a deployment, an environment,
// training projects and jobs, chains and chainlets, trainer (loops) deployments (ROUTES).
// A route's query (`?window=1h&min_level=ERROR...`) is the view's state: pages keep it up
// to date, so the address is always a link to what is on screen.

import {getKey, setKey, takeKeyFromFragment} from "./api.js";
import {deploymentView} from "./deployment.js";
import {chainletView, chainsView} from "./chains.js";
import {loopsListView, loopsView} from "./loops.js";
import {environmentView, modelsView} from "./models.js";
import {jobView, trainingView} from "./training.js";

const view = document.getElementById("view");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyStatus = document.getElementById("key-status");
const sections = [...document.querySelectorAll("nav.sections a")];
let current = null;

function showKeyStatus() {
  const key = getKey();
  keyStatus.textContent = key ? `saved (…${key.slice(-4)})` : "no key saved";
  keyInput.placeholder = key ? "saved; paste another to replace" : "paste the management key";
}

// [pattern, view from the decoded path parts and the query]; the first match wins
const ROUTES = [
  [/^\/models\/([^/]+)\/deployments\/([^/]+)$/, (p, q) => deploymentView(p[0], p[1], q)],
  [/^\/models\/([^/]+)\/environments\/([^/]+)$/, (p, q) => environmentView(p[0], p[1], q)],
  [/^\/training$/, () => trainingView()],
  [/^\/training\/([^/]+)\/jobs\/([^/]+)$/, (p, q) => jobView(p[0], p[1], q)],
  [/^\/chains$/, () => chainsView()],
  [/^\/chains\/([^/]+)\/deployments\/([^/]+)\/chainlets\/([^/]+)$/, (p, q) => chainletView(p[0], p[1], p[2], q)],
  [/^\/loops$/, () => loopsListView()],
  [/^\/loops\/([^/]+)$/, (p, q) => loopsView(p[0], q)],
];

function pick(path, params) {
  for (const [re, view] of ROUTES) {
    const m = re.exec(path);
    if (m) return view(m.slice(1).map(decodeURIComponent), params);
  }
  return modelsView();
}

function route() {
  if (current) current.dispose();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  current = pick(path, params);
  view.replaceChildren(current.el);
  // the header marks the section the page belongs to
  const section = `#/${(path || "/").split("/")[1] || ""}`.replace("#/models", "#/");
  for (const a of sections) a.toggleAttribute("aria-current", a.getAttribute("href") === section);
}

keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setKey(key);
  keyInput.value = "";
  showKeyStatus();
  route();
});

document.getElementById("key-forget").addEventListener("click", () => {
  setKey("");
  showKeyStatus();
  route();
});

window.addEventListener("hashchange", () => {
  if (takeKeyFromFragment()) showKeyStatus();
  route();
});

takeKeyFromFragment();
showKeyStatus();
route();
