"""Prometheus remote write 1.0 in: a ``WriteRequest`` -> the OTLP metrics request the
agent's scrape of the same page would have sent -> :meth:`Ingestor.metrics`.

So a series is stored exactly as if the agent had scraped it (docs/remote-write.md):
same names, kinds, units (:mod:`sonde.promtypes`), attributes, and the same
cumulative -> delta path with its reset and duplicate rules and its durable state.

* **Placement** comes from labels named as the export names them (:data:`PLACEMENT`,
  each to its ``sonde.*`` resource attribute); ``instance`` and ``job``, which
  Prometheus adds to every series, become ``service.instance.id`` (the replica when no
  ``replica`` label is there) and ``service.name``. The remaining labels are the
  point's attributes, as on the page. One OTLP resource per distinct placement.
* **Types.** Remote write 1.0 carries none beside the samples, so they are inferred
  (:meth:`Converter.kind`): a ``metadata`` entry of the same request naming the family
  decides; otherwise ``X_bucket`` with ``le`` makes ``X`` a classic histogram (with
  ``X_sum`` and ``X_count``), ``_total`` a counter, anything else a gauge. ``X_created``
  of a counter or histogram is its start time, not a series.
* Counters and histograms are cumulative (since ``X_created`` when sent, else since an
  unknown start: the first point ever seen of a series counts whole, as OTLP's does).
* What does not decode is a 400 and nothing of the request is stored: no ``__name__``,
  a label name empty or repeated, an ``le`` that is not a number, a timestamp outside
  1970..2262. Samples that decode but carry nothing to store are skipped and counted:
  NaN or infinite values (Prometheus's staleness markers are skipped without being
  counted: they say a series ended), a series without a placing label, a histogram
  whose buckets are incomplete or not cumulative, native histograms.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import defaultdict
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from .._exceptions import BadRequest
from ..promtypes import explicit_histogram, parse_le, unit_of
from . import prompb
from .columns import MAX_TS
from .metrics import Rejects
from .proto import ViewMetricsRequest

#: placement label -> the resource attribute that places by it (ingest/resource.py)
PLACEMENT = {label: "sonde." + label for label in (
    "model_id", "deployment_id", "replica", "environment", "chain_id", "chain_deployment_id", "chainlet_id",
    "training_project_id", "training_job_id", "loops_deployment_id", "node_id", "node_rank")}
#: labels Prometheus adds to every series of a target -> OTel's names for them
TARGET = {"instance": "service.instance.id", "job": "service.name"}
#: a series needs one of these to be placed
PLACING = ("deployment_id", "chainlet_id", "training_job_id", "loops_deployment_id")
SCOPE = "sonde.remote_write"
#: the NaN Prometheus writes when a series ends (value.StaleNaN)
STALE_NAN_BITS = 0x7FF0000000000002
_MAX_MS = MAX_TS // 1_000_000
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_COUNTER_LIKE = ("counter", "histogram", "summary")


def is_stale(v: float) -> bool:
    return v != v and struct.unpack("<Q", struct.pack("<d", v))[0] == STALE_NAN_BITS


@dataclass(frozen=True, slots=True)
class LabelSet:
    """A series' labels, read: its name, resource, attributes, bucket bound, placement."""

    name: str
    res: tuple[tuple[str, str], ...]
    attrs: tuple[tuple[str, str], ...]
    le: float | None
    placed: bool


@dataclass(slots=True)
class Series:
    index: int
    name: str
    res: tuple[tuple[str, str], ...]
    attrs: tuple[tuple[str, str], ...]
    samples: list[tuple[int, float]]  # (time in ms, value)
    le: float | None
    placed: bool


@dataclass
class _Hist:
    """One classic histogram series (family, placement, labels but ``le``) at one time."""

    le: dict[float, float] = field(default_factory=dict)
    sum: float = math.nan
    count: float | None = None
    stale: bool = True  # every sample seen is a staleness marker


def _bad(msg: str, where: str) -> BadRequest:
    return BadRequest(msg, field=where)


