"""The same questions asked of Sonde (its deployment metrics API) and of Prometheus and
VictoriaMetrics (PromQL ``query_range``), timed end to end over HTTP, answers compared.

Windows end on a half-hour boundary (the data end), so every system's steps line up:
Sonde's step k covers ``[start + k step, start + (k+1) step)``; PromQL evaluated at
``t = start + (k+1) step`` with a ``[step]`` range covers ``(t - step, t]``. No sample
sits on a boundary (workload.OFFSET_S), so both see the same samples. The PromQL is
chosen to mean what Sonde computes (docs/metrics.md):

- GPU utilisation, per replica and GPU: Sonde's time-weighted mean of the step, against
  ``avg_over_time`` (every sample weighs the same; with regular 10 s samples the two
  differ only by the hold of the step's first and last sample);
- requests by status class: Sonde's sum of the count deltas in the step, against
  ``increase`` of ``_count`` (Prometheus extrapolates to the step's edges, so it is a
  few percent off at a step's edge; VictoriaMetrics' ``increase`` does not
  extrapolate and uses the sample before the step, like Sonde);
- p99 latency over all replicas and statuses: Sonde's merged buckets with linear
  interpolation, against ``histogram_quantile(0.99, sum by (le) (increase(...)))``.
"""

from __future__ import annotations

import math
import statistics
import time

import httpx

DEP = ("m000", "d000")  # the deployment asked about
STEPS = (60, 300, 900, 1800, 3600)

QUERIES = [  # (key, title, window s, Sonde metric, PromQL with {step} and {dep})
    ("gpu_1h", "GPU utilisation, 1 h", 3600, "baseten_gpu_utilization",
     'avg_over_time(hw_gpu_utilization_ratio{{deployment_id="{dep}"}}[{step}s])'),
    ("gpu_24h", "GPU utilisation, 24 h", 86400, "baseten_gpu_utilization",
     'avg_over_time(hw_gpu_utilization_ratio{{deployment_id="{dep}"}}[{step}s])'),
    ("gpu_7d", "GPU utilisation, 7 d", 7 * 86400, "baseten_gpu_utilization",
     'avg_over_time(hw_gpu_utilization_ratio{{deployment_id="{dep}"}}[{step}s])'),
    ("req_24h", "requests by status, 24 h", 86400, "baseten_inference_requests_total",
     'sum by (http_response_status_code) (increase(http_server_request_duration_seconds_count{{deployment_id="{dep}"}}[{step}s]))'),
    ("req_7d", "requests by status, 7 d", 7 * 86400, "baseten_inference_requests_total",
     'sum by (http_response_status_code) (increase(http_server_request_duration_seconds_count{{deployment_id="{dep}"}}[{step}s]))'),
    ("p99_24h", "p99 latency, 24 h", 86400, "baseten_end_to_end_response_time_seconds",
     'histogram_quantile(0.99, sum by (le) (increase(http_server_request_duration_seconds_bucket{{deployment_id="{dep}"}}[{step}s])))'),
    ("p99_7d", "p99 latency, 7 d", 7 * 86400, "baseten_end_to_end_response_time_seconds",
     'histogram_quantile(0.99, sum by (le) (increase(http_server_request_duration_seconds_bucket{{deployment_id="{dep}"}}[{step}s])))'),
]


def step_for(window_s: int) -> int:
    """Sonde's rule (docs/api.md#steps): the smallest rung giving at most 360 steps."""
    return next(s for s in STEPS if math.ceil(window_s / s) <= 360)


def _key(labels: dict) -> tuple:
    """A label set in a form both sides share."""
    if "http_response_status_code" in labels:
        return ("status", labels["http_response_status_code"][0] + "xx")
    if "status" in labels:
        return ("status", labels["status"])
    if "gpu" in labels:
        return ("gpu", labels["replica"], labels["gpu"])
    return ("all",)


