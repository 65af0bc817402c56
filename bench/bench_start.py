"""A server starting on a full store: how long until it answers, and what its answers
cost while the memories load (store/loading.py), with ``memory_load`` = ``start`` (the
memories read before the server answers) against ``background`` (the default).

    .venv/bin/python bench/bench_start.py --scale small
    .venv/bin/python bench/bench_start.py --scale 24h --store /tmp/store-24h --rounds 2

The store is the peers harness's (bench/peers/workload.py): ``--scale``'s fleet sent
through a real ``sonde serve`` over OTLP, as ``bench/peers/run`` does, into ``--store``
(kept there and reused when the folder already holds one; a temporary folder
otherwise). Then, alternating the two settings for ``--rounds`` rounds, a ``sonde serve``
is started on it and timed from its start:

- ready: the first 200 from ``GET /v1/models``;
- first answer: one deployment's GPU utilisation over the 24 h before the data's end
  (300 s steps, the gauge sums' buckets), answered;
- loaded: the last of the four memories' "loaded from the store" log lines;
- that question's p50 (and slowest) while the memories load (answered by statements,
  every ``--gap`` s) and its p50 after (from memory), ``Cache-Control: no-cache``.

Then, the memories in, the deployment page's one SERIES request (every chart's metric)
for its 24 h and 7 d presets, ending now against on the API's steps (the page's windows:
docs/dashboard.md#windows-on-steps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import re
import statistics
import sys
import tempfile
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))

import load  # noqa: E402
import peers  # noqa: E402
from live_server import LiveServer  # noqa: E402
from queries import DEP, sonde_request  # noqa: E402
from workload import SCALES, Fleet  # noqa: E402

MEMORIES = ("Recent", "RequestCounts", "RequestLatency", "GaugeSums")
LOADED = re.compile(r"(\w+) loaded from the store in ([0-9.]+) s")


def build(folder: pathlib.Path, scale: str) -> int:
    """The fleet's data in ``folder``/sonde; returns where it ends (ns)."""
    end_ns = (time.time_ns() - 120 * 10**9) // (1800 * 10**9) * (1800 * 10**9)
    fleet = Fleet(SCALES[scale], 1, end_ns)
    reps = [fleet.replica(d, r) for d, r in fleet.replicas()]
    server = peers.Sonde(folder, "sonde", "/v1/otlp/v1/metrics")
    try:
        out = load.load(server, fleet, reps, "otlp", steps=180, senders=2, settle_s=30)
        print(f"built: {out['samples']:,} samples in {out['wall_s']:.0f} s", flush=True)
    finally:
        server.stop()
    (folder / "end_ns").write_text(str(end_ns))
    return end_ns


