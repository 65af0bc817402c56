"""Export benchmark: one ``GET /metrics`` of a whole workspace through a real ``sonde serve``.

    .venv/bin/python bench/bench_export.py                     # 100 deployments x 4 replicas x 8 GPUs
    .venv/bin/python bench/bench_export.py --deployments 20 --points 20 --runs 10

Not a test (CI never runs it). Every replica sends, over OTLP, ``--points`` points over
the last four minutes (so every series is current) of: four GPU gauges per GPU
(utilisation, memory, temperature, power), a CPU-time counter, a memory gauge, a
request-duration histogram (two status codes) and vLLM's two token counters. The
scrapes then run one after another over one HTTP connection, timed from request to
the whole body read (what Prometheus's ``scrape_duration_seconds`` measures); the
parse by ``prometheus_client``'s parser that checks the body is timed apart.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import encode, gauge, hist_point, histogram, metrics_request, number, sum_metric  # noqa: E402

SEC = 10**9


def replica_request(dep: int, rep: int, gpus: int, points: int, now: int):
    start = now - 3600 * SEC
    times = [now - (240 * SEC * (points - i)) // points for i in range(points)]
    per_gpu = lambda name, unit, f: gauge(name, [number(t, f(g, i), attrs={"hw.gpu.index": str(g)})  # noqa: E731
                                               for i, t in enumerate(times) for g in range(gpus)], unit=unit)
    metrics = [
        per_gpu("hw.gpu.utilization", "1", lambda g, i: (g + i) % 10 / 10),
        per_gpu("hw.gpu.memory.usage", "By", lambda g, i: (g + 1) * 2**30 + i),
        per_gpu("hw.temperature", "Cel", lambda g, i: 50 + g + i % 3),
        per_gpu("hw.power", "W", lambda g, i: 300 + g * 10 + i),
        sum_metric("process.cpu.time", [number(t, 10.0 * (i + 1), start=start) for i, t in enumerate(times)], unit="s"),
        gauge("process.memory.usage", [number(t, 2**33 + i) for i, t in enumerate(times)], unit="By"),
        sum_metric("vllm:prompt_tokens_total", [number(t, 1000 * (i + 1), start=start) for i, t in enumerate(times)]),
        sum_metric("vllm:generation_tokens_total", [number(t, 500 * (i + 1), start=start) for i, t in enumerate(times)]),
        histogram("http.server.request.duration", [
            hist_point(t, [i + 1, 2 * i + 1, i, 1], [0.1, 0.5, 2.0], start=start, sum=1.5 * i + 2.0,
                       attrs={"http.response.status_code": code})
            for i, t in enumerate(times) for code in (200, 500)]),
    ]
    return metrics_request({"sonde.model_id": f"m{dep:03d}", "sonde.deployment_id": f"d{dep:03d}",
                            "sonde.replica": f"r{rep:04d}", "sonde.environment": "production"}, metrics)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--points", type=int, default=10, help="points per series, over the last four minutes")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sonde-bench-export-") as tmp:
        server = LiveServer(tmp, env={"SONDE_METRICS_RATE_LIMIT": "1000"}).start()
        try:
            now = time.time_ns()
            t0 = time.perf_counter()
            points = 0
            with httpx.Client(timeout=120, headers=server.headers("ingest_key")) as http:
                for d in range(args.deployments):
                    for r in range(args.replicas):
                        req = replica_request(d, r, args.gpus, args.points, now)
                        points += sum(len(getattr(m, m.WhichOneof("data")).data_points)
                                      for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
                        body, headers = encode(req)
                        http.post(f"{server.url}/v1/otlp/v1/metrics", content=body,
                                  headers=headers).raise_for_status()
            load_s = time.perf_counter() - t0
            times, parses, size, samples = [], [], 0, 0
            with httpx.Client(timeout=120, headers=server.headers()) as http:
                for i in range(args.runs + 1):
                    t = time.perf_counter()
                    r = http.get(f"{server.url}/metrics").raise_for_status()
                    fetched = time.perf_counter()
                    samples = sum(len(f.samples) for f in text_string_to_metric_families(r.text))
                    if i:  # the first one warms caches off the clock
                        times.append(fetched - t)
                        parses.append(time.perf_counter() - fetched)
                    size = len(r.content)
        finally:
            server.stop()
    shape = f"{args.deployments} deployments x {args.replicas} replicas x {args.gpus} GPUs"
    print(f"\nExport of one workspace ({shape}; {points:,} points loaded in {load_s:.1f} s)\n")
    # The scrape is request to last byte, what Prometheus's scrape_duration_seconds sees;
    # the parse (prometheus_client's Python parser here, Go's in Prometheus) is the scraper's.
    print("| samples exported | body | scrape p50 | scrape max | client parse p50 | runs |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {samples:,} | {size / 2**20:.1f} MiB | {statistics.median(times) * 1000:.0f} ms "
          f"| {max(times) * 1000:.0f} ms | {statistics.median(parses) * 1000:.0f} ms | {len(times)} |")


if __name__ == "__main__":
    main()
