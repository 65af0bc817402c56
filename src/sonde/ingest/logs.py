"""ExportLogsServiceRequest -> ``logs`` rows (docs/architecture.md, "Rows").

``ts`` is ``time_unix_nano``, else ``observed_time_unix_nano``, else arrival time.
``level`` comes from ``severity_number`` (1-8 DEBUG, 9-12 INFO, 13-16 WARNING,
17-24 ERROR), else from ``severity_text``, else 0 (no level). ``request_id`` and
``component`` are record attributes; ``attrs`` holds the other record attributes,
plus ``trace_id``/``span_id`` (hex) when set and the resource's ``sonde.node_id``/
``sonde.node_rank`` when present. ``seq`` numbers records in request order.
"""

from __future__ import annotations

import json
import re
from collections import namedtuple
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ..store.schema import ARROW_SCHEMAS, LEVELS, group_columns
from .metrics import MAX_TS, Rejects
from .proto import any_to_py, kv_pairs
from .resource import Placement, place
from .rows import AttrRows, expand_groups

SCHEMA = ARROW_SCHEMAS["logs"]
_TYPE = {f.name: f.type for f in SCHEMA}
#: the values of the columns constant over one resource's records, made by name
LogGroup = namedtuple("LogGroup", group_columns("logs"))

_BY_NUMBER = [0] + [LEVELS["DEBUG"]] * 8 + [LEVELS["INFO"]] * 4 + [LEVELS["WARNING"]] * 4 + [LEVELS["ERROR"]] * 8
_BY_TEXT = {
    "TRACE": LEVELS["DEBUG"], "DEBUG": LEVELS["DEBUG"], "INFO": LEVELS["INFO"], "INFORMATION": LEVELS["INFO"],
    "NOTICE": LEVELS["INFO"], "WARN": LEVELS["WARNING"], "WARNING": LEVELS["WARNING"], "ERROR": LEVELS["ERROR"],
    "ERR": LEVELS["ERROR"], "FATAL": LEVELS["ERROR"], "CRITICAL": LEVELS["ERROR"], "CRIT": LEVELS["ERROR"],
    "ALERT": LEVELS["ERROR"], "EMERGENCY": LEVELS["ERROR"], "EMERG": LEVELS["ERROR"], "PANIC": LEVELS["ERROR"],
}
_TRAILING_DIGITS = re.compile(r"\d+$")  # OTel short names: INFO2, WARN3, ...


def level_of(number: int, text: str) -> int:
    if 0 < number < len(_BY_NUMBER):
        return _BY_NUMBER[number]
    if text:
        return _BY_TEXT.get(_TRAILING_DIGITS.sub("", text.strip().upper()), 0)
    return 0


def _message(body) -> str:
    which = body.WhichOneof("value")
    if which == "string_value":
        return body.string_value
    if which is None:
        return ""
    return json.dumps(any_to_py(body), separators=(",", ":"), sort_keys=True)


class LogsWalk:
    def __init__(self, ws: str, placer: Callable[[str, Placement], str], *, now_ns: int):
        self.ws = ws
        self.placer = placer
        self.now_ns = now_ns
        self.rejects = Rejects()
        self.groups: list[LogGroup] = []
        self.gidx: list[int] = []
        self.ts: list[int] = []
        self.request_id: list[str] = []
        self.component: list[str] = []
        self.level: list[int] = []
        self.message: list[str] = []
        self.attrs = AttrRows()
        #: training jobs' ends reported by the agent: (job id, status, error, node rank)
        self.job_exits: list[tuple[str, str, str, int]] = []

    @property
    def rows(self) -> int:
        return len(self.ts)

    def walk(self, req) -> "LogsWalk":
        for rl in req.resource_logs:
            pl = place(kv_pairs(rl.resource.attributes))
            if isinstance(pl, str):
                self.rejects.add(sum(len(sl.log_records) for sl in rl.scope_logs), pl)
                continue
            parent = self.placer(self.ws, pl)
            extra = {}
            if pl.node_id:
                extra["sonde.node_id"] = pl.node_id
            if pl.node_rank >= 0:
                extra["sonde.node_rank"] = str(pl.node_rank)
            group = LogGroup(ws=self.ws, scope=pl.scope, entity=pl.entity, parent=parent,
                             environment=pl.environment, replica=pl.replica)
            for sl in rl.scope_logs:
                if sl.log_records:
                    self._records(sl.log_records, group, extra)
        return self

    def _records(self, recs, group: LogGroup, extra: dict) -> None:
        rows = self.attrs
        n_before = len(self.ts)
        for r in recs:
            ts = r.time_unix_nano or r.observed_time_unix_nano or self.now_ns
            if ts > MAX_TS:
                self.rejects.add(1, "time_unix_nano is after the year 2262")
                continue
            attrs = rows.decode(r.attributes)
            self.request_id.append(attrs.pop("request_id", ""))
            component = attrs.pop("component", "")
            self.component.append(component)
            if component == "sonde.agent" and "sonde.job.status" in attrs and group.scope == "training_job":
                self.job_exits.append((group.entity, attrs["sonde.job.status"], attrs.get("sonde.job.error", ""),
                                       int(extra.get("sonde.node_rank", -1))))
            if r.trace_id:
                attrs["trace_id"] = r.trace_id.hex()
            if r.span_id:
                attrs["span_id"] = r.span_id.hex()
            if extra:
                attrs.update(extra)
            self.ts.append(ts)
            self.level.append(level_of(r.severity_number, r.severity_text))
            self.message.append(_message(r.body))
            rows.append(attrs)
        added = len(self.ts) - n_before
        if added:
            self.groups.append(group)
            self.gidx.extend([len(self.groups) - 1] * added)

    def to_arrow(self, first_seq: int) -> pa.Table:
        n = len(self.ts)
        cols = expand_groups(self.groups, self.gidx, LogGroup._fields, _TYPE)
        cols["ts"] = np.array(self.ts, dtype=np.int64)
        cols["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        cols["request_id"] = self.request_id
        cols["component"] = self.component
        cols["level"] = np.array(self.level, dtype=np.uint8)
        cols["message"] = self.message
        cols["attrs"] = self.attrs.to_arrow(_TYPE["attrs"])
        return pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in SCHEMA], schema=SCHEMA)
