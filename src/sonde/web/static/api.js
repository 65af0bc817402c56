// The JSON API, called with the management key from localStorage as a Bearer header.

const KEY_STORE = "sonde.managementKey";

// The API's root is wherever /ui/ is mounted, so a proxy serving Sonde under a path
// prefix keeps working.
const ROOT = location.pathname.replace(/\/ui(\/.*)?$/, "");

export class ApiError extends Error {
  constructor(status, message, code, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function getKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

/** Takes the key from a "#key=..." fragment (the URL `sonde demo` prints), then drops it
 * from the address bar and history. A fragment never reaches the server, so the key
 * stays out of its access logs. "#key=K&/models/m/deployments/d" opens that page. */
export function takeKeyFromFragment() {
  const m = /^#key=([^&]*)(?:&(.*))?$/.exec(location.hash);
  if (!m) return false;
  setKey(decodeURIComponent(m[1]));
  history.replaceState(null, "", `${location.pathname}${location.search}#${m[2] || "/"}`);
  return true;
}

/** GET (or `method` with a JSON `body`) path?params; resolves to the JSON body, rejects with an ApiError carrying the
 * API's own message. Array values repeat the parameter, empty ones are left out. */
export function apiUrl(path, params = {}) {
  const url = new URL(ROOT + path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.append(name, String(v));
    }
  }
  return url;
}

/** The management key, or an ApiError asking for it. */
export function requireKey() {
  const key = getKey();
  if (!key) throw new ApiError(0, "Enter the management key above to load data.", "no_key", null);
  return key;
}

/** The API's error for a failed response: its own message, code and field. */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's error page; the status line says enough
  }
  const err = (body && body.error) || {};
  const message = body && typeof body.message === "string"
    ? body.message : `HTTP ${response.status} ${response.statusText}`;
  return new ApiError(response.status, message, err.code, err.field);
}

export async function api(path, params = {}, {method = "GET", body} = {}) {
  const key = requireKey();
  const url = apiUrl(path, params);
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: {Authorization: `Bearer ${key}`, Accept: "application/json",
        ...(body === undefined ? {} : {"Content-Type": "application/json"})},
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, `Sonde is unreachable (${e.message})`, "network", null);
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export const enc = encodeURIComponent;

export function deploymentPath(model, deployment) {
  return `/v1/models/${enc(model)}/deployments/${enc(deployment)}`;
}
