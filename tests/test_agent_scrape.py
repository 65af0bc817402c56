"""``--scrape``: Prometheus pages -> the agent's points.

Fixture pages (tests/fixtures/scrape/) are converted and checked point by point: a DCGM
exporter page as the exporter prints it, a vLLM page as prometheus_client prints it in
text 0.0.4 (``_created`` as gauge families of their own), an OpenMetrics page with
``_created`` lines. Then real peers: a prometheus_client HTTP server with vLLM's names in
this process, and targets that refuse, hang or answer garbage, none of which may hold
up the others. The end-to-end test runs ``sonde agent run --scrape`` against a real
server and reads what it stored.
"""

from __future__ import annotations

import http.server
import logging
import math
import pathlib
import socket
import threading
import time

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sonde.agent import otlp
from sonde.agent.scrape import Converter, Scraper, ScrapeError, Target, families, fetch, redact

from live_server import free_port

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "scrape"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
T0 = 1_750_000_000 * 10**9
LLAMA = {"engine": "0", "model_name": "meta-llama/Llama-3.1-8B-Instruct"}
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]


def convert(text: str, content_type: str = TEXT, conv: Converter | None = None, ts: int = T0):
    conv = conv or Converter()
    return conv.convert(families(text, content_type), ts), conv


def rows(points):
    return [(p.name, p.unit, p.kind, p.value, p.attrs, p.start_ns, p.bounds, p.buckets) for p in points]


# -- fixture pages ----------------------------------------------------------------------------


