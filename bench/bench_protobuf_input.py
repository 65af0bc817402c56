"""OTLP metrics into rows two ways, in this process: Sonde's path (protobuf view, the
metrics walk, cumulative to delta, Arrow) against ClickHouse's own ``Protobuf`` input
format parsing the same bytes in chDB and flattening them to one row per data point.

    .venv/bin/python bench/bench_protobuf_input.py
    .venv/bin/python bench/bench_protobuf_input.py --steps 6 --steps 180 --rounds 5

The requests are the peers harness's (bench/peers/wire.py): one replica's export of
``steps`` samples per series, 16 GPU gauges and a 12-bucket latency histogram by
four status codes, at 10 s; consecutive requests of a replica move on in time, as an
exporter's do. Each replica's first request is sent off the clock (it registers the
series). ClickHouse reads a schema rendered from the installed opentelemetry-proto's
own descriptors (so both sides read the same messages) and is asked the two
statements a store would need (number points, histogram points) with 1, 10 and 50
length-delimited requests per statement (the batches that fit the timed requests);
"parse only" reads every field and builds no rows. With one request a statement, its
rows must equal Sonde's. A third row reads each data point's fields once in Python
(time, attributes, value or buckets, sum and count) and does nothing with them: the
floor of any Python path over the protobuf library. Figures are process CPU (chDB's
threads included) per request.

Neither side inserts here: this isolates the step the issue named as an avenue
("letting ClickHouse parse the protobuf"); the insert and merges cost the same after
either. The ClickHouse side produces no series keys, no cumulative deltas and no
per-point validation, so it is a lower bound on what that avenue would cost.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

from google.protobuf import descriptor_pb2
from google.protobuf.internal.encoder import _VarintBytes

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))

import wire  # noqa: E402
from workload import SCALES, Fleet  # noqa: E402

from sonde.ingest.columns import SeriesCache  # noqa: E402
from sonde.ingest.cumulative import SeriesState  # noqa: E402
from sonde.ingest.metrics import MetricsWalk  # noqa: E402
from sonde.ingest.proto import ViewMetricsRequest  # noqa: E402
from sonde.ingest.registrar import Registrar  # noqa: E402
from sonde.store import open_store  # noqa: E402
from sonde.store.inventory import Inventory  # noqa: E402

_SCALARS = {v: n[5:].lower() for n, v in descriptor_pb2.FieldDescriptorProto.Type.items()
            if n not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")}


def _field(f) -> str:
    label = "repeated " if f.label == f.LABEL_REPEATED else "optional " if f.proto3_optional else ""
    kind = f.type_name if f.type in (f.TYPE_MESSAGE, f.TYPE_ENUM) else _SCALARS[f.type]
    packed = " [packed = false]" if f.options.HasField("packed") and not f.options.packed else ""
    return f"{label}{kind} {f.name} = {f.number}{packed};"


def _message(m, pad: str) -> list[str]:
    out = [f"{pad}message {m.name} {{"]
    for e in m.enum_type:
        out += [f"{pad}  enum {e.name} {{"] + [f"{pad}    {v.name} = {v.number};" for v in e.value] + [f"{pad}  }}"]
    for n in m.nested_type:
        out += _message(n, pad + "  ")
    oneofs: dict[int, list[str]] = {}
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            oneofs.setdefault(f.oneof_index, []).append(_field(f))
        else:
            out.append(f"{pad}  {_field(f)}")
    for i, fields in oneofs.items():
        out += [f"{pad}  oneof {m.oneof_decl[i].name} {{"] + [f"{pad}    {x}" for x in fields] + [f"{pad}  }}"]
    return out + [f"{pad}}}"]


def render_proto(module) -> str:
    """A generated ``_pb2`` module's file back as .proto text (messages, enums, oneofs)."""
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    lines = ['syntax = "proto3";', f"package {fdp.package};"] + [f'import "{d}";' for d in fdp.dependency]
    for e in fdp.enum_type:
        lines += [f"enum {e.name} {{"] + [f"  {v.name} = {v.number};" for v in e.value] + ["}"]
    for m in fdp.message_type:
        lines += _message(m, "")
    return "\n".join(lines) + "\n"


