"""``POST /api/v1/write``: Prometheus remote write 1.0 in, through the real app and store.

WriteRequests are built with the receiver's own runtime message classes and
snappy-compressed as Prometheus does; what they carry is checked through the
deployment metrics API (values computed here from what was sent) and, for "stored as
the agent would store it", row by row against the same page scraped by the agent's
converter and sent over OTLP.
"""

from __future__ import annotations

import math

import cramjam
import prometheus_client as pc
import pytest
from conftest import Client
from otlp_build import SEC, T0
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_page

from sonde.agent import otlp as agent_otlp
from sonde.agent.scrape import Converter, families
from sonde.ingest import prompb
from sonde.ingest.remote_write import STALE_NAN_BITS

HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}
PLACE = {"model_id": "m1", "deployment_id": "d1", "replica": "r0001"}
URL = "/v1/models/m1/deployments/d1/metrics"
MS = 1_000_000
STEP = 60 * SEC
# Ten one-minute steps ending at T0 (ten minutes before the run: recent, minute aligned).
W0 = T0 - 10 * STEP
WINDOW = {"start_epoch_millis": W0 // MS, "end_epoch_millis": T0 // MS}
STALE = __import__("struct").unpack("<d", STALE_NAN_BITS.to_bytes(8, "little"))[0]


def at(step: int, second: int = 10) -> int:
    """A time in milliseconds inside step ``step`` of the window."""
    return (W0 + step * STEP + second * SEC) // MS


def series(name: str, labels: dict, samples: list[tuple[int, float]], place: dict | None = PLACE):
    ts = prompb.TimeSeries()
    for k, v in sorted({"__name__": name, **(place or {}), **labels}.items()):
        ts.labels.add(name=k, value=v)
    for t, v in samples:
        ts.samples.add(timestamp=t, value=v)
    return ts


def body(tss, metadata=()) -> bytes:
    wr = prompb.WriteRequest()
    wr.timeseries.extend(tss)
    for family, typ, unit in metadata:
        wr.metadata.add(type=prompb.METRIC_TYPES.index(typ), metric_family_name=family, unit=unit)
    return bytes(cramjam.snappy.compress_raw(wr.SerializeToString()))


def write(ingest: Client, data: bytes, headers: dict | None = None, status: int = 204):
    r = ingest.post("/api/v1/write", content=data, headers={**HEADERS, **(headers or {})})
    assert r.status_code == status, r.text
    return r


@pytest.fixture
def ingest(app, creds) -> Client:
    return Client(app, creds["ingest_key"])


def metrics(client, names, mode="SERIES", url=URL) -> dict[str, tuple[str, list[dict], list[list]]]:
    r = client.get(url, params={"mode": mode, "metrics": ",".join(names), **WINDOW})
    assert r.status_code == 200, r.text
    b = r.json()
    out = {}
    for i, d in enumerate(b["metric_descriptors"]):
        out[d["name"]] = (d["kind"], d["label_sets"], [step["values"][i] for step in b["metric_values"]])
    return out


def rows(store, where: str = "1", **params) -> list[dict]:
    out = store.ex.query(
        f"SELECT metric, unit, toString(kind) AS kind, monotonic, attrs, replica, entity, value, count, sum,"
        f" bounds, buckets, toUnixTimestamp64Nano(ts) AS t, toUnixTimestamp64Nano(start_ts) AS st"
        f" FROM {store.t('metric_points')} WHERE {where} ORDER BY metric, t, toString(attrs)", params)
    for r in out:
        r["attrs"] = dict(r["attrs"])
    return out


def test_counters_gauges_and_histograms_show_the_sent_values(ingest, client, store):
    created = at(0, 0) / 1000 - 30  # the counter started 30 s before the window
    tss = [
        series("jobs_total", {"kind": "a"}, [(at(1), 5), (at(2), 8), (at(3), 20)]),
        series("jobs_created", {"kind": "a"}, [(at(1), created), (at(2), created), (at(3), created)]),
        series("queue_depth", {}, [(at(1, 0), 3), (at(2, 0), 7)]),  # each holds its step
    ]
    buckets = {"0.1": [1, 4], "1": [2, 6], "+Inf": [3, 9]}
    tss += [series("lat_seconds_bucket", {"le": le}, [(at(1), a), (at(2), b)]) for le, (a, b) in buckets.items()]
    tss += [series("lat_seconds_sum", {}, [(at(1), 3.55), (at(2), 5.0)]),
            series("lat_seconds_count", {}, [(at(1), 3), (at(2), 9)])]
    r = write(ingest, body(tss))
    assert "X-Sonde-Rejected" not in r.headers
    got = metrics(client, ["jobs_total", "queue_depth", "lat_seconds"])
    kind, labels, values = got["jobs_total"]
    assert (kind, labels) == ("COUNTER", [{"replica": "r0001", "kind": "a"}])
    # counted from its _created: the first point's increase is its whole value
    assert [v[0] for v in values[1:4]] == [5, 3, 12] and values[0] == [None]
    kind, labels, values = got["queue_depth"]
    assert (kind, labels, [v[0] for v in values[1:3]]) == ("GAUGE", [{"replica": "r0001"}], [3, 7])
    kind, labels, values = got["lat_seconds"]
    avg = labels.index({"stat": "avg"})
    assert kind == "HISTOGRAM"
    # no _created: the first point counts from an unknown start, so it counts whole
    assert values[1][avg] == pytest.approx(3.55 / 3) and values[2][avg] == pytest.approx((5.0 - 3.55) / 6)
    (h,) = [x for x in rows(store, "metric = 'lat_seconds'") if x["t"] == at(2) * MS]
    assert (h["kind"], h["unit"], h["bounds"], h["buckets"], h["count"]) == ("histogram", "s", [0.1, 1.0], [3, 1, 2], 6)
    summary = metrics(client, ["jobs_total"], mode="SUMMARY")["jobs_total"][2]
    assert summary == [[20]]


def _rows_of(store, entity):
    return [{k: v for k, v in r.items() if k != "entity"} for r in rows(store, "entity = {e:String}", e=entity)]


def test_stored_exactly_as_the_agent_stores_the_same_page(app, creds, store):
    """One prometheus_client page, scraped twice: by the agent's converter (sent over
    OTLP to deployment d-agent) and as Prometheus remote-writes it (to d-rw). The rows
    must be the same: names, kinds, units, attributes, start times, values, buckets."""
    reg = pc.CollectorRegistry()
    jobs = pc.Counter("jobs", "Jobs", ["kind"], registry=reg)
    lat = pc.Histogram("lat_seconds", "Latency", ["route"], buckets=(0.1, 1), registry=reg)
    size = pc.Summary("req_bytes", "Sizes", registry=reg)
    depth = pc.Gauge("queue_depth", "Depth", registry=reg)
    conv = Converter()
    ingest = Client(app, creds["ingest_key"])
    for k, t_ms in enumerate((at(1), at(2))):
        jobs.labels("a").inc(3 + k)
        jobs.labels("b").inc(1)
        for v in (0.05, 0.5, 3.0 * (k + 1)):
            lat.labels("/v1").observe(v)
        size.observe(10 * (k + 1))
        depth.set(4 - k)
        page = openmetrics_page(reg).decode()
        # the agent: its converter, its OTLP request, its resource
        res = agent_otlp.resource({"sonde.model_id": "m1", "sonde.deployment_id": "d-agent",
                                   "sonde.replica": "r0001"})
        points = conv.convert(families(page, "application/openmetrics-text"), t_ms * MS)
        r = ingest.post("/v1/otlp/v1/metrics", content=agent_otlp.metrics_request(res, points, t_ms * MS),
                        headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200 and not r.content, r.content
        # Prometheus: every sample a series, target labels added, types in metadata
        place = {"model_id": "m1", "deployment_id": "d-rw", "replica": "r0001", "job": "model",
                 "instance": "127.0.0.1:8000"}
        tss, meta = [], []
        for fam in families(page, "application/openmetrics-text"):
            meta.append((fam.name, fam.type, fam.unit))
            tss += [series(s.name, s.labels, [(t_ms, s.value)], place) for s in fam.samples]
        write(ingest, body(tss, meta))
    agent_rows, rw_rows = _rows_of(store, "d-agent"), _rows_of(store, "d-rw")
    assert {r["metric"] for r in rw_rows} == {"jobs_total", "lat_seconds", "req_bytes_sum", "req_bytes_count",
                                              "queue_depth"}
    assert len(agent_rows) == len(rw_rows) == 12
    for a, b in zip(agent_rows, rw_rows):
        assert {k: v for k, v in b.items() if not (isinstance(v, float) and math.isnan(v))} == \
            {k: v for k, v in a.items() if not (isinstance(v, float) and math.isnan(v))}


def test_types_without_metadata_are_inferred_from_names(ingest, store):
    t = at(1)
    write(ingest, body([
        series("a_total", {}, [(t, 2)]),
        series("b_bucket", {"le": "+Inf"}, [(t, 4)]), series("b_sum", {}, [(t, 1.5)]), series("b_count", {}, [(t, 4)]),
        series("c_sum", {}, [(t, 7)]), series("c_count", {}, [(t, 2)]),  # no buckets: gauges
        series("d_bucket", {}, [(t, 1)]),  # no le: a gauge like any other
        series("e_created", {}, [(t, 1.0)]),  # no counter e_total in sight: a gauge
        series("f_bytes", {}, [(t, 8)]),
    ]))
    got = {r["metric"]: (r["kind"], r["monotonic"], r["unit"]) for r in rows(store)}
    assert got == {"a_total": ("sum", True, ""), "b": ("histogram", False, ""), "c_sum": ("gauge", False, ""),
                   "c_count": ("gauge", False, ""), "d_bucket": ("gauge", False, ""),
                   "e_created": ("gauge", False, ""), "f_bytes": ("gauge", False, "By")}


def test_metadata_decides_types(ingest, store):
    t = at(1)
    write(ingest, body([
        series("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", {"gpu": "0"}, [(t, 900)]),  # a counter without _total
        series("temperature_total", {}, [(t, 40)]),  # named like a counter, declared a gauge
        series("s_sum", {}, [(t, 7)]), series("s_count", {}, [(t, 2)]), series("s", {"quantile": "0.5"}, [(t, 3)]),
        series("e_seconds", {}, [(t, 1)]),
    ], [("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", ""), ("temperature_total", "gauge", ""),
        ("s", "summary", ""), ("e_seconds", "gauge", "bytes")]))
    got = {r["metric"]: (r["kind"], r["monotonic"], r["unit"]) for r in rows(store)}
    assert got == {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("sum", True, ""), "temperature_total": ("gauge", False, ""),
                   "s_sum": ("sum", True, ""), "s_count": ("sum", True, ""), "s": ("gauge", False, ""),
                   "e_seconds": ("gauge", False, "By")}


def test_counter_reset_counts_from_zero(ingest, client):
    write(ingest, body([series("restarts_total", {}, [(at(1), 10), (at(2), 15)])]))
    write(ingest, body([series("restarts_total", {}, [(at(3), 3), (at(4), 4)])]))  # the process restarted
    write(ingest, body([series("restarts_total", {}, [(at(4), 4)])]))  # a retry: a duplicate, not counted
    _, _, values = metrics(client, ["restarts_total"])["restarts_total"]
    assert [v[0] for v in values[1:5]] == [10, 5, 3, 1]


def test_placement_labels_and_target_labels(ingest, client, store):
    t = at(1)
    write(ingest, body([
        series("up_seconds", {"code": "x"}, [(t, 1)],
               {"model_id": "m2", "deployment_id": "d2", "environment": "production", "job": "vllm",
                "instance": "10.0.0.7:8000"}),
        series("loss", {}, [(t, 0.5)], {"training_project_id": "p1", "training_job_id": "j1", "node_rank": "1",
                                         "node_id": "n-1", "replica": "r7"}),
    ]))
    by = {r["metric"]: r for r in rows(store)}
    # no replica label: the instance is the replica; job and instance are not attributes
    assert (by["up_seconds"]["entity"], by["up_seconds"]["replica"], by["up_seconds"]["attrs"]) == \
        ("d2", "10.0.0.7:8000", {"code": "x"})
    assert (by["loss"]["entity"], by["loss"]["replica"], by["loss"]["attrs"]) == ("j1", "r7", {"sonde.node_id": "n-1"})
    dep = client.get("/v1/models/m2/deployments/d2").json()
    assert dep["environment"] == "production", dep


def test_skipped_samples_are_counted_not_stored(ingest, store):
    t = at(1)
    r = write(ingest, body([
        series("ok", {}, [(t, 1)]),
        series("nan_gauge", {}, [(t, math.nan), (t + 1000, math.inf)]),
        series("gone", {}, [(t, STALE)]),  # a staleness marker: skipped, not counted
        series("nowhere", {}, [(t, 1)], place={"job": "node"}),  # no placing label
        series("badplace", {}, [(t, 1)], place={"deployment_id": "no spaces allowed"}),
        series("h_bucket", {"le": "1"}, [(t, 5)]), series("h_bucket", {"le": "+Inf"}, [(t, 4)]),  # not cumulative
    ]))
    assert r.headers["X-Sonde-Rejected"] == "5", r.headers  # 2 + 1 + 1 + 1: the marker is not one
    reasons = r.headers["X-Sonde-Rejected-Reasons"]
    for want in ("nan_gauge: value is NaN or infinite (2)", "nowhere: no placement label", "h: histogram buckets",
                 "sonde.deployment_id="):
        assert want in reasons, reasons
    assert [x["metric"] for x in rows(store)] == ["ok"]


def _bad_requests():
    good = series("good", {}, [(at(1), 1)])
    no_name = prompb.TimeSeries()
    no_name.labels.add(name="deployment_id", value="d1")
    no_name.samples.add(timestamp=at(1), value=1)
    twice = series("twice", {}, [(at(1), 1)])
    twice.labels.add(name="deployment_id", value="d9")
    empty = series("empty", {}, [(at(1), 1)])
    empty.labels.add(name="", value="v")
    good_raw = prompb.WriteRequest(timeseries=[good]).SerializeToString()
    bad_utf8 = b"\x0a\x07\x0a\x05\x0a\x01\xff\x12\x00"  # timeseries { labels { name: "\xff" } }
    return [
        ("no __name__", body([good, no_name]), "timeseries[1].labels.__name__"),
        ("a label twice", body([good, twice]), "timeseries[1].labels.deployment_id"),
        ("an empty label name", body([good, empty]), "timeseries[1].labels"),
        ("le not a number", body([good, series("h_bucket", {"le": "fast"}, [(at(1), 1)])]), "timeseries[1].labels.le"),
        ("le NaN", body([good, series("h_bucket", {"le": "NaN"}, [(at(1), 1)])]), "timeseries[1].labels.le"),
        ("declared histogram bucket without le",
         body([good, series("h_bucket", {}, [(at(1), 1)])], [("h", "histogram", "")]), "timeseries[1].labels.le"),
        ("timestamp 0", body([good, series("z", {}, [(0, 1)])]), "timeseries[1].samples[0].timestamp"),
        ("timestamp negative", body([good, series("z", {}, [(at(1), 1), (-5, 1)])]),
         "timeseries[1].samples[1].timestamp"),
        ("not snappy", b"\x10not snappy at all", "body"),
        ("empty body", b"", "body"),
        ("not protobuf", bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\xff\x0f")), "body"),
        ("label not UTF-8", bytes(cramjam.snappy.compress_raw(good_raw + bad_utf8)), "body"),
        ("trailing junk", bytes(cramjam.snappy.compress_raw(good_raw + b"\xff")), "body"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_requests())), ids=[c[0] for c in _bad_requests()])
def test_a_body_that_does_not_decode_is_400_and_stores_nothing(ingest, store, case):
    _, data, field = _bad_requests()[case]
    r = write(ingest, data, status=400)
    assert r.json()["error"]["field"] == field, r.json()
    assert r.json()["message"]
    assert rows(store) == []


@pytest.mark.parametrize("headers, status, field", [
    ({"Content-Type": "application/json"}, 415, "Content-Type"),
    ({"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}, 415, "Content-Type"),
    ({"Content-Encoding": "gzip"}, 415, "Content-Encoding"),
    ({"Content-Encoding": ""}, 415, "Content-Encoding"),
    ({"X-Prometheus-Remote-Write-Version": "2.0.0"}, 415, "X-Prometheus-Remote-Write-Version"),
])
def test_wrong_headers_are_refused(ingest, store, headers, status, field):
    r = write(ingest, body([series("x", {}, [(at(1), 1)])]), headers, status=status)
    assert r.json()["error"]["field"] == field
    assert rows(store) == []


def test_protobuf_proto_parameter_of_remote_write_1_is_accepted(ingest, store):
    write(ingest, body([series("x", {}, [(at(1), 1)])]),
          {"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"})
    assert len(rows(store)) == 1


@pytest.mark.server_config(max_body_bytes=4096)
def test_over_the_body_limit_after_snappy_is_413(ingest, store):
    # compresses to far less than the limit, inflates to far more
    big = series("x", {"pad": "a" * 20_000}, [(at(1), 1)])
    data = body([big])
    assert len(data) < 4096
    r = write(ingest, data, status=413)
    assert r.json()["error"]["field"] == "body"
    write(ingest, b"\x00" * 5000, status=413)  # as sent
    assert rows(store) == []


def test_keys_scope_and_tenancy(app, creds, ingest, client, store):
    data = body([series("x", {}, [(at(1), 1)])])
    assert ingest.post("/api/v1/write", content=data, headers=HEADERS, key=None).status_code == 401
    assert ingest.post("/api/v1/write", content=data, headers=HEADERS, key="nope").status_code == 401
    r = client.post("/api/v1/write", content=data, headers=HEADERS)  # a management key
    assert r.status_code == 403 and r.json()["error"]["field"] == "Authorization"
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    keys = {s: admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": s, "scope": s}).json()["key"]
            for s in ("ingest", "management")}
    write(Client(app, keys["ingest"]), data)
    assert client.get("/v1/models/m1/deployments/d1").status_code == 404  # not this workspace's
    other = Client(app, keys["management"])
    kind, _, values = metrics(other, ["x"])["x"]
    assert kind == "GAUGE" and values[1] == [1]