def read_labels(i: int, raw: tuple[bytes, ...]) -> LabelSet:
    """Series ``i``'s encoded labels, decoded and checked; 400 naming the field when they break a rule."""
    name, res, attrs, seen = "", {}, {}, set()
    for n, v in map(prompb.label, raw):
        if not n:
            raise _bad(f"timeseries[{i}] has a label with an empty name", f"timeseries[{i}].labels")
        if n in seen:
            raise _bad(f"timeseries[{i}] has the label {n!r} twice", f"timeseries[{i}].labels.{n}")
        seen.add(n)
        if v == "":
            continue  # Prometheus: an empty label is an absent one
        if n == "__name__":
            name = v
        elif n in PLACEMENT:
            res[PLACEMENT[n]] = v
        elif n in TARGET:
            res[TARGET[n]] = v
        else:
            attrs[n] = v
    if not name:
        raise _bad(f"timeseries[{i}] has no __name__ label (the metric name)", f"timeseries[{i}].labels.__name__")
    le = None
    if "le" in attrs and name.endswith("_bucket"):
        le = parse_le(attrs["le"])
        if le is None or le == -math.inf:
            raise _bad(f"timeseries[{i}] ({name}) has le={attrs['le'][:40]!r}, which is not a bucket bound "
                       "(a number or +Inf)", f"timeseries[{i}].labels.le")
    placed = any(res.get(PLACEMENT[p]) for p in PLACING)
    return LabelSet(name, tuple(sorted(res.items())), tuple(sorted(attrs.items())), le, placed)


class LabelSets:
    """Read label sets by their encoded labels, kept across requests: Prometheus sends the
    same series every scrape, and reading labels is most of a sample's cost. Bounded:
    cleared when full (a miss only costs a decode)."""

    def __init__(self, limit: int = 200_000):
        self.limit = limit
        self._sets: dict[tuple[bytes, ...], LabelSet] = {}

    def get(self, i: int, raw) -> LabelSet:
        key = tuple(raw)
        ls = self._sets.get(key)
        if ls is None:
            ls = read_labels(i, key)  # raises before anything is cached
            if len(self._sets) >= self.limit:
                self._sets.clear()
            self._sets[key] = ls
        return ls


LABEL_SETS = LabelSets()


def read_series(i: int, ts, label_sets: LabelSets = LABEL_SETS) -> Series:
    """One view TimeSeries checked and split; 400 naming the field when it breaks a rule."""
    ls = label_sets.get(i, ts.labels)
    samples = [(s.timestamp, s.value) for s in ts.samples]
    for j, (t, _) in enumerate(samples if samples and not 0 < min(samples)[0] <= max(samples)[0] <= _MAX_MS else ()):
        if not 0 < t <= _MAX_MS:
            raise _bad(f"timeseries[{i}].samples[{j}].timestamp {t} is not milliseconds since 1970 "
                       f"before 2262", f"timeseries[{i}].samples[{j}].timestamp")
    return Series(i, ls.name, ls.res, ls.attrs, samples, ls.le, ls.placed)


@functools.lru_cache(maxsize=1 << 16)
def _kvs(attrs: tuple[tuple[str, str], ...]) -> tuple[bytes, ...]:
    """A series' attributes as the encoded KeyValues a data point of the view carries
    (ingest/proto.py): built once per series, then shared by every point."""
    return tuple(KeyValue(key=k, value=AnyValue(string_value=v)).SerializeToString() for k, v in attrs)


