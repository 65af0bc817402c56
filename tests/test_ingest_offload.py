"""Span decoding in a child process (``ingest_processes``): a real ``sonde serve`` with
``SONDE_INGEST_PROCESSES=1``, the OpenTelemetry SDK's spans, and its decoding process
killed mid-run. The answers must be those of a server that decodes spans itself."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from live_server import LiveServer
from otlp_build import encode
from test_requests import DEP, MODEL, RES, URL, record_requests, window


def _children(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children(recursive=True)


def _post(server: LiveServer, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/otlp/v1/traces", content=body, timeout=60,
                      headers={**headers, **server.headers("ingest_key")})


def _answers(server: LiveServer, sent: list[dict]) -> tuple[list, dict]:
    h = server.headers()
    listed = httpx.get(f"{server.url}{URL}", params={**window(sent), "limit": 100}, headers=h).raise_for_status().json()
    one = httpx.get(f"{server.url}{URL}/{sent[2]['request_id']}", headers=h).raise_for_status().json()
    return listed["requests"], one


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One server decoding spans in a child process, one decoding them itself (the
    tests run in order: the first sees the child start, the last stops the server)."""
    tmp = tmp_path_factory.mktemp("offload")
    offloading = LiveServer(str(tmp / "a"), env={"SONDE_INGEST_PROCESSES": "1"})
    inline = LiveServer(str(tmp / "b"))
    for s in (offloading, inline):
        os.makedirs(s.data_dir)
        s.start()
    yield offloading, inline
    for s in (offloading, inline):
        s.stop()


def test_spans_decoded_in_a_child_are_stored_as_the_server_would(servers):
    offloading, inline = servers
    t0 = (time.time_ns() // 10**9 - 120) * 10**9
    sent = record_requests(RES, t0)
    body, headers = encode(encode_spans(sent[0]["spans"]))
    assert not _children(offloading)  # started with the first span request, not before
    for s in servers:
        httpx.put(f"{s.url}/v1/models/{MODEL}/deployments/{DEP}", json={}, headers=s.headers()).raise_for_status()
        r = _post(s, body, headers)
        assert r.status_code == 200, r.text
    assert len(_children(offloading)) >= 1 and not _children(inline)
    listed, one = _answers(offloading, sent)
    assert [g["request_id"] for g in listed] == [x["request_id"] for x in sorted(sent, key=lambda x: -x["ms"])]
    assert (listed, one) == _answers(inline, sent)

    # a rejected span and a body that does not decode: answered as the server itself answers
    bad_ids = encode_spans(sent[0]["spans"])
    bad_ids.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01" * 8
    body, headers = encode(bad_ids)
    partial = [ExportTraceServiceResponse.FromString(_post(s, body, headers).content).partial_success
               for s in servers]
    assert partial[0] == partial[1] and partial[0].rejected_spans == 1
    assert "trace_id is not 16 bytes" in partial[0].error_message
    broken = [_post(s, b"\xff\xff", headers) for s in servers]
    assert [r.status_code for r in broken] == [400, 400]
    assert Status.FromString(broken[0].content) == Status.FromString(broken[1].content)


def test_a_killed_decoding_process_costs_a_retry_not_the_server(servers):
    offloading, _ = servers
    t0 = (time.time_ns() // 10**9 - 120) * 10**9
    sent = record_requests(RES, t0)
    body, headers = encode(encode_spans(sent[0]["spans"]))
    assert _post(offloading, body, headers).status_code == 200
    before = len(_answers(offloading, sent)[0])
    for child in _children(offloading):
        child.send_signal(signal.SIGKILL)
    # the pool notices the death on its next use: 503 with Retry-After, then a new child
    codes = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = _post(offloading, body, headers)
        codes.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        time.sleep(0.2)
    assert codes[0] == 503 and codes[-1] == 200, codes
    listed, _ = _answers(offloading, sent)
    assert len(listed) == before + len(sent)  # stored again once: the 503s stored nothing
    children = _children(offloading)
    offloading.stop()
    assert offloading.proc.returncode == 0
    # multiprocessing's resource tracker leaves on its own once the server's end of its pipe closes
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
