"""Histogram exemplars -> ``exemplars`` rows: the samples a histogram point kept with the
trace they came from, so a latency step links to its requests (docs/api.md#requests).

Only exemplars with a 16-byte trace id are kept: one without a trace links nothing.
"""

from __future__ import annotations

import pyarrow as pa

from ..store.schema import ARROW_SCHEMAS
from .columns import MAX_TS
from .proto import kv_pairs

SCHEMA = ARROW_SCHEMAS["exemplars"]


class Exemplars:
    def __init__(self):
        self.rows: dict[str, list] = {f.name: [] for f in SCHEMA}

    def __len__(self) -> int:
        return len(self.rows["ts"])

    def add(self, group, points) -> None:
        """The exemplars of ``points`` (histogram data points of one metric; ``group``
        the metric's group columns, ingest/columns.Group)."""
        r = self.rows
        for p in points:
            for e in p.exemplars:
                if len(e.trace_id) != 16 or not 0 < e.time_unix_nano <= MAX_TS:
                    continue
                for name in ("ws", "scope", "entity", "metric", "replica"):
                    r[name].append(getattr(group, name))
                r["ts"].append(e.time_unix_nano)
                r["value"].append(e.as_double if e.HasField("as_double") else float(e.as_int))
                r["trace_id"].append(e.trace_id.hex())
                r["span_id"].append(e.span_id.hex())
                r["attrs"].append(list(kv_pairs(e.filtered_attributes).items()))

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_arrays([pa.array(self.rows[f.name], f.type) for f in SCHEMA], schema=SCHEMA)
