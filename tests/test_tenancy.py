"""Tenancy, property-based: workspaces that use the same ids never see each other's data
(docs/api.md#workspaces, docs/reliability.md#tenancy).

Hypothesis draws the ids every workspace shares (model, deployment, environment, chain,
chain deployment, chainlet, training project and job, loops deployment, request id, even
the trace and span ids) and which workspaces send telemetry for which entity. One real
server (the app under uvicorn on one chDB store, shared by every example; each example
makes new workspaces) takes metrics, logs, spans and remote write from each workspace's
ingest key; then each workspace's management key reads every route the app serves, the
live streams, ``GET /metrics``, the alert routes and the ``sonde`` CLI. Each workspace's
replica name carries its marker, so any answer holding another workspace's marker is a
leak; an entity a workspace never sent is 404, never 403. The routes are enumerated from
the app and the dashboard's scripts, so a route added without a probe fails here.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time

import cramjam
import httpx
import pytest
from click.testing import CliRunner
from conftest import drop_database, new_db_name
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from live_server import free_port
from otlp_build import gauge, log_record, logs_request, metrics_request, number, post, sum_metric, traces_request
from test_logs_stream import Events, _serve

from sonde.api.app import create_app
from sonde.cli.main import cli
from sonde.ingest import prompb
from sonde.settings import Config
from sonde.store import Store
from sonde.web import STATIC

KINDS = ("deployment", "chainlet", "training", "loops")
M, D, E, C, CD, CL, P, J, L = ("{model_id}", "{deployment_id}", "{env_name}", "{chain_id}", "{chain_deployment_id}",
                               "{chainlet_id}", "{training_project_id}", "{training_job_id}", "{loops_id}")
DEP = f"/v1/models/{M}/deployments/{D}"
CHAINLET = f"/v1/chains/{C}/deployments/{CD}/chainlets/{CL}"
JOB = f"/v1/training_projects/{P}/jobs/{J}"
LOOPS = f"/v1/loops/deployments/{L}"
#: (method, path, the entity kind a workspace must have sent for a 200 (None: any
#: workspace gets 200), whether the answer must hold the caller's own marker)
PROBES = (
    ("GET", "/v1/models", None, False),
    ("GET", f"/v1/models/{M}", "deployment", False),
    ("GET", f"/v1/models/{M}/deployments", "deployment", False),
    ("GET", DEP, "deployment", False),
    ("GET", f"{DEP}/metrics", "deployment", True),
    ("GET", f"{DEP}/logs", "deployment", True),
    ("POST", f"{DEP}/logs", "deployment", True),
    ("GET", f"/v1/models/{M}/environments/{E}/logs", "deployment", True),
    ("GET", f"{DEP}/requests", "deployment", True),
    ("GET", f"{DEP}/requests/{{request_id}}", "deployment", True),
    ("GET", "/v1/chains", None, False),
    ("GET", f"/v1/chains/{C}", "chainlet", False),
    ("GET", f"/v1/chains/{C}/deployments", "chainlet", False),
    ("GET", f"/v1/chains/{C}/deployments/{CD}", "chainlet", False),
    ("GET", f"{CHAINLET}/logs", "chainlet", True),
    ("GET", f"{CHAINLET}/requests", "chainlet", True),
    ("GET", f"{CHAINLET}/requests/{{request_id}}", "chainlet", True),
    ("GET", "/v1/training_projects", None, False),
    ("GET", f"/v1/training_projects/{P}/jobs", "training", False),
    ("GET", JOB, "training", False),
    ("GET", f"{JOB}/metrics", "training", False),
    ("POST", f"{JOB}/metrics", "training", False),
    ("GET", f"{JOB}/logs", "training", True),
    ("POST", f"{JOB}/logs", "training", True),
    ("GET", "/v1/loops/deployments", None, False),
    ("GET", LOOPS, "loops", False),
    ("POST", f"{LOOPS}/metrics", "loops", False),
    ("GET", f"{LOOPS}/logs", "loops", True),
    ("GET", "/metrics", None, False),
    ("GET", "/v1/alert_rules", None, False),
    ("GET", "/v1/alerts", None, False),
    ("GET", "/v1/alert_receivers", None, False),
)
STREAMS = {"deployment": (f"{DEP}/logs", f"/v1/models/{M}/environments/{E}/logs"), "chainlet": (f"{CHAINLET}/logs",),
           "training": (f"{JOB}/logs",), "loops": (f"{LOOPS}/logs",)}
#: routes checked by their own steps below rather than by PROBES: writes of inventory and
#: alerts (each workspace writes the same ids), one rule by id, and the ingest routes
OTHER_ROUTES = {("PUT", f"/v1/models/{M}"), ("PUT", DEP), ("PUT", f"/v1/chains/{C}"),
                ("PUT", f"/v1/chains/{C}/deployments/{CD}"), ("PUT", f"/v1/training_projects/{P}"), ("PUT", JOB),
                ("PUT", LOOPS), ("POST", "/v1/alert_rules"), ("GET", "/v1/alert_rules/{rule_id}"),
                ("PUT", "/v1/alert_rules/{rule_id}"), ("DELETE", "/v1/alert_rules/{rule_id}"),
                ("PUT", "/v1/alert_receivers/{name}"), ("DELETE", "/v1/alert_receivers/{name}"),
                ("POST", "/api/v1/write")}
ID = st.from_regex(r"[a-z][a-z0-9_.-]{0,11}", fullmatch=True)
#: a failing example is reported as drawn: shrinking one takes minutes of real requests
NO_SHRINK = (Phase.explicit, Phase.generate)
RW_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}


class World:
    """The shared server and what each example adds to it."""

    def __init__(self, url: str, app, creds: dict):
        self.url, self.app, self.creds = url, app, creds
        self.http = httpx.Client(base_url=url, timeout=60)
        self.examples = itertools.count()

    def call(self, method: str, path: str, key: str, **kw) -> httpx.Response:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kw)

    def workspace(self, name: str) -> dict[str, str]:
        admin = self.creds["admin_key"]
        ws = self.call("POST", "/v1/admin/workspaces", admin, json={"name": name}).json()["id"]
        return {s: self.call("POST", f"/v1/admin/workspaces/{ws}/api_keys", admin, json={"name": s, "scope": s})
                .json()["key"] for s in ("management", "ingest")}


@pytest.fixture(scope="module")
def world(executor, tmp_path_factory):
    store = Store(executor, new_db_name(), flush_interval_ms=5)
    data = tmp_path_factory.mktemp("tenancy")
    # evaluation is driven by the test (run_once), never by the clock
    app = create_app(Config(data_dir=str(data), alert_eval_seconds=3600, stream_heartbeat_seconds=0.5), store=store)
    srv = _serve(app, free_port())
    w = World(f"http://127.0.0.1:{srv.config.port}", app, json.loads((data / "credentials.json").read_text()))
    yield w
    w.http.close()
    srv.should_exit = True
    time.sleep(0.3)  # the server's loop notices should_exit
    store.close(executor=False)
    drop_database(executor, store.db)


@st.composite
def scenarios(draw):
    """Shared ids, and per workspace the entity kinds it sends (the first sends all)."""
    n = draw(st.integers(2, 3))
    ids = dict(zip(("model_id", "deployment_id", "env_name", "chain_id", "chain_deployment_id", "chainlet_id",
                    "training_project_id", "training_job_id", "loops_id", "request_id"), draw(st.lists(ID, min_size=10, max_size=10))))
    owns = [set(KINDS)] + [draw(st.sets(st.sampled_from(KINDS))) for _ in range(n - 1)]
    return {"ids": ids, "owns": owns, "lines": draw(st.integers(1, 3)),
            "trace": draw(st.binary(min_size=16, max_size=16).filter(any)),
            "span": draw(st.binary(min_size=8, max_size=8).filter(any))}


def fill(template: str, ids: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m[1]], template)


def resources(ids: dict, marker: str) -> dict[str, dict]:
    replica = {"sonde.replica": f"r-{marker}"}
    return {
        "deployment": {"sonde.model_id": ids["model_id"], "sonde.deployment_id": ids["deployment_id"],
                       "sonde.environment": ids["env_name"], **replica},
        "chainlet": {"sonde.chain_id": ids["chain_id"], "sonde.chain_deployment_id": ids["chain_deployment_id"],
                     "sonde.chainlet_id": ids["chainlet_id"], **replica},
        "training": {"sonde.training_project_id": ids["training_project_id"],
                     "sonde.training_job_id": ids["training_job_id"], **replica},
        "loops": {"sonde.loops_deployment_id": ids["loops_id"], **replica},
    }


def send_logs(world, key, res, texts, request_id) -> None:
    now = time.time_ns()
    records = [log_record(now + k, t, severity_text="INFO", attrs={"request_id": request_id}) for k, t in enumerate(texts)]
    assert post(world.http, logs_request(res, records), headers={"Authorization": f"Bearer {key}"}).status_code == 200


def feed(world, sc, keys, markers) -> None:
    """What every workspace sends, interleaved workspace by workspace, so that state keyed
    by ids alone (cumulative series, registration, traces) would mix them."""
    ids, n = sc["ids"], sc["lines"]
    auth = [{"Authorization": f"Bearer {k['ingest']}"} for k in keys]
    for i, owns in enumerate(sc["owns"]):
        res = resources(ids, markers[i])
        for kind in owns:
            send_logs(world, keys[i]["ingest"], res[kind], [f"tenancy {markers[i]} one {k}" for k in range(n)], ids["request_id"])
            now = time.time_ns()
            spans = [(sc["trace"], sc["span"], b"", f"GET /{markers[i]}", 2, now, 5_000_000,
                      {"request_id": ids["request_id"], "http.response.status_code": 200})]
            if kind in ("deployment", "chainlet"):
                assert post(world.http, traces_request(res[kind], spans), headers=auth[i]).status_code == 200
            gpu = gauge("hw.gpu.memory.usage", [number(now, float(2**30 * (i + 1)), attrs={"hw.gpu.index": "0"})], unit="By")
            assert post(world.http, metrics_request(res[kind], [gpu]), headers=auth[i]).status_code == 200
        if "deployment" in owns:
            wr = prompb.WriteRequest()
            ts = wr.timeseries.add()
            for k, v in sorted({"__name__": "tenancy_rw", "model_id": ids["model_id"], "deployment_id": ids["deployment_id"],
                                "replica": f"r-{markers[i]}"}.items()):
                ts.labels.add(name=k, value=v)
            ts.samples.add(timestamp=time.time_ns() // 10**6, value=float(i + 1))
            r = world.http.post("/api/v1/write", content=bytes(cramjam.snappy.compress_raw(wr.SerializeToString())),
                                headers={**RW_HEADERS, **auth[i]})
            assert r.status_code == 204, r.text
    # one cumulative counter, the same series in every workspace (same ids, replica and
    # start), two points each, in turn: a workspace's total is its own last value
    start = time.time_ns() - 60 * 10**9
    for point in (1, 2):
        for i, owns in enumerate(sc["owns"]):
            if "deployment" in owns:
                res = {**resources(ids, markers[i])["deployment"], "sonde.replica": "shared"}
                c = sum_metric("tenancy_count", [number(start + point * 10**9, float(point * 10 * (i + 1)), start=start)])
                assert post(world.http, metrics_request(res, [c]), headers=auth[i]).status_code == 200


def no_foreign(text: str, i: int, markers: list[str], where: str) -> None:
    for j, m in enumerate(markers):
        assert j == i or m not in text, f"workspace {i} sees workspace {j}'s data in {where}: {text[:500]}"


def read_everything(world, sc, keys, markers) -> None:
    now_ms = time.time_ns() // 10**6
    window = {"start_epoch_millis": now_ms - 600_000, "end_epoch_millis": now_ms + 60_000}
    for i, owns in enumerate(sc["owns"]):
        k = keys[i]["management"]
        for method, template, kind, holds_own in PROBES:
            path = fill(template, sc["ids"])
            params = {**window, "mode": "SUMMARY", "metrics": "tenancy_count,tenancy_rw,baseten_gpu_memory_used"} \
                if template.endswith("/deployments/{deployment_id}/metrics") else {}
            r = world.call(method, path, k, params=params, **({"json": {}} if method == "POST" else {}))
            where = f"{method} {template}"
            if kind is None or kind in owns:
                assert r.status_code == 200, (where, r.text)
                if holds_own:
                    assert markers[i] in r.text, (where, r.text)
            else:
                assert r.status_code == 404, (where, r.text)
                assert r.json()["error"]["code"] == "not_found"
            no_foreign(r.text, i, markers, where)
        if "deployment" in owns:
            got = world.call("GET", fill(f"{DEP}/metrics", sc["ids"]), k,
                             params={**window, "mode": "SUMMARY", "metrics": "tenancy_count"}).json()
            assert got["metric_values"][0]["values"] == [[20.0 * (i + 1)]], got
            assert f'replica="r-{markers[i]}"' in world.call("GET", "/metrics", k).text


def tail_everything(world, sc, keys, markers) -> None:
    """Streams opened with a backlog, then each workspace's second batch and a last line:
    every line a stream gives up to its last line is its own workspace's."""
    ids, n = sc["ids"], sc["lines"]
    since = time.time_ns() // 10**6 - 600_000
    opened = []
    try:
        for i, owns in enumerate(sc["owns"]):
            h = {"Authorization": f"Bearer {keys[i]['management']}"}
            for kind, paths in STREAMS.items():
                for template in paths:
                    ev = Events(world.url + fill(template, ids) + "/stream", h, {"start_epoch_millis": since})
                    if kind in owns:
                        assert ev.status == 200, ev.body
                        opened.append((i, kind, template, ev))
                    else:
                        assert ev.status == 404 and json.loads(ev.body)["error"]["code"] == "not_found", ev.body
                        no_foreign(ev.body.decode(), i, markers, template)
        for i, owns in enumerate(sc["owns"]):
            res = resources(ids, markers[i])
            for kind in owns:
                send_logs(world, keys[i]["ingest"], res[kind],
                          [f"tenancy {markers[i]} two {k}" for k in range(n)] + [f"tenancy {markers[i]} last"],
                          ids["request_id"])
        for i, kind, template, ev in opened:
            got = [line["message"] for _, line in ev.lines(2 * n + 1, timeout=30)]
            assert all(markers[i] in m for m in got) and got[-1].endswith(" last"), (template, i, got)
    finally:
        for *_, ev in opened:
            ev.close()


