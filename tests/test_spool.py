"""The on-disk spool: bound, order, reopen; and the concatenation replay relies on."""

from __future__ import annotations

import gzip
import logging
import os

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from sonde.agent import otlp
from sonde.agent.model import LogRecord
from sonde.spool import Spool, SpoolBusy


def body(tag: str, size: int = 100) -> bytes:
    return tag.encode().ljust(size, b".")


def test_append_peek_ack_in_order_per_kind(tmp_path):
    s = Spool(str(tmp_path))
    for i in range(3):
        s.append("logs", body(f"l{i}"))
        s.append("metrics", body(f"m{i}"))
    assert len(s) == 6 and s.bytes == 600 and s.kinds() == ["logs", "metrics"]
    run = s.peek("logs", max_entries=2)
    assert [s.read(e)[:2] for e in run] == [b"l0", b"l1"]
    s.ack(run)
    # the oldest waiting batch is now a metrics one
    assert s.kinds() == ["metrics", "logs"]
    assert [s.read(e)[:2] for e in s.peek("metrics", 10)] == [b"m0", b"m1", b"m2"]
    assert len(s) == 4 and s.bytes == 400
    with pytest.raises(ValueError):
        s.ack(s.peek("metrics", 3)[1:])  # replay never skips a batch
    s.close()


def test_peek_respects_the_byte_limit_but_always_gives_one(tmp_path):
    s = Spool(str(tmp_path))
    s.append("logs", body("a", 3000))
    s.append("logs", body("b", 100))
    assert len(s.peek("logs", 10, max_bytes=1000)) == 1  # larger than the limit alone: still sent
    s.ack(s.peek("logs", 1))
    s.append("logs", body("c", 100))
    assert len(s.peek("logs", 10, max_bytes=250)) == 2
    s.close()


def test_survives_reopen_and_keeps_numbering(tmp_path):
    s = Spool(str(tmp_path))
    for i in range(5):
        s.append("logs", body(f"x{i}"))
    s.ack(s.peek("logs", 2))
    s.close()
    # an append the dead agent never finished
    (tmp_path / "0000000000000099-logs.otlp.gz.tmp").write_bytes(b"half")
    s = Spool(str(tmp_path))
    assert [s.read(e)[:2] for e in s.peek("logs", 10)] == [b"x2", b"x3", b"x4"]
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    e = s.append("logs", body("x5"))
    assert e.seq == 6  # after every number used before, acknowledged or not
    assert [s.read(e)[:2] for e in s.peek("logs", 10)] == [b"x2", b"x3", b"x4", b"x5"]
    s.close()


def test_bounded_oldest_dropped_first_counted_and_warned(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "sonde.spool")
    now = [0.0]
    s = Spool(str(tmp_path), max_bytes=1000, monotonic=lambda: now[0])
    for i in range(10):
        s.append("logs" if i % 2 else "metrics", body(f"{i}", 300))
        now[0] += 1.0
    # 3 of 300 bytes fit in 1000: the 7 oldest went, across both kinds
    assert s.bytes == 900 and len(s) == 3
    assert (s.dropped_batches, s.dropped_bytes) == (7, 2100)
    left = sorted(s.read(e)[:1] for k in ("logs", "metrics") for e in s.peek(k, 10))
    assert left == [b"7", b"8", b"9"]
    # warned with running totals, but not on every drop (at most every 10 s)
    warnings = [r.getMessage() for r in caplog.records if "spool full" in r.getMessage()]
    assert len(warnings) == 1 and "1 batches (300 bytes) dropped so far" in warnings[0]
    now[0] += 60
    s.append("logs", body("big", 5000))  # larger than the whole spool: refused, counted
    assert s.dropped_batches == 8 and len(s) == 3
    warnings = [r.getMessage() for r in caplog.records if "spool full" in r.getMessage()]
    assert len(warnings) == 2 and "8 batches (7100 bytes)" in warnings[1]
    assert sorted(os.listdir(tmp_path)) == sorted([".lock", *(os.path.basename(e.path) for k in ("logs", "metrics") for e in s.peek(k, 10))])
    s.close()


def test_ack_of_a_batch_dropped_for_room_while_in_flight(tmp_path):
    s = Spool(str(tmp_path), max_bytes=250)
    s.append("logs", body("a"))
    in_flight = s.peek("logs", 1)
    s.append("logs", body("b"))
    s.append("logs", body("c"))  # drops "a"
    s.ack(in_flight)  # already gone: nothing to do, nothing else touched
    assert [s.read(e)[:1] for e in s.peek("logs", 10)] == [b"b", b"c"]
    s.close()


def test_one_agent_per_spool_dir(tmp_path):
    s = Spool(str(tmp_path))
    with pytest.raises(SpoolBusy):
        Spool(str(tmp_path))
    s.close()
    Spool(str(tmp_path)).close()  # released on close


def test_concatenated_requests_are_one_request_in_order():
    res = otlp.resource({"sonde.deployment_id": "d"})
    a = otlp.compress(otlp.logs_request(res, [LogRecord(1, "one"), LogRecord(2, "two")]))
    b = otlp.compress(otlp.logs_request(res, [LogRecord(3, "three")]))
    req = ExportLogsServiceRequest.FromString(gzip.decompress(otlp.concat([a, b])))
    assert [r.body.string_value for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records] == [
        "one", "two", "three"]
    assert otlp.count_items("logs", otlp.concat([a, b])) == 3
