"""Scrape Prometheus ``/metrics`` pages (``--scrape URL``) and send them as the agent's points.

Each target has its own thread and schedule, so a slow or hung target delays only
itself: never the sampler, never another target. A scrape is one GET (text 0.0.4
preferred, OpenMetrics accepted), bounded in time (``timeout`` for the whole
answer, not only per read) and in size (:data:`MAX_BODY_BYTES`), parsed by
``prometheus_client``'s parsers (the one the answer's Content-Type names), converted
by :class:`Converter`, and handed to the exporter stamped with the scrape's time.
A scrape that fails in any way sends nothing, is counted (``sonde.scrape.errors``)
and logged: the first failure of a streak as a warning, the recovery as info.

Types (docs/model-servers.md): counter -> cumulative monotonic sum; gauge, untyped,
info, stateset -> gauge per sample; histogram -> cumulative explicit-bucket
histogram; summary -> a gauge per quantile plus ``_sum`` and ``_count`` sums. A
series keeps its labels as attributes; the agent's resource places it. Units and
histogram buckets come from :mod:`sonde.promtypes`, which the server's remote-write
receiver shares, so a series lands on the same rows by either road.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from ..promtypes import explicit_histogram, unit_of
from . import promparse
from .model import SYSTEM_CLOCK, Clock, Counter, Point

log = logging.getLogger("sonde.agent")

# Text 0.0.4 first, OpenMetrics after: both carry what the agent keeps (prometheus_client
# prints ``_created`` as gauges in text, read below), and prometheus_client's OpenMetrics
# parser costs twice the CPU per page (bench/bench_scrape.py; issue 11's budget is 2% of a
# core for 5,000 series every 15 s). Servers pick the first type they speak, in order.
# ``escaping=allow-utf-8`` keeps names such as ``vllm:num_requests_running`` as they are
# where OpenMetrics is answered: without it prometheus_client's OpenMetrics writer
# replaces the colon in sample names.
ACCEPT = ("text/plain;version=0.0.4,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
          "application/openmetrics-text;version=0.0.1;q=0.4,*/*;q=0.1")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_SERIES_LIMIT = 10_000
promparse.install(4 * DEFAULT_SERIES_LIMIT)  # the parser memos (agent/promparse.py), once per process
#: a page larger than this is refused unread: 10,000 series are ~2 MB of text
MAX_BODY_BYTES = 32 << 20
_COUNTER_LIKE = ("counter", "histogram", "summary")


class ScrapeError(Exception):
    pass




def redact(url: str) -> str:
    """The URL without user and password: it names the target in logs and attributes."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--scrape {url!r}: want an http:// or https:// URL")
    return url


