"""Alert evaluation benchmark: how long one round over 1,000 rules takes.

    .venv/bin/python bench/bench_alerts.py                       # 50 deployments x 20 rules
    .venv/bin/python bench/bench_alerts.py --deployments 10 --rules-per 100 --rounds 3

Not a test (CI never runs it). A real ``sonde serve`` takes the telemetry over OTLP
(per replica: GPU memory per GPU, request durations with two status codes, log lines)
and the rules over the API; then the server stops and the benchmark opens the same
store in process and times whole evaluation rounds (``Evaluator.run_once``: read
rules and state, evaluate, write state), the work the server does every
``alert_eval_seconds``. Two layouts: rules of a deployment sharing their windows
(typical: one query per deployment and window), and every rule with a window of its
own (the worst case: one query per metric rule). The target is a round well inside
the default 30 s interval.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import encode, gauge, hist_point, histogram, log_record, logs_request, metrics_request, number  # noqa: E402

from sonde.alerts.deliver import Sender  # noqa: E402
from sonde.alerts.evaluator import Evaluator  # noqa: E402
from sonde.store import open_store  # noqa: E402

SEC = 10**9


def telemetry(dep: int, rep: int, now: int):
    res = {"sonde.model_id": f"m{dep:03d}", "sonde.deployment_id": f"d{dep:03d}", "sonde.replica": f"r{rep:04d}"}
    times = [now - (k + 1) * 15 * SEC for k in reversed(range(16))]  # the last four minutes
    start = times[0] - SEC
    metrics = metrics_request(res, [
        gauge("hw.gpu.memory.usage", [number(t, (g + 1) * 10 * 2**30, attrs={"hw.gpu.index": str(g)})
                                      for t in times for g in range(4)], unit="By"),
        histogram("http.server.request.duration", [
            hist_point(t, [i + 1, 2 * i + 1, i, 1], [0.1, 0.5, 2.0], start=start, sum=1.5 * i + 2.0,
                       attrs={"http.response.status_code": code}) for i, t in enumerate(times) for code in (200, 500)]),
    ])
    logs = logs_request(res, [log_record(t, "CUDA out of memory" if k % 7 == 0 else f"step {k}")
                              for k, t in enumerate(times)])
    return metrics, logs


def rules_for(dep: int, n: int, distinct_windows: bool) -> list[dict]:
    base = {"model_id": f"m{dep:03d}", "deployment_id": f"d{dep:03d}"}
    out = []
    for i in range(n):
        w = 300 + i if distinct_windows else (300 if i % 2 else 600)
        kind = i % 10
        if kind < 4:
            cond = {"type": "metric", "metric": "baseten_gpu_memory_used", "labels": {"gpu": str(i % 4)},
                    "window_seconds": w, "op": ">", "threshold": 25_000 + 1000 * i}
        elif kind < 6:
            cond = {"type": "metric", "metric": "baseten_end_to_end_response_time_seconds",
                    "labels": {"quantile": "0.95"}, "window_seconds": w, "op": ">", "threshold": 0.1 * i}
        elif kind < 8:
            cond = {"type": "metric", "metric": "baseten_inference_requests_total", "labels": {"status": "5xx"},
                    "window_seconds": w, "op": ">", "threshold": i}
        elif kind == 8:
            cond = {"type": "logs", "filters": {"search_pattern": "CUDA out of memory|NCCL"},
                    "window_seconds": w, "op": ">", "threshold": 0}
        else:
            cond = {"type": "absent", "metric": "sonde_llm_time_to_first_token_seconds", "window_seconds": w}
        out.append({**base, "name": f"rule-{dep}-{i}", "for_seconds": 60 if i % 3 else 0, "condition": cond})
    return out


def measure(deployments: int, rules_per: int, replicas: int, rounds: int, distinct: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="sonde-bench-alerts-") as tmp:
        # the server's own loop must not evaluate (and hold the lease) while rules arrive
        server = LiveServer(tmp, env={"SONDE_ALERT_EVAL_SECONDS": "86400"}).start()
        try:
            now = time.time_ns()
            with httpx.Client(base_url=server.url, timeout=120) as http:
                for d in range(deployments):
                    http.put(f"/v1/models/m{d:03d}", json={"name": f"model {d}"},
                             headers=server.headers()).raise_for_status()
                    http.put(f"/v1/models/m{d:03d}/deployments/d{d:03d}", json={"name": "prod"},
                             headers=server.headers()).raise_for_status()
                    for r in range(replicas):
                        for msg, path in zip(telemetry(d, r, now), ("metrics", "logs")):
                            body, headers = encode(msg)
                            http.post(f"/v1/otlp/v1/{path}", content=body,
                                      headers={**headers, **server.headers("ingest_key")}).raise_for_status()
                    for rule in rules_for(d, rules_per, distinct):
                        http.post("/v1/alert_rules", json=rule, headers=server.headers()).raise_for_status()
        finally:
            server.stop()
        store = open_store("chdb", tmp)
        try:
            ev = Evaluator(store, sender=Sender())
            times, last = [], None
            for k in range(rounds):
                last = ev.run_once(now // 1_000_000 + k * 30_000)
                if not last.evaluated:
                    raise SystemExit("the evaluator did not get the lease")
                times.append(last.seconds)
            ev.stop()
        finally:
            store.close()
    return {"rules": last.rules, "active": last.active, "fired": last.fired, "times": times}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deployments", type=int, default=50)
    ap.add_argument("--rules-per", type=int, default=20)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"{args.deployments} deployments x {args.rules_per} rules, {args.replicas} replicas x 4 GPUs each;"
          f" {args.rounds} rounds each\n")
    print(f"{'windows':<26} {'rules':>6} {'active':>7} {'first s':>8} {'p50 s':>7} {'max s':>7} {'of 30 s':>8}")
    for distinct in (False, True):
        m = measure(args.deployments, args.rules_per, args.replicas, args.rounds, distinct)
        p50 = statistics.median(m["times"])
        label = "one per rule (worst)" if distinct else "shared per deployment"
        print(f"{label:<26} {m['rules']:>6} {m['active']:>7} {m['times'][0]:>8.2f} {p50:>7.2f}"
              f" {max(m['times']):>7.2f} {max(m['times']) / 30:>7.0%}")


if __name__ == "__main__":
    main()
