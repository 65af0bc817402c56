"""Exporter against a scripted OTLP/HTTP receiver: a real HTTP server in this process that
answers what each test scripts (503 + Retry-After, 400, 413...), which the real Sonde
server cannot be made to do on cue. What it receives is decoded with the OTLP classes.
The end-to-end tests (test_agent_e2e.py) run the same code against the real server."""

from __future__ import annotations

import gzip
import http.server
import threading
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sonde.agent.export import Exporter
from sonde.agent.model import LogRecord, Point
from sonde.spool import Spool, retry_after

from live_server import free_port


class Receiver:
    """Records every request; ``script(path, index, body)`` returns (status, headers) for each."""

    def __init__(self, port: int | None = None, script=None):
        self.requests: list[tuple[float, str, int, bytes]] = []  # (time, path, status, raw body)
        self.script = script or (lambda path, i, body: (200, {}))
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Encoding"] == "gzip"
                assert self.headers["Authorization"] == "Bearer ingest-key"
                body = gzip.decompress(raw)
                status, headers = outer.script(self.path, len(outer.requests), body)
                outer.requests.append((time.monotonic(), self.path, status, body))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def accepted_lines(self) -> list[str]:
        out = []
        for _, path, status, raw in self.requests:
            if path.endswith("/logs") and status == 200:
                req = ExportLogsServiceRequest.FromString(raw)
                out += [r.body.string_value for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        return out

    def accepted_points(self) -> list[int]:
        out = []
        for _, path, status, raw in self.requests:
            if path.endswith("/metrics") and status == 200:
                req = ExportMetricsServiceRequest.FromString(raw)
                out += [dp.as_int for rm in req.resource_metrics for sm in rm.scope_metrics
                        for m in sm.metrics for dp in m.gauge.data_points]
        return out

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def make(tmp_path, url, flush_interval=0.05, start=True, **kw) -> Exporter:
    spool = Spool(str(tmp_path / "spool"))
    ex = Exporter(url, "ingest-key", spool, {"sonde.deployment_id": "d"}, flush_interval=flush_interval, **kw)
    return ex.start() if start else ex


def lines(exporter, start, n):
    for i in range(start, start + n):
        exporter.add_log(LogRecord(time.time_ns(), f"line {i}"))


def test_retry_after_forms():
    assert retry_after("3", 0) == 3.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after("bogus", 0) is None and retry_after(None, 0) is None
    assert retry_after("100000", 0) == 300.0  # capped: a confused server must not park data for a day


def test_healthy_path_sends_directly_without_touching_disk(tmp_path):
    rx = Receiver()
    ex = make(tmp_path, rx.url)
    try:
        lines(ex, 0, 50)
        ex.add_metrics([Point("g", "1", "gauge", 7)], time.time_ns())
        assert wait_for(lambda: len(rx.accepted_lines()) == 50 and rx.accepted_points() == [7])
        assert ex.stats.spooled_batches == 0 and len(ex.spool) == 0
    finally:
        ex.close()
        rx.close()
    assert ex.stats.sent_items == 51


def test_503_with_retry_after_spools_waits_and_replays_in_order_exactly_once(tmp_path):
    refusals = 3
    rx = Receiver(script=lambda path, i, body: (503, {"Retry-After": "1"}) if i < refusals else (200, {}))
    ex = make(tmp_path, rx.url)
    try:
        lines(ex, 0, 10)
        assert wait_for(lambda: len(rx.requests) >= 1)
        t_refused = rx.requests[0][0]
        for batch in range(1, 5):  # more lines while the server refuses: queued behind the spool
            lines(ex, batch * 10, 10)
            time.sleep(0.1)
        assert wait_for(lambda: len(rx.accepted_lines()) == 50, timeout=15)
        # Retry-After honoured: no request sooner than 1 s after the one refused before it
        times = [t for t, *_ in rx.requests]
        for before, after in zip(times[:refusals], times[1:refusals + 1]):
            assert after - before >= 0.95
        assert rx.accepted_lines() == [f"line {i}" for i in range(50)]
        # every spooled batch replayed, acknowledged, and gone from the spool
        assert wait_for(lambda: ex.stats.replayed_batches == ex.stats.spooled_batches and not len(ex.spool))
        assert ex.stats.replay_requests < ex.stats.replayed_batches  # in coalesced runs
        assert times[-1] - t_refused >= refusals * 0.95
    finally:
        ex.close()
        rx.close()


def test_server_down_then_up_on_the_same_port(tmp_path):
    port = free_port()
    ex = make(tmp_path, f"http://127.0.0.1:{port}")
    rx = None
    try:
        lines(ex, 0, 30)
        ex.add_metrics([Point("g", "1", "gauge", 1)], time.time_ns())
        assert wait_for(lambda: len(ex.spool) >= 2)  # connection refused: to disk
        lines(ex, 30, 30)
        ex.add_metrics([Point("g", "1", "gauge", 2)], time.time_ns())
        rx = Receiver(port=port)
        assert wait_for(lambda: len(rx.accepted_lines()) == 60, timeout=40)
        assert rx.accepted_lines() == [f"line {i}" for i in range(60)]
        assert wait_for(lambda: rx.accepted_points() == [1, 2])
    finally:
        ex.close()
        if rx:
            rx.close()


def test_close_while_down_keeps_everything_for_the_next_agent(tmp_path):
    port = free_port()
    ex = make(tmp_path, f"http://127.0.0.1:{port}")
    lines(ex, 0, 25)
    ex.close(timeout=1.0)
    assert len(ex.spool) >= 1
    ex.spool.close()
    rx = Receiver(port=port)
    ex2 = make(tmp_path, rx.url)
    try:
        lines(ex2, 25, 5)
        assert wait_for(lambda: len(rx.accepted_lines()) == 30)
        assert rx.accepted_lines() == [f"line {i}" for i in range(30)]
    finally:
        ex2.close()
        rx.close()


def test_bad_request_is_dropped_and_counted_not_retried(tmp_path):
    rx = Receiver(script=lambda path, i, body: (400, {}) if i == 0 else (200, {}))
    ex = make(tmp_path, rx.url)
    try:
        lines(ex, 0, 5)
        assert wait_for(lambda: len(rx.requests) == 1)
        lines(ex, 5, 5)
        assert wait_for(lambda: len(rx.accepted_lines()) == 5)
        time.sleep(0.3)
        assert rx.accepted_lines() == [f"line {i}" for i in range(5, 10)]
        assert ex.stats.dropped_batches == 1 and len(rx.requests) == 2
    finally:
        ex.close()
        rx.close()


def test_413_splits_a_coalesced_replay(tmp_path):
    gate = {"open": False}

    def script(path, i, raw):
        if not gate["open"]:
            return 503, {"Retry-After": "0.2"}
        # one spooled batch is one resource_logs entry: refuse runs of more than 2
        return (413, {}) if len(ExportLogsServiceRequest.FromString(raw).resource_logs) > 2 else (200, {})

    rx = Receiver(script=script)
    # batches cut by count alone: on a loaded machine a 50 ms timer could cut one short;
    # and every line queued before the export thread starts, which would otherwise take
    # whatever had gathered when it woke (13 lines, say: batches of 10 and 3)
    ex = make(tmp_path, rx.url, flush_interval=30.0, max_batch_records=10, start=False)
    try:
        lines(ex, 0, 60)
        ex.start()
        assert wait_for(lambda: len(ex.spool) == 6)
        gate["open"] = True
        assert wait_for(lambda: len(rx.accepted_lines()) == 60)
        assert rx.accepted_lines() == [f"line {i}" for i in range(60)]
        statuses = [status for _, _, status, _ in rx.requests]
        assert 413 in statuses and ex.stats.dropped_batches == 0
        sizes = [len(ExportLogsServiceRequest.FromString(raw).resource_logs) for _, _, st, raw in rx.requests if st == 200]
        assert max(sizes) <= 2 and sum(sizes) == 6  # runs halved (6, 3, 1) until the server took them
    finally:
        ex.close()
        rx.close()


def test_a_refused_batch_inside_a_replay_run_is_found_and_dropped_alone(tmp_path):
    gate = {"open": False}

    def script(path, i, raw):
        if not gate["open"]:
            return 503, {"Retry-After": "0.2"}
        return (400, {}) if b"line 25" in raw else (200, {})

    rx = Receiver(script=script)
    # batches cut by count alone: on a loaded machine a 50 ms timer could cut one short;
    # and every line queued before the export thread starts, which would otherwise take
    # whatever had gathered when it woke (13 lines, say: batches of 10 and 3)
    ex = make(tmp_path, rx.url, flush_interval=30.0, max_batch_records=10, start=False)
    try:
        lines(ex, 0, 60)
        ex.start()
        assert wait_for(lambda: len(ex.spool) == 6)
        gate["open"] = True
        assert wait_for(lambda: ex.stats.dropped_batches == 1 and not len(ex.spool))
        # the batch holding lines 20-29 is the only loss; the rest arrived once, in order
        assert rx.accepted_lines() == [f"line {i}" for i in range(60) if not 20 <= i < 30]
        refused = [st for _, _, st, _ in rx.requests if st == 400]
        assert len(refused) == 2  # the run, then that batch alone: not once per batch behind it
    finally:
        ex.close()
        rx.close()
