"""ExportTraceServiceRequest -> ``spans`` rows (docs/architecture.md, "Rows").

Spans are placed by their resource like metrics and logs. A span is rejected (and
counted in ``partial_success``) when its trace id is not 16 bytes, its span id not 8,
its start is 0 or past 2262, or it ends before it starts. Server spans are the
entity's requests (docs/api.md#requests): a request's id is its ``X-Request-ID``
(``http.request.header.x-request-id``, or a ``request_id`` attribute) where present,
else its trace id. The HTTP status and route come from the stable or the older
semantic conventions.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..store.schema import ARROW_SCHEMAS, group_columns
from .columns import MAX_TS
from .metrics import Rejects
from .proto import kv_pairs
from .resource import Placement, place
from .rows import AttrRows, expand_groups

SCHEMA = ARROW_SCHEMAS["spans"]
_TYPE = {f.name: f.type for f in SCHEMA}
SpanGroup = namedtuple("SpanGroup", group_columns("spans"))
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
_REQUEST_ID = ("http.request.header.x-request-id", "request_id", "sonde.request_id")
_STATUS = ("http.response.status_code", "http.status_code")
_ROUTE = ("http.route",)


def _first(attrs: dict[str, str], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = attrs.get(k)
        if v:
            if v.startswith("["):  # header attributes are string arrays, stored as JSON
                try:
                    items = json.loads(v)
                    v = str(items[0]) if items else ""
                except (ValueError, IndexError):
                    pass
            return v
    return ""


def _status(attrs: dict[str, str]) -> int:
    text = _first(attrs, _STATUS)
    return int(text) if text.isdigit() and int(text) < 65536 else 0


class TracesWalk:
    def __init__(self, ws: str, placer: Callable[[str, Placement], str]):
        self.ws = ws
        self.placer = placer
        self.rejects = Rejects()
        self.groups: list[SpanGroup] = []
        self.gidx: list[int] = []
        self.cols: dict[str, list] = {name: [] for name in (
            "ts", "duration_ns", "trace_id", "span_id", "parent_span_id", "name", "kind", "status_code",
            "status_message", "http_status", "route", "request_id")}
        self.attrs = AttrRows()

    @property
    def rows(self) -> int:
        return len(self.cols["ts"])

    def walk(self, req) -> "TracesWalk":
        for rs in req.resource_spans:
            pl = place(kv_pairs(rs.resource.attributes))
            if isinstance(pl, str):
                self.rejects.add(sum(len(ss.spans) for ss in rs.scope_spans), pl)
                continue
            group = SpanGroup(ws=self.ws, scope=pl.scope, entity=pl.entity, parent=self.placer(self.ws, pl),
                              replica=pl.replica)
            extra = {"sonde.node_id": pl.node_id} if pl.node_id else {}
            for ss in rs.scope_spans:
                if ss.spans:
                    self._spans(ss.spans, group, extra)
        return self

    def _reason(self, s) -> str | None:
        if len(s.trace_id) != 16:
            return "trace_id is not 16 bytes"
        if len(s.span_id) != 8:
            return "span_id is not 8 bytes"
        if s.parent_span_id and len(s.parent_span_id) != 8:
            return "parent_span_id is not 8 bytes"
        if s.start_time_unix_nano == 0:
            return "start_time_unix_nano is 0"
        if s.start_time_unix_nano > MAX_TS or s.end_time_unix_nano > MAX_TS:
            return "a span time is after the year 2262"
        if s.end_time_unix_nano < s.start_time_unix_nano:
            return "end_time_unix_nano is before start_time_unix_nano"
        return None

    def _spans(self, spans, group: SpanGroup, extra: dict) -> None:
        c, rows = self.cols, self.attrs
        n_before = self.rows
        for s in spans:
            reason = self._reason(s)
            if reason:
                self.rejects.add(1, f"span {s.name[:100]!r}: {reason}")
                continue
            attrs = rows.decode(s.attributes)
            trace = s.trace_id.hex()
            request_id = _first(attrs, _REQUEST_ID)
            c["ts"].append(s.start_time_unix_nano)
            c["duration_ns"].append(s.end_time_unix_nano - s.start_time_unix_nano)
            c["trace_id"].append(trace)
            c["span_id"].append(s.span_id.hex())
            c["parent_span_id"].append(s.parent_span_id.hex())
            c["name"].append(s.name)
            c["kind"].append(s.kind)
            c["status_code"].append(s.status.code)
            c["status_message"].append(s.status.message)
            c["http_status"].append(_status(attrs))
            c["route"].append(_first(attrs, _ROUTE))
            c["request_id"].append(request_id or (trace if s.kind == SERVER else ""))
            if extra:
                attrs.update(extra)
            rows.append(attrs)
        added = self.rows - n_before
        if added:
            self.groups.append(group)
            self.gidx.extend([len(self.groups) - 1] * added)

    def to_arrow(self, first_seq: int) -> pa.Table:
        n = self.rows
        cols = expand_groups(self.groups, self.gidx, SpanGroup._fields, _TYPE)
        cols.update(self.cols)
        cols["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        cols["attrs"] = self.attrs.to_arrow(_TYPE["attrs"])
        return pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in SCHEMA], schema=SCHEMA)