def sonde_request(server, end_ms: int, window_s: int, metric: str, nocache: bool):
    """``nocache``: every answer computed (``Cache-Control: no-cache``), none taken from
    the answers Sonde keeps (docs/api.md#caching)."""
    model, dep = DEP
    return (f"{server.url}/v1/models/{model}/deployments/{dep}/metrics",
            {"mode": "SERIES", "metrics": metric, "start_epoch_millis": end_ms - window_s * 1000,
             "end_epoch_millis": end_ms}, {**server.query_headers, **({"Cache-Control": "no-cache"} if nocache else {})})


def sonde_answer(body: dict, metric: str) -> dict:
    out = {}
    names = [d["name"] for d in body["metric_descriptors"]]
    if metric not in names:
        return out
    i = names.index(metric)
    label_sets = body["metric_descriptors"][i]["label_sets"]
    for vs in body["metric_values"]:
        for labels, v in zip(label_sets, vs["values"][i]):
            if v is None or labels.get("quantile", "0.99") != "0.99" or "stat" in labels:
                continue
            out[(_key(labels), vs["start_epoch_millis"])] = float(v)
    return out


def prom_request(server, end_ms: int, window_s: int, promql: str, nocache: bool):
    step = step_for(window_s)
    params = {"query": promql.format(step=step, dep=DEP[1]), "start": (end_ms - window_s * 1000) / 1000 + step,
              "end": end_ms / 1000, "step": step}
    if nocache:
        params["nocache"] = 1
    return f"{server.url}/api/v1/query_range", params, {}


def prom_answer(body: dict, step: int) -> dict:
    assert body["status"] == "success", body
    out = {}
    for series in body["data"]["result"]:
        k = _key(series["metric"])
        for t, v in series["values"]:
            if v not in ("NaN", "+Inf", "-Inf"):
                out[(k, int(round(float(t) * 1000)) - step * 1000)] = float(v)
    return out


def timed(http: httpx.Client, request, runs: int) -> tuple[list[float], dict]:
    """``runs`` timed GETs after one warm-up, request to the last byte; the last body."""
    url, params, headers = request
    http.get(url, params=params, headers=headers).raise_for_status()
    times, body = [], None
    for _ in range(runs):
        t = time.perf_counter()
        r = http.get(url, params=params, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        body = r.json()
    return times, body


def run_all(kind: str, server, end_ms: int, runs: int) -> dict:
    """{query key: {"p50", "p99", "answer"}} for kind ``sonde`` (every answer computed),
    ``sonde-cached`` (kept answers allowed), ``promql`` or ``promql-nocache``."""
    out = {}
    with httpx.Client(timeout=120) as http:
        for key, _title, window, metric, promql in QUERIES:
            if kind.startswith("sonde"):
                times, body = timed(http, sonde_request(server, end_ms, window, metric, kind == "sonde"), runs)
                answer = sonde_answer(body, metric)
            else:
                times, body = timed(http, prom_request(server, end_ms, window, promql, kind == "promql-nocache"), runs)
                answer = prom_answer(body, step_for(window))
            times.sort()
            out[key] = {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
                        "points": len(answer), "answer": answer}
    return out


def _rel_diffs(a: dict, b: dict) -> list[float]:
    """|a - b| / max(|a|, |b|) over the (label set, step) pairs both answer (0 where both are 0)."""
    diffs = []
    for k in a.keys() & b.keys():
        x, y = a[k], b[k]
        m = max(abs(x), abs(y))
        diffs.append(abs(x - y) / m if m else 0.0)
    return diffs


def median_rel_diff(a: dict, b: dict) -> tuple[float, int]:
    """The median relative difference of the pairs both answer, and how many pairs that is."""
    diffs = _rel_diffs(a, b)
    return (statistics.median(diffs) if diffs else float("nan")), len(diffs)


def largest_rel_diff(a: dict, b: dict) -> float:
    """The largest relative difference; NaN unless both answer the same pairs."""
    return max(_rel_diffs(a, b), default=0.0) if a.keys() == b.keys() else float("nan")