def rule_body(ids: dict, name: str) -> dict:
    return {"name": name, "model_id": ids["model_id"], "deployment_id": ids["deployment_id"],
            "condition": {"type": "logs", "filters": {"search_pattern": "tenancy"}, "window_seconds": 600,
                          "op": ">=", "threshold": 1}}


def alert_everything(world, sc, keys, markers) -> None:
    """A logs rule on the shared deployment in every workspace: each owner's alert counts
    its own lines only; no workspace reads, changes or deletes another's rules."""
    ids, n = sc["ids"], sc["lines"]
    rules: dict[int, dict] = {}
    for i, owns in enumerate(sc["owns"]):
        k = keys[i]["management"]
        r = world.call("POST", "/v1/alert_rules", k, json=rule_body(ids, f"Lines-{markers[i]}"))
        if "deployment" in owns:
            assert r.status_code == 201, r.text
            rules[i] = r.json()
        else:
            assert r.status_code == 404, r.text
    world.app.state.evaluator.run_once()
    for i in range(len(keys)):  # after the round, so nothing is delivered to these addresses
        for name, url in (("shared", f"http://127.0.0.1:9/{markers[i]}"), (f"own-{i}", "http://127.0.0.1:9/")):
            r = world.call("PUT", f"/v1/alert_receivers/{name}", keys[i]["management"], json={"type": "webhook", "url": url})
            assert r.status_code == 200, r.text
    for i, owns in enumerate(sc["owns"]):
        k = keys[i]["management"]
        alerts = world.call("GET", "/v1/alerts", k).json()["alerts"]
        expect = [(f"Lines-{markers[i]}", 2 * n + 1)] if "deployment" in owns else []
        assert [(a["name"], a["value"]) for a in alerts] == expect, alerts
        assert [r["id"] for r in world.call("GET", "/v1/alert_rules", k).json()["rules"]] == \
               ([rules[i]["id"]] if i in rules else [])
        receivers = world.call("GET", "/v1/alert_receivers", k).json()["receivers"]
        assert sorted((r["name"], r["url"]) for r in receivers) == \
               [("own-%d" % i, "http://127.0.0.1:9/"), ("shared", f"http://127.0.0.1:9/{markers[i]}")]
        for j, rule in rules.items():
            if j != i:
                for method in ("GET", "PUT", "DELETE"):
                    body = {"json": rule_body(ids, f"Taken-{markers[i]}")} if method == "PUT" else {}
                    r = world.call(method, f"/v1/alert_rules/{rule['id']}", k, **body)
                    assert r.status_code == 404, (method, r.text)
                assert world.call("DELETE", f"/v1/alert_receivers/own-{j}", k).status_code == 404
    for i, rule in rules.items():  # untouched by the others, then gone for the next examples
        k = keys[i]["management"]
        assert world.call("GET", f"/v1/alert_rules/{rule['id']}", k).json()["name"] == f"Lines-{markers[i]}"
        assert world.call("DELETE", f"/v1/alert_rules/{rule['id']}", k).status_code == 200
    for i in range(len(keys)):
        for name in ("shared", f"own-{i}"):
            assert world.call("DELETE", f"/v1/alert_receivers/{name}", keys[i]["management"]).status_code == 200


