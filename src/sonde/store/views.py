"""The materialized views from ``metric_points``, and the SQL they run at every insert.

Declared here, rendered and applied by ``store/schema.py`` (``create_view``, the
migrations). Each reads the shard's own ``metric_points`` and writes the shard's own
target table on a cluster: both are sharded by (workspace, entity), so rows stay put.
"""

from __future__ import annotations

from dataclasses import dataclass

#: metrics the training rollup keeps (the sources of query/training.METRICS), and its
#: bucket lengths in seconds: the values' levels, and one day for each series' labels
ROLLUP_METRICS = ("hw.gpu.memory.usage", "hw.gpu.utilization", "process.cpu.time", "container.cpu.time",
                  "process.memory.usage", "container.memory.working_set", "system.filesystem.usage",
                  "system.filesystem.limit")
ROLLUP_LEVELS_S = (60, 300, 600, 86400)
#: meta key: one more than the largest ``seq`` when the rollup's view was created;
#: points below it may be missing from the rollup, so windows holding any are read raw
ROLLUP_FROM_SEQ = "training_rollup_from_seq"


@dataclass(frozen=True)
class View:
    """A materialized view from metric_points into ``target`` (on a cluster: from and
    to the shard's local tables; both are sharded alike, so rows stay on their shard)."""

    name: str
    target: str
    #: SELECT with ``{src}`` where the source table goes
    select: str
    #: the newest point the target counted of a series, from the target's own columns
    newest: str


#: a GPU point's label: the semantic conventions' index, else the ``gpu`` label (DCGM
#: exporter's index), else the GPU's UUID (DCGM's ``UUID``, Triton's ``gpu_uuid``); the
#: queries label GPUs the same way
GPU_ATTRS = ("hw.gpu.index", "gpu", "UUID", "gpu_uuid")
GPU_INDEX = ("multiIf(" + "".join(f"mapContains(attrs, '{a}'), attrs['{a}'], " for a in GPU_ATTRS[:-1])
             + f"attrs['{GPU_ATTRS[-1]}'])")

#: the HTTP status attributes of request points, in order of preference: the stable
#: semantic conventions' and the older ones (query/catalogue.py's request sources)
STATUS_ATTRS = ("http.response.status_code", "http.status_code")
#: a request point's HTTP status code, 0 when it has none (or not a number)
HTTP_STATUS = (f"toUInt16OrZero(if(mapContains(attrs, '{STATUS_ATTRS[0]}'), attrs['{STATUS_ATTRS[0]}'],"
               f" attrs['{STATUS_ATTRS[1]}']))")

_ROLLUP_SELECT = f"""SELECT ws, entity, res, metric, monotonic, series,
       toDateTime(intDiv(t_ns, res * 1000000000) * res, 'UTC') AS ts, unit, replica, node_rank, gpu, mount, node_id,
       count() AS n, sum(value) AS total, min(t_ns) AS first_ns, max(t_ns) AS last_ns
FROM (
    SELECT ws, entity, metric, monotonic, series, toUnixTimestamp64Nano(ts) AS t_ns, unit, replica, node_rank,
           {GPU_INDEX} AS gpu,
           attrs['sonde.mount'] AS mount, attrs['sonde.node_id'] AS node_id, value
    FROM {{src}}
    WHERE scope = 'training_job' AND kind IN ('gauge', 'sum')
      AND metric IN ({", ".join(f"'{m}'" for m in ROLLUP_METRICS)})
)
ARRAY JOIN [{", ".join(str(r) for r in ROLLUP_LEVELS_S)}] AS res
GROUP BY ws, entity, res, metric, monotonic, series, ts, unit, replica, node_rank, gpu, mount, node_id"""

# The inner SELECT renames the columns the outer one aggregates under their own names.
TOTALS_SELECT = """SELECT ws, entity, series, layout, any(m) AS metric, any(k) AS kind, any(u) AS unit,
       any(rep) AS replica, any(a) AS attrs, any(b) AS bounds, any(sc) AS scale, sum(value) AS total,
       sum(c) AS n, sum(su) AS s, sum(zero_count) + sum(arraySum(neg_buckets)) AS low,
       sumMap(if(k = 'exp_histogram',
                 mapFromArrays(arrayMap(i -> toInt32(pos_offset + i - 1), arrayEnumerate(pos_buckets)), pos_buckets),
                 mapFromArrays(arrayMap(i -> toInt32(i - 1), arrayEnumerate(bk)), bk))) AS buckets,
       max(ts) AS last_ts
FROM (
    SELECT ws, entity, series,
           multiIf(kind = 'histogram', cityHash64(bounds), kind = 'exp_histogram', toUInt64(scale + 128), 0) AS layout,
           toString(metric) AS m, kind AS k, toString(unit) AS u, toString(replica) AS rep,
           CAST(attrs, 'Map(String, String)') AS a, bounds AS b, scale AS sc, value, count AS c, sum AS su,
           zero_count, neg_buckets, pos_offset, pos_buckets, buckets AS bk, ts
    FROM {src}
    WHERE scope = 'deployment' AND (kind IN ('histogram', 'exp_histogram') OR (kind = 'sum' AND monotonic))
)
GROUP BY ws, entity, series, layout"""



VIEWS: tuple[View, ...] = (
    View("training_rollup_mv", "training_rollup", _ROLLUP_SELECT, "fromUnixTimestamp64Nano(max(last_ns))"),
    View("series_totals_mv", "series_totals", TOTALS_SELECT, "max(last_ts)"),
)
VIEWS_BY_NAME = {v.name: v for v in VIEWS}




def repair(v: View, db: str) -> str:
    """An INSERT adding to the view's target the recent points it lacks.

    An INSERT into metric_points commits the points' part and then each view's: a
    process killed between them (kill -9, power) leaves points that the totals or the
    rollup do not count, and the crash drill saw it (docs/reliability.md, Faults). Per
    series, a point newer than the newest the target counted is not in it, and one not
    newer is (a series' points are stored in time order: a counter's newer than the last
    seen, or dropped at ingest; the agent's samples in the order taken), so a repair
    never counts a point twice. Recent: yesterday's and today's partitions hold what a
    commit in flight at a crash held, unless it held points sent days late.
    """
    src = (f"(SELECT p.* FROM {db}.metric_points AS p LEFT JOIN (SELECT ws, entity, series, {v.newest} AS newest"
           f" FROM {db}.{v.target} GROUP BY ws, entity, series) AS t"
           " ON p.ws = t.ws AND p.entity = t.entity AND p.series = t.series"
           " WHERE p.ts >= now() - INTERVAL 1 DAY AND p.ts > t.newest)")
    return f"INSERT INTO {db}.{v.target} " + v.select.format(src=src)