class Converter:
    """One WriteRequest into one ExportMetricsServiceRequest (:attr:`request`), with what
    it skipped in :attr:`rejects`. Raises BadRequest before building anything.

    The request is built as the protobuf view (ingest/proto.py) that OTLP bodies decode
    to, so it goes to the metrics walk as it is. Generated messages would have to be
    encoded and decoded again, copying every point's KeyValues twice."""

    def __init__(self, wr):
        self.meta: dict[str, tuple[str, str]] = {}
        for m in wr.metadata:
            typ = prompb.METRIC_TYPES[m.type] if 0 <= m.type < len(prompb.METRIC_TYPES) else "unknown"
            self.meta[m.metric_family_name] = (typ, m.unit)
        self._kinds: dict[tuple[str, bool], tuple[str, str]] = {}  # a name's kind is one per request
        self.series = [read_series(i, ts) for i, ts in enumerate(wr.timeseries)]
        self.rejects = Rejects()
        self.samples = sum(len(s.samples) for s in self.series)
        natives = sum(len(ts.histograms) for ts in wr.timeseries)
        self.rejects.add(natives, "native histograms (Sonde reads classic _bucket series)")
        # families that are histograms by name: X_bucket with an le, X not declared otherwise
        self._hist_by_name = {s.name[:-7] for s in self.series if s.le is not None}
        self._counters_by_name = {s.name[:-6] for s in self.series if s.name.endswith("_total")}
        self.request = ViewMetricsRequest()
        self._scopes: dict[tuple, object] = {}
        self._metrics: dict[tuple, object] = {}
        self._build()

    # --- types ------------------------------------------------------------------------

    def declared(self, family: str) -> str:
        """The metadata type of ``family`` ('unknown' when none)."""
        return self.meta.get(family, ("unknown", ""))[0]

    def _family_type(self, family: str) -> str:
        typ = self.declared(family)
        if typ == "unknown" and family + "_total" in self.meta:
            typ = self.declared(family + "_total")  # text format's counter family carries _total
        return typ

    def kind(self, s: Series) -> tuple[str, str]:
        """(kind, family): kind is counter, gauge, histogram (a part of one), created
        (a counter's or histogram's start time) or summary (a summary's _sum/_count)."""
        key = (s.name, s.le is not None)
        found = self._kinds.get(key)
        if found is None:
            found = self._kinds[key] = self._kind(s)
        return found

    def _kind(self, s: Series) -> tuple[str, str]:
        name = s.name
        if name.endswith("_created"):
            base = name[:-8]
            typ = self._family_type(base)
            if typ in _COUNTER_LIKE or (typ == "unknown" and (base in self._counters_by_name
                                                              or base in self._hist_by_name)):
                return "created", base
        if name in self.meta and self.meta[name][0] != "unknown":
            return self._declared_kind(name, name, self.meta[name][0])
        for suffix in ("_total", "_bucket", "_sum", "_count"):
            if name.endswith(suffix) and self.declared(name[:-len(suffix)]) != "unknown":
                base = name[:-len(suffix)]
                return self._declared_kind(name, base, self.declared(base))
        if s.le is not None:
            return "histogram", name[:-7]
        for suffix in ("_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in self._hist_by_name:
                return "histogram", name[:-len(suffix)]
        if name.endswith("_total"):
            return "counter", name[:-6]
        return "gauge", name

    def _declared_kind(self, name: str, family: str, typ: str) -> tuple[str, str]:
        if typ == "counter":
            return "counter", name[:-6] if name.endswith("_total") else name
        if typ == "histogram" and name in (family + "_bucket", family + "_sum", family + "_count"):
            return "histogram", family
        if typ == "summary" and name in (family + "_sum", family + "_count"):
            return "summary", family
        return "gauge", name  # gauge, gauge histogram, info, stateset, a summary's quantiles

    # --- building -----------------------------------------------------------------------

    def _target(self, res: tuple, name: str, kind: str, unit: str):
        key = (res, name, kind)
        target = self._metrics.get(key)
        if target is None:
            sm = self._scopes.get(res)
            if sm is None:
                rm = self.request.resource_metrics.add()
                for k, v in res:
                    rm.resource.attributes.add(key=k).value.string_value = v
                sm = self._scopes[res] = rm.scope_metrics.add()
                sm.scope.name = SCOPE
            m = sm.metrics.add(name=name, unit=unit)
            if kind == "gauge":
                target = m.gauge
            elif kind == "histogram":
                target = m.histogram
                target.aggregation_temporality = _CUMULATIVE
            else:
                target = m.sum
                target.aggregation_temporality = _CUMULATIVE
                target.is_monotonic = True
            target.SetInParent()
            self._metrics[key] = target
        return target

    def _unit(self, name: str, family: str) -> str:
        return unit_of(name, self.meta.get(family, ("", ""))[1])

    def _build(self) -> None:
        created: dict[tuple, float] = {}
        numbers: list[tuple[Series, str, str]] = []
        hists: dict[tuple, dict[int, _Hist]] = defaultdict(dict)
        for s in self.series:
            kind, family = self.kind(s)
            if not s.placed:
                self.rejects.add(len(s.samples), f"{s.name}: no placement label ({', '.join(PLACING)})")
                continue
            if kind == "created":
                for _, v in s.samples:
                    if math.isfinite(v) and v > 0:
                        created[(family, s.res, s.attrs)] = v
            elif kind == "histogram":
                self._add_hist_samples(s, family, hists)
            else:
                numbers.append((s, kind, family))
        for s, kind, family in numbers:
            self._add_numbers(s, kind, family, created.get((family, s.res, s.attrs)))
        for (family, res, attrs), by_ts in hists.items():
            self._add_hists(family, res, attrs, by_ts, created.get((family, res, attrs)))

    def _add_hist_samples(self, s: Series, family: str, hists: dict) -> None:
        attrs = tuple(kv for kv in s.attrs if kv[0] != "le") if s.le is not None else s.attrs
        by_ts = hists[(family, s.res, attrs)]
        for t, v in s.samples:
            h = by_ts.get(t)
            if h is None:
                h = by_ts[t] = _Hist()
            h.stale = h.stale and is_stale(v)
            if s.le is not None:
                h.le[s.le] = v
            elif s.name.endswith("_sum"):
                h.sum = v
            elif s.le is None and s.name.endswith("_bucket"):
                raise _bad(f"timeseries[{s.index}] ({s.name}) is a bucket of histogram {family} without an le label",
                           f"timeseries[{s.index}].labels.le")
            else:
                h.count = v

    def _add_numbers(self, s: Series, kind: str, family: str, made: float | None) -> None:
        gauge = kind == "gauge"
        # a summary's _count counts observations: it has no unit (as the agent stores it)
        # (a counter's or a summary's unit is its family's, as the agent reads it)
        unit = "" if kind == "summary" and s.name.endswith("_count") else \
            self._unit(s.name if gauge else family, family)
        target = None
        for t, v in s.samples:
            if not math.isfinite(v):
                if not is_stale(v):
                    self.rejects.add(1, f"{s.name}: value is NaN or infinite")
                continue
            if target is None:
                target = self._target(s.res, s.name, "gauge" if gauge else "sum", unit)
            ts = t * 1_000_000
            start = 0 if gauge or made is None else min(int(made * 1e9), ts)
            dp = target.data_points.add(time_unix_nano=ts, start_time_unix_nano=start, as_double=v)
            dp.attributes.extend(_kvs(s.attrs))

    def _add_hists(self, family: str, res: tuple, attrs: tuple, by_ts: dict[int, _Hist], made: float | None) -> None:
        target = None
        for t in sorted(by_ts):
            h = by_ts[t]
            if h.stale:
                continue
            hist = explicit_histogram(h.le, h.count) if h.le else None
            if hist is None:
                why = ("buckets are not cumulative, not finite, or lack both +Inf and _count" if h.le
                       else "_sum/_count without its _bucket series in the same request")
                self.rejects.add(1, f"{family}: histogram {why}")
                continue
            bounds, buckets, _ = hist
            if target is None:
                target = self._target(res, family, "histogram", self._unit(family, family))
            ts = t * 1_000_000
            dp = target.data_points.add(
                time_unix_nano=ts, start_time_unix_nano=0 if made is None else min(int(made * 1e9), ts),
                count=sum(buckets), bucket_counts=buckets, explicit_bounds=bounds)
            if math.isfinite(h.sum):
                dp.sum = h.sum
            dp.attributes.extend(_kvs(attrs))


@dataclass
class Written:
    """What one WriteRequest became: ``future`` resolves once its rows are durable."""

    queued: object  # pipeline.Queued
    samples: int
    rejected: int
    message: str


def write(ingestor, ws: str, raw: bytes) -> Written:
    """Uncompressed WriteRequest bytes, converted and queued on ``ingestor`` for ``ws``.
    Raises BadRequest (nothing queued) when the request does not decode."""
    conv = Converter(prompb.parse(raw))
    queued = ingestor.metrics(ws, conv.request)
    rejected = conv.rejects.count + queued.rejected
    message = "; ".join(m for m in (conv.rejects.message("samples"), queued.message) if m)
    return Written(queued, conv.samples, rejected, message)