def cli_everything(world, sc, keys, markers) -> None:
    ids = sc["ids"]
    runner = CliRunner()
    commands = {
        None: (["models"], ["alerts", "rules"], ["alerts", "receivers"], ["alerts", "active"],
               ["train", "projects"], ["chains", "list"], ["loops", "deployments"]),
        "deployment": (["deployments", ids["model_id"]], ["logs", ids["model_id"], ids["deployment_id"], "--since", "1h"],
                       ["requests", ids["model_id"], ids["deployment_id"], "--since", "1h"],
                       ["request", ids["model_id"], ids["deployment_id"], ids["request_id"]],
                       ["metrics", ids["model_id"], ids["deployment_id"], "--since", "1h", "--metric", "tenancy_rw"]),
        "chainlet": (["chains", "deployments", ids["chain_id"]],
                     ["chains", "logs", ids["chain_id"], ids["chain_deployment_id"], ids["chainlet_id"], "--since", "1h"]),
        "training": (["train", "jobs", ids["training_project_id"]],
                     ["train", "logs", ids["training_project_id"], ids["training_job_id"], "--since", "1h"],
                     ["train", "metrics", ids["training_project_id"], ids["training_job_id"], "--since", "1h"]),
        "loops": (["loops", "logs", ids["loops_id"], "--since", "1h"], ["loops", "metrics", ids["loops_id"], "--since", "1h"]),
    }
    for i, owns in enumerate(sc["owns"]):
        for kind, argvs in commands.items():
            for argv in argvs:
                out = runner.invoke(cli, [*argv, "--server", world.url, "--key", keys[i]["management"]])
                if kind is None or kind in owns:
                    assert out.exit_code == 0, (argv, out.output)
                else:
                    assert out.exit_code != 0 and "404" in out.output, (argv, out.output)
                no_foreign(out.output, i, markers, " ".join(argv))