def kept_or_built(folder: pathlib.Path, scale: str) -> int:
    """Where the store in ``folder`` ends (ns): one built there before, else built now."""
    if (folder / "end_ns").exists():
        return int((folder / "end_ns").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    return build(folder, scale)


@contextlib.contextmanager
def _stopping(live: LiveServer):
    try:
        yield
    finally:
        live.stop()


def start_once(folder: pathlib.Path, mode: str, end_ms: int, gap_s: float) -> dict:
    live = LiveServer(str(folder / "sonde"), env={"SONDE_MEMORY_LOAD": mode}, args=("--log-level", "info"))
    t0 = time.monotonic()
    live.start(timeout=600)
    out = {"mode": mode, "ready_s": time.monotonic() - t0}
    server_log = pathlib.Path(live.log.name)  # this start's own: named by its port
    live.query_headers = live.headers("management_key")  # what queries.sonde_request sends
    url, params, headers = sonde_request(live, end_ms, 86400, "baseten_gpu_utilization", nocache=True)
    during, after = [], []
    with httpx.Client(timeout=600) as http, _stopping(live):
        while True:
            a = time.monotonic()
            r = http.get(url, params=params, headers=headers)
            r.raise_for_status()
            took = (time.monotonic() - a) * 1000
            out.setdefault("first_answer_s", time.monotonic() - t0)
            loaded = dict(LOADED.findall(server_log.read_text()))
            if all(m in loaded for m in MEMORIES):
                out.setdefault("loaded_s", time.monotonic() - t0)
                out["load_s"] = {m: float(loaded[m]) for m in MEMORIES}
                after.append(took)
                if len(after) >= 15:
                    break
            else:
                during.append(took)
                time.sleep(gap_s)
    out["during_ms"] = statistics.median(during) if during else None
    out["during_max_ms"] = max(during) if during else None
    out["during_n"] = len(during)
    out["after_ms"] = statistics.median(after)
    return out


def dashboard(folder: pathlib.Path, rounds: int) -> list[tuple]:
    """The deployment page's one SERIES request (every chart's metric, read from
    deployment.js) for its 24 h and 7 d presets, ending now against ending at the end of
    the step holding now (web/static/range.stepSpanOf), p50 of 10 each, alternating."""
    page = (ROOT / "src" / "sonde" / "web" / "static" / "deployment.js").read_text()
    metrics = ",".join(dict.fromkeys(re.findall(r'metric: "([a-z_]+)"', page)))
    live = LiveServer(str(folder / "sonde"), env={"SONDE_MEMORY_LOAD": "start"}).start(timeout=600)
    headers = {**live.headers("management_key"), "Cache-Control": "no-cache"}
    url = "{}/v1/models/{}/deployments/{}/metrics".format(live.url, *DEP)
    out = []
    with httpx.Client(timeout=600) as http, _stopping(live):
        for label, window_ms, step_ms in (("24 h", 86400_000, 300_000), ("7 d", 7 * 86400_000, 1800_000)):
            for _ in range(rounds):
                for how in ("ending now", "on steps"):
                    took = []
                    for _ in range(10):
                        now = time.time_ns() // 10**6
                        end = now if how == "ending now" else -(-now // step_ms) * step_ms
                        a = time.monotonic()
                        params = {"mode": "SERIES", "metrics": metrics, "start_epoch_millis": end - window_ms,
                                  "end_epoch_millis": end}
                        http.get(url, params=params, headers=headers).raise_for_status()
                        took.append((time.monotonic() - a) * 1000)
                    out.append((label, how, statistics.median(took)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="small", choices=sorted(SCALES))
    ap.add_argument("--store", help="a folder holding a store built here before, or to build one into")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between questions while loading")
    args = ap.parse_args()
    folder = pathlib.Path(args.store or tempfile.mkdtemp(prefix="sonde-start-"))
    end_ns = kept_or_built(folder, args.scale)
    runs = [start_once(folder, mode, end_ns // 10**6, args.gap)
            for _ in range(args.rounds) for mode in ("start", "background")]
    print(f"\nstore: {folder} ({args.scale}); GPU utilisation of one deployment, 24 h in 300 s steps\n")
    print("| memory_load | ready s | first answer s | memories in s | gauge sums' load s | while loading: p50 /"
          " max ms (questions) | p50 after ms |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        during = "-" if r["during_ms"] is None else (
            f"{r['during_ms']:.1f} / {r['during_max_ms']:.0f} ({r['during_n']})")
        print(f"| {r['mode']} | {r['ready_s']:.1f} | {r['first_answer_s']:.1f} | {r['loaded_s']:.1f} |"
              f" {r['load_s']['GaugeSums']:.1f} | {during} | {r['after_ms']:.1f} |")
    print(json.dumps(runs))
    print("\nthe deployment page's SERIES request, every chart's metric, p50 of 10 (ms)\n")
    print("| window | ending now | on steps |")
    print("|---|---|---|")
    rows = dashboard(folder, args.rounds)
    for label in dict.fromkeys(r[0] for r in rows):
        now = " / ".join(f"{ms:.1f}" for lb, how, ms in rows if lb == label and how == "ending now")
        steps = " / ".join(f"{ms:.1f}" for lb, how, ms in rows if lb == label and how == "on steps")
        print(f"| {label} | {now} | {steps} |")


if __name__ == "__main__":
    main()
