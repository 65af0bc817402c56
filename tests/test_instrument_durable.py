"""`configure(spool_dir=...)`: the SDK's spans and log records through the on-disk spool
(sonde.instrument.durable), against the scripted OTLP/HTTP receiver of
test_agent_export.py (503 + Retry-After, 400, 401 on cue). Real TracerProvider and
LoggerProvider, real batch processors, real files. With the real server and a real
agent, through an outage: tests/test_faults_outage.py."""

from __future__ import annotations

import logging
import os

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_agent_export import Receiver, wait_for

from live_server import free_port
from sonde.instrument import configure


def _configure(url: str, spool_dir, **kw):
    return configure(server=url, api_key="ingest-key", deployment_id="d1", replica="r0001", set_global=False,
                     attach_to_root_logger=False, spool_dir=str(spool_dir), **kw)


def _spans(telemetry, start: int, n: int) -> None:
    tracer = telemetry.tracer_provider.get_tracer("durable-test")
    for i in range(start, start + n):
        with tracer.start_as_current_span(f"op {i:04d}"):
            pass
    telemetry.tracer_provider.force_flush()  # one batch: the processor hands it to the exporter now


def _received_spans(rx: Receiver) -> list[str]:
    out = []
    for _, path, status, raw in rx.requests:
        if path.endswith("/v1/traces") and status == 200:
            req = ExportTraceServiceRequest.FromString(raw)
            out += [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return out


def _files(spool_dir) -> list[str]:
    return [f for _, _, names in os.walk(spool_dir) for f in names if f.endswith(".otlp.gz")]


def test_healthy_path_posts_directly_and_writes_no_batch_to_disk(tmp_path):
    rx = Receiver()
    t = _configure(rx.url, tmp_path / "spool")
    try:
        _spans(t, 0, 20)
        assert _received_spans(rx) == [f"op {i:04d}" for i in range(20)]
        assert _files(tmp_path / "spool") == []
    finally:
        t.shutdown()
        rx.close()


def test_503_spools_honours_retry_after_and_replays_in_order_once(tmp_path):
    refusals = 2
    rx = Receiver(script=lambda path, i, body: (503, {"Retry-After": "1"}) if i < refusals else (200, {}))
    t = _configure(rx.url, tmp_path / "spool")
    try:
        for batch in range(5):  # one refused, the rest queue behind it: no request jumps the spool
            _spans(t, batch * 10, 10)
        assert len(_files(tmp_path / "spool")) >= 4
        assert wait_for(lambda: len(_received_spans(rx)) == 50, timeout=15)
        assert _received_spans(rx) == [f"op {i:04d}" for i in range(50)]
        times = [at for at, *_ in rx.requests]
        assert all(b - a >= 0.95 for a, b in zip(times[:refusals], times[1:refusals + 1]))  # Retry-After
        assert wait_for(lambda: _files(tmp_path / "spool") == [])
    finally:
        t.shutdown()
        rx.close()


def test_log_records_too_and_a_later_process_replays_what_an_earlier_one_left(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _configure(url, tmp_path / "spool")  # nothing listens: connection refused
    log = logging.getLogger("durable-test")
    log.addHandler(first.log_handler)
    try:
        for i in range(30):
            log.warning("record %d", i)
        first.logger_provider.force_flush()
        _spans(first, 0, 10)
    finally:
        log.removeHandler(first.log_handler)
        first.shutdown()  # exits with the batches still on disk
    assert len(_files(tmp_path / "spool")) == 2
    rx = Receiver(port=port)
    second = _configure(url, tmp_path / "spool")  # the same slot, free again: replayed on start
    try:
        assert wait_for(lambda: len(_received_spans(rx)) == 10 and _files(tmp_path / "spool") == [], timeout=15)
        logs = [ExportLogsServiceRequest.FromString(raw) for _, path, status, raw in rx.requests
                if path.endswith("/v1/logs")]
        assert [r.body.string_value for req in logs for rl in req.resource_logs for sl in rl.scope_logs
                for r in sl.log_records] == [f"record {i}" for i in range(30)]
        assert [p for _, p, *_ in rx.requests] == ["/v1/otlp/v1/logs", "/v1/otlp/v1/traces"]  # made in that order
    finally:
        second.shutdown()
        rx.close()


def test_workers_sharing_a_spool_dir_take_their_own_slots(tmp_path):
    rx = Receiver()
    a, b = _configure(rx.url, tmp_path / "spool"), _configure(rx.url, tmp_path / "spool")
    try:
        _spans(a, 0, 1)
        _spans(b, 1, 1)
        assert sorted(os.listdir(tmp_path / "spool")) == ["0", "1"]
        assert sorted(_received_spans(rx)) == ["op 0000", "op 0001"]
    finally:
        a.shutdown()
        b.shutdown()
        rx.close()


def test_a_400_drops_the_batch_and_a_401_keeps_it(tmp_path, caplog):
    answers = {0: 400, 1: 401}
    rx = Receiver(script=lambda path, i, body: (answers.get(i, 200), {}))
    t = _configure(rx.url, tmp_path / "spool")
    try:
        _spans(t, 0, 3)   # 400: never storable, dropped with an error line
        _spans(t, 3, 3)   # 401: a key to fix, kept; replayed (after 30 s) or by drain
        assert len(_files(tmp_path / "spool")) == 1
        assert t.tracer_provider.force_flush() and t.force_flush(5_000)
        assert _received_spans(rx) == ["op 0003", "op 0004", "op 0005"]
        assert any("refused a traces batch, dropped (400" in r.getMessage() for r in caplog.records)
    finally:
        t.shutdown()
        rx.close()


def test_a_process_forked_after_configure_leaves_the_parents_spool_alone(tmp_path):
    """gunicorn --preload forks after configure(): the child must not append to, replay
    or ack the spool its parent holds (it posts directly, and says so)."""
    port = free_port()
    t = _configure(f"http://127.0.0.1:{port}", tmp_path / "spool")  # nothing listens: the parent spools
    try:
        _spans(t, 0, 5)
        assert len(_files(tmp_path / "spool")) == 1
        pid = os.fork()
        if pid == 0:  # the child: a batch of its own while the server is away, then exit
            code = 1
            try:
                _spans(t, 5, 5)
                t.shutdown()
                code = 0 if len(_files(tmp_path / "spool")) == 1 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        rx = Receiver(port=port)
        try:  # the parent's batch still waits for the parent, which replays it
            assert t.force_flush(5_000)
            assert _received_spans(rx) == [f"op {i:04d}" for i in range(5)]
        finally:
            rx.close()
    finally:
        t.shutdown()


def test_its_requests_leave_no_line_in_the_apps_logs(tmp_path, caplog):
    """httpx logs every request at INFO; the app's INFO logs (which an agent ships) must
    not gain a line per batch, while the app's own httpx requests still log."""
    caplog.set_level(logging.INFO, "httpx")
    rx = Receiver()
    t = _configure(rx.url, tmp_path / "spool")
    try:
        _spans(t, 0, 3)
        assert _received_spans(rx) == ["op 0000", "op 0001", "op 0002"]
        import httpx
        httpx.get(rx.url + "/elsewhere", timeout=5)  # the app's own request: still logged
        lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
        assert not [ln for ln in lines if "/v1/otlp/" in ln] and [ln for ln in lines if "/elsewhere" in ln]
    finally:
        t.shutdown()
        rx.close()