def write_schema(root: pathlib.Path) -> str:
    """The OTLP metrics files under ``root``; returns ``format_schema`` for the request.
    The service file sits at the root, since ClickHouse resolves imports from the
    schema file's own directory."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    for module in (common_pb2, resource_pb2, metrics_pb2):
        path = root / module.DESCRIPTOR.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_proto(module))
    (root / "metrics_service.proto").write_text(render_proto(metrics_service_pb2))
    return f"{root / 'metrics_service.proto'}:ExportMetricsServiceRequest"


_KV = "Array(Tuple(key String, value Tuple(string_value String, int_value Int64, double_value Float64, bool_value Bool)))"
_NDP = (f"Array(Tuple(attributes {_KV}, start_time_unix_nano UInt64, time_unix_nano UInt64, as_double Float64,"
        " as_int Int64, flags UInt32))")
_HDP = (f"Array(Tuple(attributes {_KV}, start_time_unix_nano UInt64, time_unix_nano UInt64, count UInt64,"
        " sum Nullable(Float64), bucket_counts Array(UInt64), explicit_bounds Array(Float64), flags UInt32,"
        " min Nullable(Float64), max Nullable(Float64)))")
STRUCTURE = (f"resource_metrics Array(Tuple(resource Tuple(attributes {_KV}), scope_metrics Array(Tuple(metrics Array(Tuple("
             f"name String, unit String, gauge Tuple(data_points {_NDP}), sum Tuple(data_points {_NDP},"
             f" aggregation_temporality Int32, is_monotonic Bool), histogram Tuple(data_points {_HDP},"
             " aggregation_temporality Int32)))))))")
# One level at a time, each passing on only what the next needs: ARRAY JOIN copies every
# column it carries per element, and carrying a resource's whole subtree to its points
# cost 2-4x these statements.
_METRICS = """SELECT ra, m.name AS metric, m.unit AS unit, m.gauge.data_points AS g, m.sum.data_points AS sp,
       m.histogram.data_points AS h FROM (
    SELECT ra, sm.metrics AS ms FROM (
        SELECT mapFromArrays(r.resource.attributes.key, r.resource.attributes.value.string_value) AS ra,
               r.scope_metrics AS sms
        FROM {src} ARRAY JOIN resource_metrics AS r)
    ARRAY JOIN sms AS sm)
ARRAY JOIN ms AS m"""
_ATTRS = ("mapFromArrays(dp.attributes.key, arrayMap((s, i) -> if(s = '', toString(i), s),"
          " dp.attributes.value.string_value, dp.attributes.value.int_value))")
NUMBERS = f"""SELECT ra, metric, unit, dp.time_unix_nano AS t, dp.start_time_unix_nano AS st,
       dp.as_double + toFloat64(dp.as_int) AS v, {_ATTRS} AS attrs
FROM (SELECT ra, metric, unit, arrayConcat(g, sp) AS pts FROM ({_METRICS})) ARRAY JOIN pts AS dp"""
HISTOGRAMS = f"""SELECT ra, metric, unit, dp.time_unix_nano AS t, dp.start_time_unix_nano AS st, dp.count AS c,
       dp.sum AS s, dp.bucket_counts AS b, dp.explicit_bounds AS eb, {_ATTRS} AS attrs
FROM (SELECT ra, metric, unit, h FROM ({_METRICS})) ARRAY JOIN h AS dp"""


def requests(steps: int, count: int) -> tuple[list[list[bytes]], float]:
    """Per replica, ``count`` consecutive requests of ``steps`` samples a series; and
    the mean samples of a timed request (a restart leaves a step out now and then)."""
    fleet = Fleet(SCALES["small"], 1, time.time_ns() // 10**9 // 3600 * 3600 * 10**9)
    reps = [fleet.replica(d, r) for d, r in fleet.replicas()]
    out = [[wire.otlp(fleet, [d], k * steps, (k + 1) * steps) for k in range(count)] for d in reps]
    timed = [fleet.samples(d, k * steps, (k + 1) * steps) for d in reps for k in range(1, count)]
    return out, statistics.mean(timed)


def sonde_path(tmp: pathlib.Path, per_replica: list[list[bytes]]) -> tuple[list[float], int, dict[str, float]]:
    """CPU seconds per timed request (view decode, walk, cumulative state, Arrow), the
    rows the timed requests made, and the timed requests' CPU seconds by stage."""
    store = open_store("chdb", str(tmp / "sonde"))
    try:
        cache, registrar, state = SeriesCache(), Registrar(Inventory(store)), SeriesState(store)
        cpu, rows, stages = [], 0, dict.fromkeys(("decode and walk", "cumulative state", "Arrow"), 0.0)
        for k in range(len(per_replica[0])):
            for bodies in per_replica:
                t0 = time.process_time()
                walk = MetricsWalk("bench", cache, registrar).walk(ViewMetricsRequest.FromString(bodies[k]))
                blocks = [b for b in walk.blocks.values() if len(b)]
                with state.lock:
                    t1 = time.process_time()
                    change = state.apply("bench", blocks)
                    t2 = time.process_time()
                    tables = [b.to_arrow() for b in blocks]
                    t3 = time.process_time()
                    state.commit(change)
                t4 = time.process_time()
                if k:  # the first registers the replica's series
                    cpu.append(t4 - t0)
                    rows += sum(t.num_rows for t in tables)
                    for stage, took in zip(stages, (t1 - t0, t2 - t1 + t4 - t3, t3 - t2)):
                        stages[stage] += took
        return cpu, rows, stages
    finally:
        store.close()