def test_dcgm_exporter_page():
    page = (FIXTURES / "dcgm-exporter.txt").read_text()
    first, conv = convert(page)
    assert len(first) == 36  # 21 fields x 2 GPUs, less the 3 counters' first sight (a baseline)
    points, conv = convert(page, conv=conv, ts=T0 + 15 * 10**9)
    assert len(points) == 42 and conv.dropped == conv.duplicates == 0
    gpu0 = {"gpu": "0", "UUID": "GPU-3b4f2c1e-6a9d-4e2b-9f5c-8d7e1a2b3c4d", "pci_bus_id": "00000000:18:00.0",
            "device": "nvidia0", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "gpu-node-7",
            "DCGM_FI_DRIVER_VERSION": "550.90.07"}
    by = {(p.name, p.attrs["gpu"]): p for p in points}
    assert rows([by["DCGM_FI_DEV_GPU_TEMP", "0"], by["DCGM_FI_DEV_POWER_USAGE", "1"], by["DCGM_FI_DEV_GPU_UTIL", "0"],
                 by["DCGM_FI_DEV_FB_USED", "0"], by["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "0"]]) == [
        ("DCGM_FI_DEV_GPU_TEMP", "", "gauge", 58, gpu0, 0, (), ()),
        ("DCGM_FI_DEV_POWER_USAGE", "", "gauge", 118.904,
         {**gpu0, "gpu": "1", "UUID": "GPU-9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "pci_bus_id": "00000000:2A:00.0",
          "device": "nvidia1"}, 0, (), ()),
        ("DCGM_FI_DEV_GPU_UTIL", "", "gauge", 87, gpu0, 0, (), ()),
        ("DCGM_FI_DEV_FB_USED", "", "gauge", 74418, gpu0, 0, (), ()),
        # a counter without _total keeps its name as printed; no _created: it counts from
        # the first scrape (the same page again: nothing since)
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "", "counter", 0, gpu0, T0, (), ()),
    ]
    assert by["DCGM_FI_DEV_XID_ERRORS", "1"].attrs["err_msg"] == "No Error"
    assert {p.name for p in points if p.kind == "counter"} == {
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"}


def test_vllm_page_in_text_format():
    points, _ = convert((FIXTURES / "vllm.txt").read_text())
    assert rows(points[:9]) == [
        ("vllm:num_requests_running", "", "gauge", 3.0, LLAMA, 0, (), ()),
        ("vllm:num_requests_waiting", "", "gauge", 1.0, LLAMA, 0, (), ()),
        ("vllm:kv_cache_usage_perc", "", "gauge", 0.4375, LLAMA, 0, (), ()),
        # text 0.0.4 carries _created as gauge families of their own: read as start times
        ("vllm:prompt_tokens_total", "", "counter", 1520.0, LLAMA, 1_740_000_000_500_000_000, (), ()),
        ("vllm:generation_tokens_total", "", "counter", 4096.0, LLAMA, 1_740_000_001_500_000_000, (), ()),
        ("vllm:prefix_cache_queries_total", "", "counter", 1520.0, LLAMA, 1_740_000_002_500_000_000, (), ()),
        ("vllm:prefix_cache_hits_total", "", "counter", 608.0, LLAMA, 1_740_000_003_500_000_000, (), ()),
        ("vllm:request_success_total", "", "counter", 7.0, {**LLAMA, "finished_reason": "stop"},
         1_740_000_004_500_000_000, (), ()),
        ("vllm:request_success_total", "", "counter", 1.0, {**LLAMA, "finished_reason": "length"},
         1_740_000_005_500_000_000, (), ()),
    ]
    ttft, itl, prompt = points[9:]
    assert (ttft.name, ttft.unit, ttft.kind, ttft.attrs, ttft.start_ns) == (
        "vllm:time_to_first_token_seconds", "s", "histogram", LLAMA, 1_740_000_006_500_000_000)
    assert ttft.bounds == tuple(TTFT_BUCKETS)  # +Inf is the overflow bucket, not a bound
    assert ttft.buckets == (0, 0, 0, 0, 1, 2, 1, 1, 1, 1, 0, 0, 1) + (0,) * 10
    assert ttft.value == pytest.approx(1.99)
    assert (itl.name, sum(itl.buckets), itl.buckets[:4]) == ("vllm:inter_token_latency_seconds", 88, (0, 80, 0, 8))
    assert (prompt.name, prompt.unit, prompt.value, prompt.buckets[7], prompt.buckets[9]) == (
        "vllm:request_prompt_tokens", "", 1520.0, 3, 1)


def test_openmetrics_page_with_created_lines():
    points, _ = convert((FIXTURES / "openmetrics-created.txt").read_text(), OPENMETRICS)
    assert rows(points) == [
        ("tgi_request_count_total", "", "counter", 42.0, {"method": "generate"}, 1_740_000_000_100_000_000, (), ()),
        ("tgi_request_count_total", "", "counter", 17.0, {"method": "generate_stream"}, 1_740_000_000_200_000_000,
         (), ()),
        ("tgi_queue_size", "", "gauge", 2.0, {}, 0, (), ()),
        ("model_load_time_seconds", "s", "gauge", 31.25, {}, 0, (), ()),
        ("tgi_request_duration_seconds", "s", "histogram", 19.5, {}, 1_740_000_000_300_000_000, (0.5, 1.0, 5.0),
         (3, 7, 2, 1)),
        # summary: a gauge per quantile (the NaN one is left out), _sum and _count as sums
        ("rpc_latency_seconds", "s", "gauge", 0.012, {"quantile": "0.5"}, 0, (), ()),
        ("rpc_latency_seconds_sum", "s", "counter", 1.5, {}, 1_740_000_000_400_000_000, (), ()),
        ("rpc_latency_seconds_count", "", "counter", 100, {}, 1_740_000_000_400_000_000, (), ()),
        ("build_info", "", "gauge", 1.0, {"version": "3.1.0", "revision": 'a"b\\c'}, 0, (), ()),
    ]


def test_nan_escapes_duplicates_and_inf_buckets():
    page = "\n".join([
        '# TYPE up gauge',
        'up{path="C:\\\\models\\\\llama",note="say \\"hi\\"\\nbye"} 1',
        'up{path="C:\\\\models\\\\llama",note="say \\"hi\\"\\nbye"} 2',   # the same series again
        'idle NaN',                                                        # untyped, no value yet
        'hot +Inf',
        '# TYPE lat histogram',
        'lat_bucket{le="0.1"} 0',
        'lat_bucket{le="+Inf"} 0',
        'lat_sum NaN',
        'lat_count 0',
        '# TYPE broken histogram',
        'broken_bucket{le="1"} 5',
        'broken_bucket{le="+Inf"} 3',                                      # not cumulative: skipped
        '',
    ])
    conv = Converter()
    convert(page, conv=conv)  # the histogram's first sight is its baseline
    points, conv = convert(page, conv=conv, ts=T0 + 1)
    assert rows(points) == [
        ("up", "", "gauge", 1, {"path": "C:\\models\\llama", "note": 'say "hi"\nbye'}, 0, (), ()),
        ("lat", "", "histogram", points[1].value, {}, T0, (0.1,), (0, 0)),
    ]
    assert math.isnan(points[1].value) and conv.duplicates == 1
    # the histogram goes out without a sum (OTLP's sum is optional; a NaN one is refused)
    req = ExportMetricsServiceRequest.FromString(otlp.metrics_request(otlp.resource({}), points, T0 + 1))
    hist = req.resource_metrics[0].scope_metrics[0].metrics[1].histogram
    assert not hist.data_points[0].HasField("sum")


def test_otlp_histogram_points():
    p = convert((FIXTURES / "openmetrics-created.txt").read_text(), OPENMETRICS)[0][4]
    req = ExportMetricsServiceRequest.FromString(otlp.metrics_request(otlp.resource({"sonde.replica": "r1"}), [p], T0))
    m = req.resource_metrics[0].scope_metrics[0].metrics[0]
    assert (m.name, m.unit, m.WhichOneof("data")) == ("tgi_request_duration_seconds", "s", "histogram")
    assert m.histogram.aggregation_temporality == otlp.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    dp = m.histogram.data_points[0]
    assert (dp.time_unix_nano, dp.start_time_unix_nano, dp.count, dp.sum) == (T0, 1_740_000_000_300_000_000, 13, 19.5)
    assert (list(dp.explicit_bounds), list(dp.bucket_counts)) == ([0.5, 1.0, 5.0], [3, 7, 2, 1])
    assert otlp.count_items(otlp.METRICS, otlp.compress(req.SerializeToString())) == 1


def test_start_times_resets_and_staleness():
    conv, s = Converter(), 10**9

    def scrape(page, ts):
        return {(p.name, p.attrs.get("k")): (p.start_ns, p.value) for p in convert(page, conv=conv, ts=ts)[0]
                if p.kind != "gauge"}

    page = "# TYPE req_total counter\nreq_total{k=\"a\"} %d\nreq_total{k=\"b\"} %d\n"
    # first sight without _created: a baseline, nothing sent (the counts before it have no known start)
    assert scrape(page % (5, 5), T0) == {}
    # then counts since the baseline's scrape
    assert scrape(page % (9, 7), T0 + 15 * s) == {("req_total", "a"): (T0, 4), ("req_total", "b"): (T0, 2)}
    # a dropped: reset (the process restarted), it counts from just after the last scrape, from zero
    assert scrape(page % (2, 8), T0 + 30 * s) == {("req_total", "a"): (T0 + 15 * s + 1, 2), ("req_total", "b"): (T0, 3)}
    # b disappears: stale, nothing sent for it ...
    assert scrape('# TYPE req_total counter\nreq_total{k="a"} 3\n', T0 + 45 * s) == {
        ("req_total", "a"): (T0 + 15 * s + 1, 3)}
    # ... and when it comes back it is a new baseline, even at a higher value
    assert ("req_total", "b") not in scrape(page % (4, 100), T0 + 60 * s)
    assert scrape(page % (4, 130), T0 + 75 * s)[("req_total", "b")] == (T0 + 60 * s, 30)


def test_histogram_without_created_counts_from_its_baseline():
    conv = Converter()
    page = "# TYPE lat histogram\nlat_bucket{le=\"1\"} %d\nlat_bucket{le=\"+Inf\"} %d\nlat_sum %s\nlat_count %d\n"
    assert convert(page % (3, 4, "2.5", 4), conv=conv)[0] == []
    (p,), _ = convert(page % (5, 9, "10.5", 9), conv=conv, ts=T0 + 10**9)
    assert (p.start_ns, p.buckets, p.value) == (T0, (2, 3), 8.0)


def test_series_limit_cuts_the_page_and_counts(caplog):
    page = "# TYPE g gauge\n" + "".join(f'g{{i="{i}"}} {i}\n' for i in range(50))
    points, conv = convert(page, conv=Converter(series_limit=10))
    assert [p.attrs["i"] for p in points] == [str(i) for i in range(10)] and conv.dropped == 40

    server = PageServer(lambda: (200, "text/plain", page.encode()))
    try:
        sent = []
        t = Target(server.url, lambda pts, ts: sent.append(pts), interval=60, series_limit=10)
        with caplog.at_level(logging.WARNING, "sonde.agent"):
            t.scrape()
            t.scrape()
        assert len(sent) == 2 and len(sent[0]) == 10 and t.dropped.value == 80
        warnings = [r.getMessage() for r in caplog.records if "more than 10 series" in r.getMessage()]
        assert len(warnings) == 1 and "40 dropped" in warnings[0]  # once per streak, not per scrape
    finally:
        server.close()


# -- real peers --------------------------------------------------------------------------------


class PageServer:
    """An HTTP server answering every GET with ``answer() -> (status, content type, body)``."""

    def __init__(self, answer):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, ctype, body = answer()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Mute:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def vllm_registry() -> tuple[CollectorRegistry, dict]:
    """vLLM's engine metrics as vLLM declares them (names, types, label names, buckets)."""
    r = CollectorRegistry()
    labels = ["model_name", "engine"]
    m = {
        "running": Gauge("vllm:num_requests_running", "Requests running.", labels, registry=r),
        "waiting": Gauge("vllm:num_requests_waiting", "Requests waiting.", labels, registry=r),
        "kv": Gauge("vllm:kv_cache_usage_perc", "KV-cache usage.", labels, registry=r),
        "prompt": Counter("vllm:prompt_tokens", "Prefill tokens.", labels, registry=r),
        "generation": Counter("vllm:generation_tokens", "Generation tokens.", labels, registry=r),
        "ttft": Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels, registry=r,
                          buckets=TTFT_BUCKETS),
    }
    return r, m


def test_a_prometheus_client_server_scraped_as_vllm_serves_it():
    r, m = vllm_registry()
    m["running"].labels("llama", "0").set(4)
    m["kv"].labels("llama", "0").set(0.25)
    m["prompt"].labels("llama", "0").inc(100)
    for v in (0.05, 0.3, 0.3):
        m["ttft"].labels("llama", "0").observe(v)
    port = free_port()
    httpd, _ = start_http_server(port, addr="127.0.0.1", registry=r)
    try:
        sent = []
        t = Target(f"http://127.0.0.1:{port}/metrics", lambda pts, ts: sent.append((pts, ts)), interval=60)
        t.scrape()
        m["prompt"].labels("llama", "0").inc(20)
        t.scrape()
        (first, ts1), (second, ts2) = sent
        by = {p.name: p for p in second}
        labels = {"model_name": "llama", "engine": "0"}
        assert by["vllm:num_requests_running"].value == 4 and by["vllm:num_requests_running"].attrs == labels
        assert by["vllm:kv_cache_usage_perc"].value == 0.25
        prompt = by["vllm:prompt_tokens_total"]  # the colon kept (text 0.0.4 negotiated, _created read as gauges)
        assert prompt.kind == "counter" and prompt.value == 120
        assert 0 < prompt.start_ns <= ts1 and prompt.start_ns == {p.name: p for p in first}[prompt.name].start_ns
        ttft = by["vllm:time_to_first_token_seconds"]
        assert ttft.kind == "histogram" and ttft.buckets[5] == 1 and ttft.buckets[9] == 2 and sum(ttft.buckets) == 3
        assert "vllm:num_requests_waiting" not in by  # declared with labels, never set: no series
        assert t.errors.value == 0 and ts2 > ts1
    finally:
        httpd.shutdown()


def test_failing_hanging_and_garbage_targets_never_block_the_others():
    r, m = vllm_registry()
    m["running"].labels("llama", "0").set(1)
    port = free_port()
    httpd, _ = start_http_server(port, addr="127.0.0.1", registry=r)
    mute = Mute()
    garbage = PageServer(lambda: (200, "text/html", b"<html><body>502 Bad Gateway</body></html>"))
    server_error = PageServer(lambda: (500, "text/plain", b"oops"))
    refused = f"http://127.0.0.1:{free_port()}/metrics"
    good = f"http://user:secret@127.0.0.1:{port}/metrics"
    sent: dict[int, int] = {}
    lock = threading.Lock()

    def emit(points, ts):
        with lock:
            sent[len(points)] = sent.get(len(points), 0) + 1

    scraper = Scraper([mute.url, garbage.url, refused, server_error.url, good], emit, interval=0.2,
                      start_ns=T0, timeout=1.0)
    try:
        scraper.start()
        time.sleep(2.5)
        t0 = time.monotonic()
        scraper.stop()  # the mute target is mid-scrape: stop does not wait out its timeout
        assert time.monotonic() - t0 < 1.5
    finally:
        httpd.shutdown()
        mute.close()
        garbage.close()
        server_error.close()
    mute_t, garbage_t, refused_t, error_t, good_t = scraper.targets
    assert sent.get(1, 0) >= 5  # the good target, every 0.2 s, whatever the others do
    assert good_t.errors.value == 0 and good_t.name == f"http://127.0.0.1:{port}/metrics"  # no password
    assert 1 <= mute_t.errors.value <= 3 and "within 1 s" in mute_t.last_error
    assert garbage_t.errors.value >= 5 and "unreadable page" in garbage_t.last_error
    assert refused_t.errors.value >= 5 and "ConnectError" in refused_t.last_error
    assert error_t.errors.value >= 5 and error_t.last_error == "HTTP 500"
    counters = {(p.name, p.attrs["target"]): p for p in scraper.points()}
    assert counters["sonde.scrape.errors", mute.url].value == mute_t.errors.value
    assert counters["sonde.scrape.errors", mute.url].kind == "counter"
    assert counters["sonde.scrape.errors", mute.url].start_ns == T0
    assert counters["sonde.scrape.series", good_t.name].value == 1


def test_body_size_and_url_checks():
    import httpx

    big = PageServer(lambda: (200, "text/plain", b"g 1\n" * 1000))
    try:
        with httpx.Client() as client, pytest.raises(ScrapeError, match="over 100"):
            fetch(client, big.url, 5.0, max_bytes=100)
    finally:
        big.close()
    assert redact("https://u:p@host:9400/metrics?x=1") == "https://host:9400/metrics?x=1"
    with pytest.raises(ValueError, match="http"):
        Target("localhost:8000/metrics", lambda *a: None, interval=1)


# -- end to end ----------------------------------------------------------------------------------

# A model server as vLLM exposes its engine metrics (prometheus_client, vLLM's names and
# buckets). It serves fixed values, then, once the agent has sent the first ones, more
# (the file "<state>.more" is the signal): the store must hold both, in order.
MODEL_SERVER = '''
import os, signal, sys, time
from prometheus_client import Counter, Gauge, Histogram, start_http_server
port, state = int(sys.argv[1]), sys.argv[2]
labels = ["model_name", "engine"]
running = Gauge("vllm:num_requests_running", "Requests running.", labels).labels("llama", "0")
prompt = Counter("vllm:prompt_tokens", "Prefill tokens.", labels).labels("llama", "0")
ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels,
                 buckets=%r).labels("llama", "0")
running.set(3)
prompt.inc(1520)
for v in (0.05, 0.3, 0.3):
    ttft.observe(v)
start_http_server(port, addr="127.0.0.1")
print("serving metrics", flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop and not os.path.exists(state + ".more"):
    time.sleep(0.05)
running.set(5)
prompt.inc(480)
ttft.observe(2.0)
open(state + ".done", "w").close()
while not stop:
    time.sleep(0.05)
''' % (TTFT_BUCKETS,)


def stored_scrapes(data_dir, deployment: str) -> list[dict]:
    import json
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent('''
        import sys
        from chdb import session
        s = session.Session(sys.argv[1])
        print(str(s.query("SELECT metric, kind, monotonic, unit, replica, attrs, toUnixTimestamp64Nano(ts) AS t, "
                          "toUnixTimestamp64Nano(start_ts) AS st, value, count, sum, bounds, buckets "
                          "FROM sonde.metric_points WHERE entity = '" + sys.argv[2] + "' AND "
                          "(metric LIKE 'vllm:%' OR metric LIKE 'sonde.scrape.%') ORDER BY metric, ts",
                          "JSONEachRow")))
        s.close()
    ''')
    out = subprocess.run([sys.executable, "-c", code, os.path.join(data_dir, "store"), deployment],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.e2e
def test_agent_scrapes_a_model_server_into_the_store(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from live_server import LiveServer
    from test_agent_e2e import wait_until

    (tmp_path / "data").mkdir()
    (tmp_path / "model.py").write_text(MODEL_SERVER)
    (tmp_path / "ingest.key").write_text("")
    server = LiveServer(tmp_path / "data").start()
    (tmp_path / "ingest.key").write_text(server.creds["ingest_key"])
    port, state = free_port(), tmp_path / "model"
    err_path = tmp_path / "agent.stderr"
    cmd = [sys.executable, "-m", "sonde", "agent", "run", "--server", server.url, "--key-file",
           str(tmp_path / "ingest.key"), "--model-id", "m-scrape", "--deployment-id", "d-scrape", "--replica", "r0001",
           "--interval", "1", "--scrape", f"http://127.0.0.1:{port}/metrics", "--scrape-interval", "1",
           "--scrape", f"http://127.0.0.1:{free_port()}/metrics",  # nobody there: counted, harmless
           "--spool-dir", str(tmp_path / "spool"), "--no-echo",
           "--", sys.executable, str(tmp_path / "model.py"), str(port), str(state)]
    env = {k: v for k, v in os.environ.items() if k != "SONDE_API_KEY"}
    with open(err_path, "wb") as err:
        agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            import httpx

            def served() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(served, 30, "the model server's metrics page")
            time.sleep(2.5)  # two scrapes or more of the first values
            (tmp_path / "model.more").write_text("")
            wait_until(lambda: (tmp_path / "model.done").exists(), 10, "the second values")
            time.sleep(2.5)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, err_path.read_text()[-3000:]
        finally:
            if agent.poll() is None:
                agent.kill()
            server.stop()
    got = stored_scrapes(server.data_dir, "d-scrape")
    labels = {"engine": "0", "model_name": "llama"}

    def series(metric):
        rows = [g for g in got if g["metric"] == metric]
        assert rows and all(g["replica"] == "r0001" for g in rows), metric
        return rows

    running, prompt, ttft = (series(n) for n in ("vllm:num_requests_running", "vllm:prompt_tokens_total",
                                                  "vllm:time_to_first_token_seconds"))
    values = [g["value"] for g in running]
    assert values == sorted(values) and values[0] == 3 and values[-1] == 5, values  # each value from its scrape
    assert {(g["kind"], g["unit"], json_key(g["attrs"])) for g in running} == {("gauge", "", json_key(labels))}
    # the counter's increases add up to what the model server counted, from its _created on
    assert (prompt[0]["kind"], prompt[0]["monotonic"]) == ("sum", True)
    assert sum(g["value"] for g in prompt) == 2000
    assert prompt[0]["value"] == 1520 and prompt[0]["st"] < prompt[0]["t"]
    # one stamp per scrape. A batch the agent re-sends (its request timed out on a busy
    # machine after the server stored it) stores a gauge point twice; cumulative points
    # sent twice are dropped by the server (docs/agent.md, spool guarantees)
    assert [g["t"] for g in prompt] == sorted({g["t"] for g in running}) == [g["t"] for g in ttft]
    # the histogram arrives as an explicit-bucket histogram: vLLM's bounds, the +Inf bucket as overflow
    assert ttft[0]["bounds"] == TTFT_BUCKETS and ttft[0]["unit"] == "s"
    totals = [sum(col) for col in zip(*(g["buckets"] for g in ttft))]
    assert len(totals) == len(TTFT_BUCKETS) + 1
    assert {i: n for i, n in enumerate(totals) if n} == {5: 1, 9: 2, 12: 1}
    assert sum(g["count"] for g in ttft) == 4 and sum(g["sum"] for g in ttft) == pytest.approx(2.65)
    # the target nobody answers is counted, under its URL, and held nothing up
    errors = {json_key(g["attrs"]): 0 for g in got if g["metric"] == "sonde.scrape.errors"}
    for g in got:
        if g["metric"] == "sonde.scrape.errors":
            errors[json_key(g["attrs"])] += g["value"]
    dead = [n for k, n in errors.items() if str(port) not in k]
    assert len(errors) == 2 and dead[0] >= 3


def json_key(attrs: dict) -> str:
    import json

    return json.dumps(attrs, sort_keys=True)
