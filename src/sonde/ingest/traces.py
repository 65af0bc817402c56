"""ExportTraceServiceRequest -> ``spans`` rows (docs/architecture.md, "Rows").

Spans are placed by their resource like metrics and logs. A span is rejected (and
counted in ``partial_success``) when its trace id is not 16 bytes, its span id not 8,
its start is 0 or past 2262, or it ends before it starts. Server spans are the
entity's requests (docs/api.md#requests): a request's id is its ``X-Request-ID``
(``http.request.header.x-request-id``, or a ``request_id`` attribute) where present,
else its trace id. The HTTP status and route come from the stable or the older
semantic conventions.

The walk needs nothing of the server: placing a resource's spans under their parent
(the registrar, which writes inventory) is left to whoever takes the walk's
:class:`SpanRows`, so the walk may run in another process (:mod:`.offload`).
"""

from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..store.schema import ARROW_SCHEMAS, group_columns
from .columns import MAX_TS
from .metrics import Rejects
from .proto import kv_pairs
from .resource import Placement, place
from .rows import AttrRows, expand_groups, hex_strings, map_column

SCHEMA = ARROW_SCHEMAS["spans"]
_TYPE = {f.name: f.type for f in SCHEMA}
#: the group columns the walk fills (``parent`` is :meth:`SpanRows.finish`'s)
SpanGroup = namedtuple("SpanGroup", [c for c in group_columns("spans") if c != "parent"])
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
_REQUEST_ID = ("http.request.header.x-request-id", "request_id", "sonde.request_id")
_STATUS = ("http.response.status_code", "http.status_code")
_ROUTE = ("http.route",)


def _first(attrs: dict[str, str], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = attrs.get(k)
        if v:
            if v.startswith("["):  # header attributes are string arrays, stored as JSON
                inner = v[2:-2]
                if len(v) >= 4 and v.startswith('["') and v.endswith('"]') and '"' not in inner and "\\" not in inner:
                    return inner  # one string without escapes: what json.loads would give, without it
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


#: what the walk keeps per span, in this order: one tuple a span, made columns at the end
_FIELDS = ("ts", "duration_ns", "trace_id", "span_id", "parent_span_id", "name", "kind", "status_code",
           "status_message", "http_status", "route", "request_id", "attrs")


@dataclass
class SpanRows:
    """A walk's rows but for ``parent`` and ``seq``: what :meth:`finish` adds once the
    resources' placements are resolved. Picklable: it crosses from a decoding process."""

    columns: pa.Table | None  # every column of the spans schema except parent and seq; None: no rows
    placements: list[Placement]  # per group, the resource placement its parent comes from
    group: np.ndarray  # per row, its group
    rejected: int
    message: str

    @property
    def n(self) -> int:
        return 0 if self.columns is None else self.columns.num_rows

    def finish(self, parents: list[str], first_seq: int) -> pa.Table:
        """The rows to commit: ``parents`` per group (placements' order), ``seq`` from ``first_seq``."""
        cols = dict(zip(self.columns.column_names, self.columns.columns))
        cols["parent"] = pa.array(parents, _TYPE["parent"]).take(pa.array(self.group))
        cols["seq"] = pa.array(np.arange(first_seq, first_seq + self.n, dtype=np.uint64))
        return pa.Table.from_arrays([cols[f.name] for f in SCHEMA], schema=SCHEMA)


class TracesWalk:
    def __init__(self, ws: str):
        self.ws = ws
        self.rejects = Rejects()
        self.groups: list[SpanGroup] = []
        self.placements: list[Placement] = []
        self.gidx: list[int] = []
        self.spans: list[tuple] = []
        self.attrs = AttrRows()  # the cache of decoded KeyValues

    @property
    def rows(self) -> int:
        return len(self.spans)

    def walk(self, req) -> "TracesWalk":
        for rs in req.resource_spans:
            pl = place(kv_pairs(rs.resource.attributes))
            if isinstance(pl, str):
                self.rejects.add(sum(len(ss.spans) for ss in rs.scope_spans), pl)
                continue
            group = (SpanGroup(ws=self.ws, scope=pl.scope, entity=pl.entity, replica=pl.replica), pl)
            extra = {"sonde.node_id": pl.node_id} if pl.node_id else {}
            for ss in rs.scope_spans:
                if ss.spans:
                    self._spans(ss.spans, group, extra)
        return self

    @staticmethod
    def _reason(s) -> str:
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
        return "end_time_unix_nano is before start_time_unix_nano"

    def _spans(self, spans, group: tuple[SpanGroup, Placement], extra: dict) -> None:
        # The hot loop of span ingest: each field read once, one tuple kept a span (made
        # columns once, in result), the common valid span checked in one expression,
        # and what a span's attributes give (its map, HTTP status, route, request id)
        # worked out once per distinct attribute list of the call: the child spans of one
        # kind repeat theirs. Ids stay bytes here (hex_strings converts them all at once).
        keep = self.spans.append
        n_before = len(self.spans)
        seen: dict[tuple, tuple] = {}
        for s in spans:
            start, end, trace_b, span_b, parent_b = (s.start_time_unix_nano, s.end_time_unix_nano, s.trace_id,
                                                      s.span_id, s.parent_span_id)
            if not (len(trace_b) == 16 and len(span_b) == 8 and (not parent_b or len(parent_b) == 8)
                    and 0 < start <= end <= MAX_TS):
                self.rejects.add(1, f"span {s.name[:100]!r}: {self._reason(s)}")
                continue
            raws = tuple(s.attributes[:])
            got = seen.get(raws)
            if got is None:
                got = seen[raws] = self._attr_facts(raws, extra)
            status_v, route_v, rid_v, pairs = got
            k = s.kind
            status = s.status
            keep((start, end - start, trace_b, span_b, parent_b, s.name, k, status.code, status.message, status_v,
                  route_v, rid_v or (trace_b.hex() if k == SERVER else ""), pairs))
        added = len(self.spans) - n_before
        if added:
            self.groups.append(group[0])
            self.placements.append(group[1])
            self.gidx.extend([len(self.groups) - 1] * added)

    def _attr_facts(self, raws: tuple, extra: dict) -> tuple:
        """One attribute list's HTTP status, route, request id and sorted map."""
        attrs = self.attrs.decode(raws)
        facts = (_status(attrs), _first(attrs, _ROUTE), _first(attrs, _REQUEST_ID)) if attrs else (0, "", "")
        attrs.update(extra)
        return (*facts, AttrRows.sorted_pairs(attrs))

    def result(self) -> SpanRows:
        n = self.rows
        columns = None
        if n:
            cols = expand_groups(self.groups, self.gidx, SpanGroup._fields, _TYPE)
            cols.update(zip(_FIELDS, zip(*self.spans)))
            for ids in ("trace_id", "span_id", "parent_span_id"):
                cols[ids] = hex_strings(cols[ids])
            cols["attrs"] = map_column(cols["attrs"], _TYPE["attrs"])
            columns = pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in SCHEMA if f.name in cols],
                                           names=[f.name for f in SCHEMA if f.name in cols])
        return SpanRows(columns, self.placements, np.array(self.gidx, dtype=np.int32), self.rejects.count,
                        self.rejects.message("spans"))
