"""``GET /metrics``: the workspace's current values for Prometheus to scrape (docs/export.md).

The families come from :mod:`sonde.query.export`; ``prometheus_client`` writes them in
the format the scraper's Accept header asks for (text 0.0.4, or OpenMetrics), so the
output is what every Prometheus parser expects, escaping included. Each key may scrape
``metrics_rate_limit`` times a minute (``api/ratelimit.py``, built in ``api/app.py``): an
export reads every series of the workspace, so a misconfigured scraper polling every
second must not take the store with it.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool

from ..query.catalogue import COUNTER, HISTOGRAM
from ..query.export import Family, Hist, finished, workspace_families
from ..store.accounts import ApiKey
from . import auth

router = APIRouter(tags=["export"])

class _Families:
    """The collector ``prometheus_client``'s writers read."""

    def __init__(self, families: list[Family]):
        self.families = families

    def collect(self):
        for fam in self.families:
            samples = finished(fam)
            names = sorted({k for labels in samples for k, _ in labels})
            doc = f"Sonde export of {fam.name} ({fam.unit_hint.lower()})"
            if fam.kind == HISTOGRAM:
                out = HistogramMetricFamily(fam.name, doc, labels=names)
            elif fam.kind == COUNTER:
                out = CounterMetricFamily(fam.name, doc, labels=names)
            else:
                out = GaugeMetricFamily(fam.name, doc, labels=names)
            for labels, value in sorted(samples.items()):
                d = dict(labels)
                values = [d.get(n, "") for n in names]
                if isinstance(value, Hist):
                    buckets = [(_le(le), c) for le, c in value.cumulative()]
                    out.add_metric(values, buckets, value.sum)
                else:
                    out.add_metric(values, value)
            yield out


def _le(le: float) -> str:
    return "+Inf" if le == math.inf else repr(float(le))


@router.get("/metrics", summary="Prometheus export of the workspace's deployments", response_class=Response)
async def metrics(request: Request, key: ApiKey = Depends(auth.management)) -> Response:
    request.app.state.export_limiter.check(key.id)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))

    def render() -> bytes:
        return encoder(_Families(workspace_families(request.app.state.store, key.ws)))

    return Response(await run_in_threadpool(render), media_type=content_type)