def fetch(client: httpx.Client, url: str, timeout: float, clock: Clock = SYSTEM_CLOCK,
          max_bytes: int = MAX_BODY_BYTES) -> tuple[str, str]:
    """(Content-Type, text) of one GET, within ``timeout`` seconds in all and ``max_bytes``."""
    deadline = clock.monotonic() + timeout
    try:
        with client.stream("GET", url, headers={"Accept": ACCEPT}, timeout=timeout) as r:
            if r.status_code != 200:
                raise ScrapeError(f"HTTP {r.status_code}")
            if int(r.headers.get("Content-Length") or 0) > max_bytes:
                raise ScrapeError(f"page of {r.headers['Content-Length']} bytes, over {max_bytes}")
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ScrapeError(f"page over {max_bytes} bytes")
                if clock.monotonic() > deadline:  # a target that trickles bytes
                    raise ScrapeError(f"no complete answer within {timeout:g} s")
            return r.headers.get("Content-Type", ""), body.decode("utf-8", "replace")
    except httpx.TimeoutException as exc:
        raise ScrapeError(f"no answer within {timeout:g} s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise ScrapeError(f"{type(exc).__name__}: {exc}") from exc


_TEXT_COUNTER = re.compile(r"^#[ \t]+TYPE[ \t]+(\S+)[ \t]+counter[ \t]*$", re.M)


def families(text: str, content_type: str) -> Iterable[Any]:
    """The page's metric families, by the parser its Content-Type names."""
    if content_type.split(";")[0].strip().lower() == "application/openmetrics-text":
        return parse_openmetrics(text)
    return _bare_counters(parse_text(text), set(_TEXT_COUNTER.findall(text)))


def _bare_counters(fams: Iterable[Any], declared: set[str]) -> Iterable[Any]:
    """Text-format counters under their names on the page. The parser gives every
    counter sample a ``_total`` (OpenMetrics' spelling), and DCGM's counters have none:
    a family the page declared without ``_total`` gets its samples' names back."""
    for fam in fams:
        if fam.type == "counter" and fam.name in declared:
            fam.samples = [s._replace(name=s.name[:-6]) if s.name == fam.name + "_total" else s
                           for s in fam.samples]
        yield fam


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


class Converter:
    """Parsed families -> points, per target, with what must survive from one scrape to
    the next: each cumulative series' start time, last value and baseline.

    A counter or histogram whose page gives its ``_created`` time counts from then. One
    without (DCGM's, the node exporter's) has counted since some moment the page does
    not say, so its first sight is a baseline, not a point: nothing is sent for it, and
    later points count from that scrape (their values less the baseline). Sending the
    first sight would put everything the counter ever counted into the first step.
    A value below the last one is a reset: the series starts again just after the
    previous scrape, from zero. A series missing from a page is forgotten (stale), so
    when it comes back it starts again at its next sight."""

    def __init__(self, series_limit: int = DEFAULT_SERIES_LIMIT):
        self.series_limit = series_limit
        #: series -> (start_ns, last cumulative value, baseline point or None)
        self._state: dict[tuple, tuple[int, float, Point | None]] = {}
        self._last_ts = 0
        self.dropped = 0      # of the last page: series past the limit
        self.duplicates = 0   # of the last page: repeats of a series already read

    def convert(self, fams: Iterable[Any], ts_ns: int) -> list[Point]:
        """Every family to points; the state moves only when the whole page parsed."""
        pending: list[tuple[tuple, Point, float, str]] = []  # (series, point, cumulative value, created family)
        seen: set[tuple] = set()
        created: dict[tuple, float] = {}
        kinds: dict[str, str] = {}
        dropped = duplicates = 0
        for fam in fams:
            kinds[fam.name] = fam.type
            base = fam.name[:-8] if fam.name.endswith("_created") else None
            if base and kinds.get(base) in _COUNTER_LIKE and fam.type in ("gauge", "unknown", "untyped"):
                # text 0.0.4 has no _created: prometheus_client writes it as a gauge family of its own
                for s in fam.samples:
                    created[(fam.name, _key(s.labels))] = s.value
                continue
            for series, point, cum in self._family(fam, created):
                if series in seen:
                    duplicates += 1
                elif len(seen) >= self.series_limit:
                    dropped += 1
                else:
                    seen.add(series)
                    pending.append((series, point, cum, fam.name + "_created"))
        self.dropped, self.duplicates = dropped, duplicates
        state, out = {}, []
        for series, p, cum, created_name in pending:
            if p.kind != "gauge":
                p = self._cumulative(series, p, cum, created.get((created_name, series[1])), ts_ns, state)
            if p is not None:
                out.append(p)
        self._state, self._last_ts = state, ts_ns
        return out

    def _cumulative(self, series: tuple, p: Point, cum: float, made: float | None, ts_ns: int,
                    state: dict) -> Point | None:
        """``p`` with its start time (and less its baseline); None for a baseline."""
        if made is not None and math.isfinite(made) and made > 0:
            p.start_ns = min(int(made * 1e9), ts_ns)
            state[series] = (p.start_ns, cum, None)
            return p
        prev = self._state.get(series)
        if prev is None:
            state[series] = (ts_ns, cum, p)
            return None
        start, last, base = prev
        if cum < last or (base is not None and base.bounds != p.bounds):  # a reset since the last scrape
            start, base = min(self._last_ts + 1, ts_ns), None
        state[series] = (start, cum, base)
        p.start_ns = start
        if base is not None:
            p.value = p.value - base.value
            if p.kind == "histogram":
                p.buckets = tuple(max(0, a - b) for a, b in zip(p.buckets, base.buckets))
        return p

    def _family(self, fam, created: dict) -> Iterable[tuple[tuple, Point, float]]:
        name, typ = fam.name, fam.type
        unit = unit_of(name, fam.unit)
        if typ == "histogram":
            yield from self._histograms(fam, unit, created)
            return
        for s in fam.samples:
            if not math.isfinite(s.value):
                continue  # NaN (no observation yet) or an infinity: OTLP receivers refuse both
            attrs = dict(s.labels)
            if s.name.endswith("_created") and typ in _COUNTER_LIKE:
                created[(s.name, _key(attrs))] = s.value
            elif typ == "counter" or (typ == "summary" and s.name in (name + "_sum", name + "_count")):
                u = "" if s.name == name + "_count" else unit  # a count of observations has no unit
                yield (s.name, _key(attrs)), Point(s.name, u, "counter", s.value, attrs), s.value
            else:
                yield (s.name, _key(attrs)), Point(s.name, unit, "gauge", s.value, attrs), 0.0

    def _histograms(self, fam, unit: str, created: dict) -> Iterable[tuple[tuple, Point, float]]:
        name = fam.name
        series: dict[tuple, dict[str, Any]] = {}
        for s in fam.samples:
            attrs = {k: v for k, v in s.labels.items() if k != "le"}
            h = series.setdefault(_key(attrs), {"attrs": attrs, "le": {}, "sum": math.nan, "count": None})
            if s.name == name + "_bucket":
                h["le"][float(s.labels.get("le", "nan"))] = s.value
            elif s.name == name + "_sum":
                h["sum"] = s.value
            elif s.name == name + "_count":
                h["count"] = s.value
            elif s.name == name + "_created":
                created[(s.name, _key(attrs))] = s.value
        for key, h in series.items():
            hist = explicit_histogram(h["le"], h["count"])
            if hist is None:
                continue  # no +Inf bucket and no count, NaN counts, or not cumulative: not a histogram
            bounds, buckets, total = hist
            p = Point(name, unit, "histogram", h["sum"], h["attrs"], 0, bounds, buckets)
            yield (name, key), p, total


class Target:
    """One URL, scraped every ``interval`` seconds on its own thread."""

    def __init__(self, url: str, emit: Callable[[list[Point], int], None], *, interval: float,
                 timeout: float = DEFAULT_TIMEOUT_S, series_limit: int = DEFAULT_SERIES_LIMIT,
                 clock: Clock = SYSTEM_CLOCK, logger: logging.Logger = log,
                 transport: httpx.BaseTransport | None = None):
        self.url, self.name = check_url(url), redact(url)
        self.emit, self.interval, self.timeout, self.clock, self._log = emit, interval, timeout, clock, logger
        self.converter = Converter(series_limit)
        self.errors, self.dropped, self.duplicates = Counter(), Counter(), Counter()
        self.series = 0
        self.duration = 0.0
        self.last_error = ""
        self._failing = False
        self._warned_limit = False
        self._client = httpx.Client(transport=transport, follow_redirects=True,
                                    limits=httpx.Limits(max_connections=1, keepalive_expiry=max(1.0, interval + 5)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonde-agent-scrape", daemon=True)

    def scrape(self) -> list[Point] | None:
        """One scrape, sent; the points, or None when it failed (counted and logged)."""
        ts, t0 = self.clock.time_ns(), self.clock.monotonic()
        try:
            ctype, text = fetch(self._client, self.url, self.timeout, self.clock)
            points = self.converter.convert(families(text, ctype), ts)
        except Exception as exc:  # ScrapeError, a page the parser refuses, anything else: never fatal
            self._fail(exc if isinstance(exc, ScrapeError) else f"unreadable page ({type(exc).__name__}: {exc})")
            return None
        finally:
            self.duration = self.clock.monotonic() - t0
        self._note(self.converter)
        self.series = len(points)
        if not self._stop.is_set():
            self.emit(points, ts)
        return points

    def _fail(self, why: Any) -> None:
        self.errors.add()
        self.last_error = str(why)
        self._log.log(logging.DEBUG if self._failing else logging.WARNING,
                      "sonde agent: scrape %s failed: %s", self.name, why)
        self._failing = True

    def _note(self, conv: Converter) -> None:
        if self._failing:
            self._failing = False
            self._log.info("sonde agent: scrape %s answers again (after: %s)", self.name, self.last_error)
        if conv.duplicates:
            self.duplicates.add(conv.duplicates)
            self._log.debug("sonde agent: scrape %s: %d duplicate series ignored", self.name, conv.duplicates)
        if conv.dropped:
            self.dropped.add(conv.dropped)
            if not self._warned_limit:  # once per streak of over-limit pages
                self._log.warning("sonde agent: scrape %s: page has more than %d series; %d dropped "
                                  "(raise --scrape-series-limit to keep them)",
                                  self.name, conv.series_limit, conv.dropped)
            self._warned_limit = True
        else:
            self._warned_limit = False

    def _run(self) -> None:
        next_at = self.clock.monotonic()
        while not self._stop.is_set():
            self.scrape()
            now = self.clock.monotonic()
            next_at += self.interval
            if next_at <= now:  # a scrape slower than the interval: skip, do not burst
                next_at = now + self.interval
            self._stop.wait(next_at - now)

    def start(self) -> "Target":
        self._thread.start()
        return self

    def stop(self, wait: float = 1.0) -> None:
        # A scrape in flight ends within its timeout; the agent does not wait that long
        # for it (the thread is a daemon and sends nothing once stopped).
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait)
        if not self._thread.is_alive():
            self._client.close()


class Scraper:
    """Every ``--scrape`` target, and their counters as the agent's own points."""

    def __init__(self, urls: Iterable[str], emit: Callable[[list[Point], int], None], *, interval: float,
                 start_ns: int, **target_kw: Any):
        self.targets = [Target(u, emit, interval=interval, **target_kw) for u in urls]
        self.start_ns = start_ns

    def points(self) -> list[Point]:
        out: list[Point] = []
        for t in self.targets:
            attrs = {"target": t.name}
            out += [
                Point("sonde.scrape.errors", "{scrape}", "counter", t.errors.value, dict(attrs), self.start_ns),
                Point("sonde.scrape.series_dropped", "{series}", "counter", t.dropped.value, dict(attrs),
                      self.start_ns),
                Point("sonde.scrape.duplicates", "{series}", "counter", t.duplicates.value, dict(attrs),
                      self.start_ns),
                Point("sonde.scrape.series", "{series}", "gauge", t.series, dict(attrs)),
                Point("sonde.scrape.duration", "s", "gauge", round(t.duration, 6), dict(attrs)),
            ]
        return out

    def start(self) -> "Scraper":
        for t in self.targets:
            t.start()
        return self

    def stop(self) -> None:
        for t in self.targets:
            t.stop()
