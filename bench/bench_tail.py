"""Live tail benchmark: from a log line's ingest acknowledgement to its arrival on open streams.

    .venv/bin/python bench/bench_tail.py                      # 50 streams, 200 lines, with and without background load
    .venv/bin/python bench/bench_tail.py --streams 10 --lines 50

Not a test (CI never runs it). A real ``sonde serve`` (chDB, default settings but
``stream_limit_per_key``, raised so one key can open every stream) holds ``--streams``
open streams on one deployment, read by one asyncio client. A sender posts one line at a
time over OTLP/HTTP, ``--gap`` apart; each line's latency is from the moment its POST
was answered (acknowledged: committed) to the moment a stream had read it, for every
stream. Run twice: alone, and while another client sends ``--background`` lines a second
to other deployments (so group commits are busy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import tempfile
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import encode, log_record, logs_request  # noqa: E402

PATH = "/v1/models/m-bench/deployments/d-bench/logs/stream"
RES = {"sonde.model_id": "m-bench", "sonde.deployment_id": "d-bench", "sonde.replica": "r1"}


async def reader(client: httpx.AsyncClient, headers: dict, seen: dict, ready: asyncio.Event, n_ready: list):
    async with client.stream("GET", PATH, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        n_ready[0] += 1
        if n_ready[0] == n_ready[1]:
            ready.set()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                msg = json.loads(line[6:])["message"]
                seen.setdefault(msg, []).append(time.perf_counter())


async def background(client: httpx.AsyncClient, headers: dict, per_s: int, stop: asyncio.Event):
    i = 0
    while not stop.is_set() and per_s:
        t = time.perf_counter()
        batch = per_s // 10
        records = [log_record(time.time_ns(), f"noise {i + k}", severity_text="INFO") for k in range(batch)]
        body, h = encode(logs_request({"sonde.model_id": "m-noise", "sonde.deployment_id": f"d-noise{i % 7}"},
                                      records))
        await client.post("/v1/otlp/v1/logs", content=body, headers={**headers, **h})
        i += batch
        await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))


async def run(url: str, creds: dict, streams: int, lines: int, gap: float, noise: int) -> dict:
    mh = {"Authorization": f"Bearer {creds['management_key']}"}
    ih = {"Authorization": f"Bearer {creds['ingest_key']}"}
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        body, h = encode(logs_request(RES, [log_record(time.time_ns(), "hello", severity_text="INFO")]))
        assert (await client.post("/v1/otlp/v1/logs", content=body, headers={**ih, **h})).status_code == 200
        seen: list[dict] = [{} for _ in range(streams)]
        ready, n_ready = asyncio.Event(), [0, streams]
        tasks = [asyncio.create_task(reader(client, mh, seen[i], ready, n_ready)) for i in range(streams)]
        await asyncio.wait_for(ready.wait(), 60)
        stop = asyncio.Event()
        noise_task = asyncio.create_task(background(client, ih, noise, stop))
        await asyncio.sleep(1.0 if noise else 0.2)
        acked, sent_at = {}, {}
        for i in range(lines):
            msg = f"line {i} {time.time_ns()}"
            body, h = encode(logs_request(RES, [log_record(time.time_ns(), msg, severity_text="INFO")]))
            sent_at[msg] = time.perf_counter()
            r = await client.post("/v1/otlp/v1/logs", content=body, headers={**ih, **h})
            assert r.status_code == 200, r.text
            acked[msg] = time.perf_counter()
            await asyncio.sleep(gap)
        deadline = time.perf_counter() + 30
        # only the timed lines count: with the write-ahead log the opening "hello" may still be
        # in flight when a stream opens, and so arrive on it
        while time.perf_counter() < deadline and any(sum(m in acked for m in s) < lines for s in seen):
            await asyncio.sleep(0.05)
        stop.set()
        await noise_task
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    from_ack = [max(0.0, at - acked[m]) for s in seen for m, ats in s.items() if m in acked for at in ats]
    from_send = [at - sent_at[m] for s in seen for m, ats in s.items() if m in sent_at for at in ats]
    dupes = sum(len(ats) - 1 for s in seen for ats in s.values())
    missing = sum(lines - len([m for m in s if m in acked]) for s in seen)
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else float("nan")  # noqa: E731
    return {"delivered": len(from_ack), "missing": missing, "dupes": dupes,
            "ack_p50": statistics.median(from_ack), "ack_p95": q(from_ack, 95), "ack_max": max(from_ack),
            "send_p50": statistics.median(from_send)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between two sent lines")
    ap.add_argument("--background", type=int, default=5000, help="lines a second to other deployments (second run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(tmp, env={"SONDE_STREAM_LIMIT_PER_KEY": str(args.streams + 5)}).start()
        try:
            rows = []
            for noise in (0, args.background):
                rows.append((noise, asyncio.run(run(server.url, server.creds, args.streams, args.lines, args.gap,
                                                     noise))))
        finally:
            server.stop()
    print(f"\nLive tail: {args.streams} open streams on one deployment, {args.lines} lines sent one per request,"
          f" {args.gap * 1000:.0f} ms apart\n")
    print("| background lines/s | delivered | missing | duplicates | ack -> stream p50 | p95 | max | send -> stream p50 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for noise, r in rows:
        print(f"| {noise:,} | {r['delivered']:,} | {r['missing']} | {r['dupes']} | {r['ack_p50'] * 1000:.0f} ms"
              f" | {r['ack_p95'] * 1000:.0f} ms | {r['ack_max'] * 1000:.0f} ms | {r['send_p50'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
