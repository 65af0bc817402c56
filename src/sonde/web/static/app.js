// Start-up, the key box and the hash router: #/ (models) and
// #/models/{model}/deployments/{deployment}?window=1h.

import {getKey, setKey, takeKeyFromFragment} from "./api.js";
import {deploymentView} from "./deployment.js";
import {modelsView} from "./models.js";

const view = document.getElementById("view");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyStatus = document.getElementById("key-status");
let current = null;

function showKeyStatus() {
  const key = getKey();
  keyStatus.textContent = key ? `saved (…${key.slice(-4)})` : "no key saved";
  keyInput.placeholder = key ? "saved; paste another to replace" : "paste the management key";
}

function route() {
  if (current) current.dispose();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const m = /^\/models\/([^/]+)\/deployments\/([^/]+)$/.exec(path);
  current = m
    ? deploymentView(decodeURIComponent(m[1]), decodeURIComponent(m[2]), params)
    : modelsView();
  view.replaceChildren(current.el);
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