def fields_once(per_replica: list[list[bytes]]) -> list[float]:
    """CPU seconds per timed request of reading every data point's fields once into
    lists through the protobuf view, and nothing else: no checks, no series, no
    cumulative state, no rows. What any path in Python over the protobuf library pays
    before its own work (docs/benchmarks.md, "Why the ingest target is out of reach")."""
    cpu = []
    for k in range(1, len(per_replica[0])):
        for bodies in per_replica:
            t = time.process_time()
            for rm in ViewMetricsRequest.FromString(bodies[k]).resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        which = m.WhichOneof("data")
                        dps = list(getattr(m, which).data_points)
                        got = [[p.time_unix_nano for p in dps], [tuple(p.attributes[:]) for p in dps]]
                        if which == "histogram":
                            got += [[p.bucket_counts[:] for p in dps], [p.sum for p in dps], [p.count for p in dps]]
                        else:
                            got.append([p.as_double for p in dps])
            cpu.append(time.process_time() - t)
    return cpu


def clickhouse_path(tmp: pathlib.Path, per_replica: list[list[bytes]], batch: int, what: str) -> tuple[list[float], int]:
    """CPU seconds per request, ``batch`` requests a statement; and the rows returned."""
    from chdb import session
    schema = write_schema(tmp / "proto")
    s = session.Session(str(tmp / "chdb"))
    try:
        bodies = [b for k in range(1, len(per_replica[0])) for bs in per_replica for b in bs[k:k + 1]]
        cpu, rows = [], 0
        for i in range(0, len(bodies) - batch + 1, batch):
            f = tmp / "in.bin"
            chunk = bodies[i:i + batch]
            f.write_bytes(chunk[0] if batch == 1 else b"".join(_VarintBytes(len(b)) + b for b in chunk))
            src = f"file('{f}', '{'ProtobufSingle' if batch == 1 else 'Protobuf'}', '{STRUCTURE}')"
            settings = f" SETTINGS format_schema = '{schema}'"
            t = time.process_time()
            if what == "parse":
                rows += s.query(f"SELECT count() FROM {src} WHERE NOT ignore(*)" + settings, "ArrowTable").num_rows
            else:
                for sql in (NUMBERS, HISTOGRAMS):
                    rows += s.query(sql.format(src=src) + settings, "ArrowTable").num_rows
            cpu.append((time.process_time() - t) / batch)
        return cpu, rows
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, action="append", help="samples a series per request (repeatable)")
    ap.add_argument("--rounds", type=int, default=7, help="timed requests per replica (16 replicas)")
    args = ap.parse_args()
    by_stage = []
    print("| samples a request | path | CPU ms a request (p50) | samples per CPU-s | vs Sonde's path |")
    print("|---|---|---|---|---|")
    for steps in args.steps or [6, 60, 180]:
        per_replica, samples = requests(steps, args.rounds + 1)
        with tempfile.TemporaryDirectory() as d:
            cpu, sonde_rows, stages = sonde_path(pathlib.Path(d), per_replica)
            base = statistics.median(cpu)
        by_stage.append((samples, {k: v / (len(cpu) * samples) for k, v in stages.items()}))
        results = [("Sonde: view, walk, cumulative, Arrow", base),
                   ("Python: each point's fields read once, nothing else", statistics.median(fields_once(per_replica)))]
        for batch in (b for b in (1, 10, 50) if b <= len(cpu)):
            for what in ("parse", "rows"):
                with tempfile.TemporaryDirectory() as d:
                    cpu, rows = clickhouse_path(pathlib.Path(d), per_replica, batch, what)
                if batch == 1 and what == "rows":  # one row a data point, as Sonde makes
                    assert rows == sonde_rows, (rows, sonde_rows)
                name = "parse only" if what == "parse" else "number and histogram rows"
                results.append((f"chDB Protobuf, {batch} a statement: {name}", statistics.median(cpu)))
        for name, cpu in results:
            print(f"| {samples:,.0f} | {name} | {cpu * 1000:.2f} | {samples / cpu:,.0f} | {base / cpu:.2f}x |")
    print("\nSonde's path by stage, us a sample (mean over the timed requests)\n")
    print("| samples a request | " + " | ".join(by_stage[0][1]) + " |")
    print("|---|" + "---|" * len(by_stage[0][1]))
    for samples, per in by_stage:
        print(f"| {samples:,.0f} | " + " | ".join(f"{v * 1e6:.3f}" for v in per.values()) + " |")


if __name__ == "__main__":
    main()