def write_inventory(world, sc, keys, markers) -> None:
    """Every workspace upserts the shared ids: each reads back its own, and an id's parent
    in another workspace is no conflict here (docs/api.md#inventory)."""
    ids = sc["ids"]
    puts = ((f"/v1/models/{M}", {"name": "n"}), (DEP, {"name": "n"}), (f"/v1/chains/{C}", {"name": "n"}),
            (f"/v1/chains/{C}/deployments/{CD}", {}), (f"/v1/training_projects/{P}", {"name": "n"}),
            (JOB, {}), (LOOPS, {}))
    for i in range(len(keys)):
        for template, body in puts:
            name = {"name": f"n-{markers[i]}"} if "name" in body else {}
            r = world.call("PUT", fill(template, ids), keys[i]["management"], json=name)
            assert r.status_code == 200, (template, r.text)
            no_foreign(r.text, i, markers, f"PUT {template}")
    for i in range(len(keys)):
        got = world.call("GET", fill(f"/v1/models/{M}", ids), keys[i]["management"]).json()
        assert got["name"] == f"n-{markers[i]}", got


# 10 to 15 s an example on the 2-core machine; the drill below runs many more
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
          phases=NO_SHRINK)
@given(sc=scenarios())
def test_no_key_reads_another_workspaces_data(world, sc):
    run(world, sc)


