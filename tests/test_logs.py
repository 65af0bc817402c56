"""Deployment and environment logs against ground truth computed in Python.

A few thousand varied lines (every level including none, replicas, request ids,
components, messages full of regex metacharacters, newlines and non-ASCII text, many
equal timestamps told apart only by arrival sequence) are written to the real store; each
filter combination is then asked of the real endpoint and of ``expected``, which applies
the same rules with ``re2.search`` and sorts by (timestamp, sequence).
"""

from __future__ import annotations

import random
import time

import pyarrow as pa
import re2
from spec_schema import validate

from conftest import Client
from sonde.store import ARROW_SCHEMAS

LEVELS = {"DEBUG": 1, "INFO": 2, "WARNING": 3, "ERROR": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
MIN = 60 * 10**9
T0 = (time.time_ns() // MIN - 24 * 60) * MIN  # a day ago, on a minute boundary
T0_MS = T0 // 10**6
WINDOW = {"start_epoch_millis": T0_MS, "end_epoch_millis": T0_MS + 20 * 60_000}  # all of dataset()

MESSAGES = [
    "GET /v1/predict 200 in 12ms",
    "POST /v1/predict status=503 retry",
    "error: CUDA out of memory (tried 2.00 GiB)",
    "ERROR something failed",
    "Error: mixed case",
    "first line\nsecond line",
    "a\nb",
    "axb",
    "tab\tseparated\tvalues",
    "back\\slash and C:\\path\\to\\file",
    "regex chars: [x] (y) {z} a+b a*b a?b ^$ |pipe| .dot.",
    "quote's and \"doubles\"",
    "héllo wörld",
    "日本語のログ 123",
    "emoji 😀 ok",
    "",
    "   leading and trailing   ",
    "token=abc123 user=42",
    "Loading model weights 45%",
    "ok",
    "NUL-free % percent %d %s",
]
PATTERNS = [
    r"\d{3}", r"^GET", r"(?i)error", r"a.b", r"(?s)a.b", r"\\", r"\t", r"\p{Han}+", "😀", r"^$",
    r"(?m)^second", r"\bok\b", r"status=5\d\d", r"\.dot\.", "", r"\[x\] \(y\)", r"[^\x00-\x7F]", r"line$",
    r"^.{2}$", r"(GET|POST) /v1", r"é", r"%d",
]
WORDS = ["line", "error", "ERROR", "GET", "a", "\t", "\\", "😀", "日本", "%", "", " ", "ok", "(y)", "\n"]
REPLICAS = ["", "abcde", "fghij", "klmno"]
REQUESTS = ["", "req-1", "req-2", "req 3", "req-4\\x"]
COMPONENTS = ["", "server", "model", "sidecar"]


def row(ws, entity, ts, seq, *, scope="deployment", parent="m1", environment="production", replica="",
        request_id="", component="", level=0, message="hello"):
    return dict(ws=ws, scope=scope, entity=entity, parent=parent, environment=environment, ts=ts, seq=seq,
                replica=replica, request_id=request_id, component=component, level=level, message=message, attrs={})


def write(store, rows):
    store.submit({"logs": pa.Table.from_pylist(rows, schema=ARROW_SCHEMAS["logs"])}).committed.result()


def dataset(ws: str, n: int = 3000, seed: int = 7) -> list[dict]:
    """Lines of d1 and d2 (model m1) over 20 minutes from T0, plus decoys that must never
    show up in d1's or m1's logs: another model, a chainlet scope reusing the id d1."""
    rng = random.Random(seed)
    rows = []
    seqs = rng.sample(range(1, 10 * n), n)  # arrival order independent of timestamp order
    for i in range(n):
        # 400 distinct instants over 20 minutes: most timestamps are shared by several lines.
        ts = T0 + rng.randrange(400) * 3 * 10**9 + rng.choice([0, 0, 0, 1, 999_999])
        entity, env = rng.choice([("d1", "production"), ("d1", "staging"), ("d2", "staging"), ("d1", "production")])
        rows.append(row(ws, entity, ts, seqs[i], environment=env, replica=rng.choice(REPLICAS),
                        request_id=rng.choice(REQUESTS), component=rng.choice(COMPONENTS),
                        level=rng.randrange(5), message=rng.choice(MESSAGES)))
    rows.append(row(ws, "d1", T0 + 5 * MIN, 10**7, scope="chainlet", parent="cd1", message="decoy chainlet"))
    rows.append(row(ws, "d9", T0 + 5 * MIN, 10**7 + 1, parent="m9", message="decoy other model"))
    return rows


def expected(rows, pred, params: dict) -> list[dict]:
    start, end = params["start_epoch_millis"] * 10**6, params["end_epoch_millis"] * 10**6
    level = LEVELS.get(params.get("min_level"), 0)
    pattern = params.get("search_pattern")
    keep = []
    for r in rows:
        if not pred(r) or not start <= r["ts"] < end or r["level"] < level:
            continue
        if any(params.get(k) is not None and r[k] != params[k] for k in ("replica", "request_id", "component")):
            continue
        if pattern is not None and not re2.search(pattern, r["message"]):
            continue
        if not all(t in r["message"] for t in params.get("includes", [])):
            continue
        if any(t in r["message"] for t in params.get("excludes", [])):
            continue
        keep.append(r)
    keep.sort(key=lambda r: (r["ts"], r["seq"]), reverse=params.get("direction", "desc") == "desc")
    return [
        {"timestamp": str(r["ts"]), "message": r["message"], "replica": r["replica"] or None,
         "request_id": r["request_id"] or None, "level": LEVEL_NAMES.get(r["level"])}
        for r in keep[: params.get("limit", 500)]
    ]


def random_filters(rng: random.Random) -> dict:
    p: dict = {"start_epoch_millis": T0_MS + rng.choice([0, 0, 60_000, 299_999]),
               "end_epoch_millis": T0_MS + rng.choice([20 * 60_000, 20 * 60_000, 10 * 60_000, 300_001])}
    if rng.random() < 0.5:
        p["direction"] = rng.choice(["asc", "desc"])
    p["limit"] = rng.choice([1, 7, 500, 1000, 1000])
    if rng.random() < 0.4:
        p["min_level"] = rng.choice(list(LEVELS))
    for key, values in (("replica", REPLICAS), ("request_id", REQUESTS), ("component", COMPONENTS)):
        if rng.random() < 0.25:
            p[key] = rng.choice(values[1:] + ["nobody"])
    if rng.random() < 0.5:
        p["search_pattern"] = rng.choice(PATTERNS)
    if rng.random() < 0.4:
        p["includes"] = rng.sample(WORDS, rng.randrange(1, 3))
    if rng.random() < 0.3:
        p["excludes"] = rng.sample(WORDS, rng.randrange(1, 3))
    return p


def get(client, url, params):
    r = client.get(url, params=params)
    assert r.status_code == 200, (params, r.text)
    validate(r.json(), "GetLogsResponseV1")
    return r.json()["logs"]


def setup(client, store, creds):
    for d in ("d1", "d2"):
        assert client.put(f"/v1/models/m1/deployments/{d}", json={}).status_code == 200
    client.put("/v1/models/m9/deployments/d9", json={})
    rows = dataset(creds["workspace_id"])
    write(store, rows)
    return rows


def test_deployment_logs_match_ground_truth(client, store, creds):
    rows = setup(client, store, creds)
    d1 = lambda r: r["scope"] == "deployment" and r["entity"] == "d1"  # noqa: E731
    url = "/v1/models/m1/deployments/d1/logs"
    rng = random.Random(11)
    combos = [{}, {"direction": "asc"}, {"limit": 1000, "direction": "asc"}, {"min_level": "DEBUG", "limit": 1000},
              {"min_level": "ERROR", "limit": 1000}, {"search_pattern": "a.b", "limit": 1000},
              {"includes": ["line", "second"], "excludes": ["first"]}, {"excludes": [""]}]
    combos = [{**WINDOW, **c} for c in combos]
    combos += [random_filters(rng) for _ in range(70)]
    nonempty = 0
    for params in combos:
        want = expected(rows, d1, params)
        assert get(client, url, params) == want, params
        nonempty += bool(want)
    assert nonempty > len(combos) // 2  # the combinations exercise real matches, not just empty lists


def test_post_body_form_matches_get(client, store, creds):
    rows = setup(client, store, creds)
    d1 = lambda r: r["scope"] == "deployment" and r["entity"] == "d1"  # noqa: E731
    url = "/v1/models/m1/deployments/d1/logs"
    rng = random.Random(5)
    for params in [random_filters(rng) for _ in range(15)]:
        r = client.post(url, json=params)
        assert r.status_code == 200, r.text
        validate(r.json(), "GetLogsResponseV1")
        assert r.json()["logs"] == expected(rows, d1, params) == get(client, url, params)
    # null means the default; unknown fields are accepted and ignored, as the vendor schema allows.
    body = {**WINDOW, "direction": None,
            "limit": None, "min_level": None, "replica": None, "request_id": None, "component": None,
            "search_pattern": None, "includes": None, "excludes": None, "future_field": {"x": 1}}
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["logs"] == expected(rows, d1, WINDOW) and len(r.json()["logs"]) == 500


def test_environment_logs(client, store, creds):
    rows = setup(client, store, creds)
    rng = random.Random(3)
    for env in ("production", "staging"):
        pred = lambda r, env=env: (r["scope"], r["parent"], r["environment"]) == ("deployment", "m1", env)  # noqa: E731
        for params in [{**WINDOW, "limit": 1000}] + [random_filters(rng) for _ in range(12)]:
            assert get(client, f"/v1/models/m1/environments/{env}/logs", params) == expected(rows, pred, params)
    # An environment nobody logged to is empty; an unknown model is 404.
    assert get(client, "/v1/models/m1/environments/nowhere/logs", WINDOW) == []
    r = client.get("/v1/models/m404/environments/production/logs")
    assert r.status_code == 404 and r.json()["error"]["field"] == "model_id"


def test_window_edges_default_limit_and_ties(client, store, creds):
    ws = creds["workspace_id"]
    client.put("/v1/models/m1/deployments/d1", json={})
    start, end = T0 + MIN, T0 + 2 * MIN
    edge = [row(ws, "d1", start - 1, 1, message="before"), row(ws, "d1", start, 2, message="at start"),
            row(ws, "d1", end - 1, 3, message="last ns"), row(ws, "d1", end, 4, message="at end")]
    # 600 lines on one instant: only the arrival sequence orders them.
    tie = [row(ws, "d1", start + 7, 1000 + i, message=f"tie {i}") for i in range(600)]
    random.Random(1).shuffle(tie)
    write(store, edge + tie)
    url = "/v1/models/m1/deployments/d1/logs"
    window = {"start_epoch_millis": start // 10**6, "end_epoch_millis": end // 10**6}
    got = get(client, url, window)
    assert len(got) == 500  # the default limit
    assert got[0]["message"] == "last ns" and [g["message"] for g in got[1:4]] == ["tie 599", "tie 598", "tie 597"]
    got = get(client, url, {**window, "direction": "asc", "limit": 1000})
    assert [g["message"] for g in got] == ["at start"] + [f"tie {i}" for i in range(600)] + ["last ns"]
    assert got[0]["timestamp"] == str(start) and got[1]["level"] is None and got[1]["replica"] is None


def test_default_window_is_the_last_30_minutes(client, store, creds):
    ws = creds["workspace_id"]
    client.put("/v1/models/m1/deployments/d1", json={})
    now = time.time_ns()
    write(store, [row(ws, "d1", now - 31 * MIN, 1, message="too old"),
                  row(ws, "d1", now - 29 * MIN, 2, message="recent"),
                  row(ws, "d1", now + 5 * MIN, 3, message="future")])
    url = "/v1/models/m1/deployments/d1/logs"
    assert [g["message"] for g in get(client, url, {})] == ["recent"]
    # end alone: start is end - 30 min. start alone: end is now.
    assert [g["message"] for g in get(client, url, {"end_epoch_millis": (now - 30 * MIN) // 10**6})] == ["too old"]
    got = get(client, url, {"start_epoch_millis": (now - 40 * MIN) // 10**6})
    assert [g["message"] for g in got] == ["recent", "too old"]
    week = {"start_epoch_millis": (now - 7 * 24 * 60 * MIN) // 10**6, "end_epoch_millis": now // 10**6}
    assert len(get(client, url, week)) == 2  # exactly 7 days is allowed


def test_not_found_wrong_model_and_other_workspace(app, client, store, creds):
    client.put("/v1/models/m1/deployments/d1", json={})
    client.put("/v1/models/m2", json={})
    write(store, [row(creds["workspace_id"], "d1", T0 + MIN, 1, message="mine")])
    window = {"start_epoch_millis": T0_MS, "end_epoch_millis": T0_MS + 10 * 60_000}
    for url, field in [("/v1/models/m2/deployments/d1/logs", "deployment_id"),
                       ("/v1/models/m3/deployments/d1/logs", "model_id"),
                       ("/v1/models/m1/deployments/d2/logs", "deployment_id")]:
        r = client.get(url, params=window)
        assert r.status_code == 404 and r.json()["error"]["field"] == field, r.text
        assert client.post(url, json=window).status_code == 404

    admin = Client(app, creds["admin_key"])
    ws_b = admin.post("/v1/admin/workspaces", json={"name": "b"}).json()["id"]
    key_b = admin.post(f"/v1/admin/workspaces/{ws_b}/api_keys", json={"name": "m", "scope": "management"}).json()["key"]
    other = Client(app, key_b)
    url = "/v1/models/m1/deployments/d1/logs"
    assert other.get(url, params=window).status_code == 404
    assert other.get("/v1/models/m1/environments/production/logs", params=window).status_code == 404
    # Same ids in workspace b: each workspace sees only its own lines.
    other.put("/v1/models/m1/deployments/d1", json={})
    write(store, [row(ws_b, "d1", T0 + MIN, 1, message="theirs")])
    assert [g["message"] for g in get(other, url, window)] == ["theirs"]
    assert [g["message"] for g in get(client, url, window)] == ["mine"]
    assert [g["message"] for g in get(other, "/v1/models/m1/environments/production/logs", window)] == ["theirs"]

    assert client.get(url, key=None).status_code == 401
    assert client.get(url, key=creds["ingest_key"]).status_code == 403
    assert client.post(url, json={}, key=creds["admin_key"]).status_code == 403
