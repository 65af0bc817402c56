"""Cost of ``--scrape`` in the agent: one 5,000-series page, scraped as the agent does.

    .venv/bin/python bench/bench_scrape.py [--series 5000] [--scrapes 20] [--interval 15]

A page of ``--series`` series is served from another thread (its CPU is not counted): 60% gauges with DCGM-like labels, 30% counters (with ``_created``, as
prometheus_client prints them), 10% histograms of 12 buckets, in text 0.0.4 and in
OpenMetrics. The agent's own :class:`~sonde.agent.scrape.Target` scrapes it
back-to-back, its points going through the exporter's encoding (OTLP protobuf + gzip,
``Exporter.add_metrics`` less the POST). CPU is the scraping thread's own time
(``time.thread_time``), per scrape; at one scrape every ``--interval`` seconds that is
``cpu / interval`` of one core. Goal (issue 11): under 2% of one core at 15 s.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_agent_scrape import PageServer  # noqa: E402

from sonde.agent import otlp  # noqa: E402
from sonde.agent.scrape import Target  # noqa: E402

HIST_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


def page(series: int, openmetrics: bool) -> str:
    n_hist, n_ctr = series // 10, series * 3 // 10
    n_gauge = series - n_hist - n_ctr
    out = []
    per = 50  # series per family
    for f in range(0, n_gauge, per):
        name = f"DCGM_FI_FIELD_{f // per}"
        out += [f"# HELP {name} A gauge.", f"# TYPE {name} gauge"]
        out += [f'{name}{{gpu="{i % 8}",UUID="GPU-{i:08d}-6a9d-4e2b-9f5c-8d7e1a2b3c4d",device="nvidia{i % 8}",'
                f'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-7",shard="{i}"}} {i * 1.5}'
                for i in range(f, min(f + per, n_gauge))]
    for f in range(0, n_ctr, per):
        name = f"engine:requests_{f // per}"
        labels = [f'model_name="llama",engine="{i}"' for i in range(f, min(f + per, n_ctr))]
        if openmetrics:
            out += [f"# TYPE {name} counter"]
            for i, lab in enumerate(labels):
                out += [f"{name}_total{{{lab}}} {1000 + i}", f"{name}_created{{{lab}}} 1.7400000005e+09"]
        else:
            out += [f"# TYPE {name}_total counter"] + [f"{name}_total{{{lab}}} {1000 + i}" for i, lab in enumerate(labels)]
            out += [f"# TYPE {name}_created gauge"] + [f"{name}_created{{{lab}}} 1.7400000005e+09" for lab in labels]
    for f in range(0, n_hist, per):
        name = f"engine:latency_seconds_{f // per}"
        out += [f"# TYPE {name} histogram"]
        for i in range(f, min(f + per, n_hist)):
            lab = f'model_name="llama",engine="{i}"'
            out += [f'{name}_bucket{{{lab},le="{b}"}} {k * 10}' for k, b in enumerate(HIST_BOUNDS)]
            out += [f'{name}_bucket{{{lab},le="+Inf"}} 120', f"{name}_count{{{lab}}} 120", f"{name}_sum{{{lab}}} 61.5"]
            if openmetrics:
                out += [f"{name}_created{{{lab}}} 1.7400000005e+09"]
    if openmetrics:
        out.append("# EOF")
    return "\n".join(out) + "\n"


def measure(url: str, scrapes: int) -> tuple[float, float, int, int]:
    """(CPU s per scrape, wall s per scrape, points per scrape, gzipped OTLP bytes per scrape)."""
    res = otlp.resource({"sonde.deployment_id": "d1", "sonde.replica": "r0001"})
    sizes: list[int] = []

    def emit(points, ts):  # what Exporter.add_metrics does on the scraping thread
        sizes.append(len(otlp.compress(otlp.metrics_request(res, points, ts))))

    t = Target(url, emit, interval=15.0)
    t.scrape()  # warm-up: connection, first sight of every series
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for _ in range(scrapes):
        points = t.scrape()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    assert points is not None and t.errors.value == 0, t.last_error
    return cpu / scrapes, wall / scrapes, len(points), sizes[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--interval", type=float, default=15.0)
    args = ap.parse_args()
    pages = {"text": page(args.series, False).encode(), "om": page(args.series, True).encode()}
    ctypes = {"text": "text/plain; version=0.0.4; charset=utf-8",
              "om": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
    rows = []
    for kind, label in (("text", "text 0.0.4"), ("om", "OpenMetrics")):
        # served from another thread: time.thread_time counts only the scraping thread
        server = PageServer(lambda kind=kind: (200, ctypes[kind], pages[kind]))
        try:
            cpu, wall, n, size = measure(server.url, args.scrapes)
        finally:
            server.close()
        rows.append((label, n, len(pages[kind]), size, cpu, wall, cpu / args.interval * 100))
    print(f"{args.series} series, {args.scrapes} scrapes each; % of one core at one scrape every {args.interval:g} s")
    print("| format | points | page bytes | OTLP gz bytes | CPU ms/scrape | wall ms/scrape | % of a core |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, n, body, size, cpu, wall, pct in rows:
        print(f"| {kind} | {n} | {body} | {size} | {cpu * 1e3:.1f} | {wall * 1e3:.1f} | {pct:.2f}% |")


if __name__ == "__main__":
    main()