@pytest.mark.drill
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
          phases=NO_SHRINK)
@given(sc=scenarios())
def test_no_key_reads_another_workspaces_data_drill(world, sc):
    run(world, sc)


def run(world, sc) -> None:
    n = next(world.examples)
    markers = [f"mk{secrets.token_hex(4)}x{n}w{i}" for i in range(len(sc["owns"]))]
    keys = [world.workspace(f"tenancy-{n}-{i}") for i in range(len(markers))]
    feed(world, sc, keys, markers)
    read_everything(world, sc, keys, markers)
    tail_everything(world, sc, keys, markers)
    alert_everything(world, sc, keys, markers)
    cli_everything(world, sc, keys, markers)
    write_inventory(world, sc, keys, markers)


def _routes(app) -> set[tuple[str, str]]:
    out, todo = set(), list(app.routes)
    while todo:
        r = todo.pop()
        if hasattr(r, "original_router"):  # FastAPI's included router
            todo.extend(r.original_router.routes)
        elif getattr(r, "methods", None) and r.path.startswith(("/v1/", "/metrics", "/api/")):
            out |= {(m, r.path.replace("{deployment_id}", L) if r.path.startswith("/v1/loops/") else r.path)
                    for m in r.methods - {"HEAD"}}
    return {x for x in out if not x[1].startswith(("/v1/admin/", "/v1/otlp/"))}


def test_every_routed_path_is_probed_and_so_is_every_call_of_the_dashboard(world):
    probed = {(m, p) for m, p, _, _ in PROBES} | {("GET", p + "/stream") for ps in STREAMS.values() for p in ps}
    assert _routes(world.app) == probed | OTHER_ROUTES
    shapes = {re.sub(r"\{\w+\}", "x", p) for _, p in probed}
    calls = set()
    for js in STATIC.glob("*.js"):
        for literal in re.findall(r"[`\"]((?:/v1/|\$\{(?:base|path)\}/)[^`\"]*)[`\"]", js.read_text()):
            calls.add(re.sub(r"\$\{[^}]*\}", "x", literal))
    assert len(calls) >= 10, calls
    for call in calls:
        # a call built on a base path (`${base}/metrics`) is checked by its tail
        assert call in shapes if call.startswith("/v1/") else any(s.endswith(call[1:]) for s in shapes), call
