"""Sonde next to VictoriaMetrics and Prometheus, measured in one run on the same samples.

    bench/peers/run --scale tiny                 # CI smoke (< 60 s): every number produced
    bench/peers/run --scale small --out DIR      # 4 deployments x 4 replicas x 8 GPUs, 24 h
    bench/peers/run --scale week --out DIR       # 1 deployment x 4 x 8, 7 days
    bench/peers/run --scale 24h --skip-remote-write --out DIR   # the issue's 100 x 4 x 8, 24 h (~33 min here)
    bench/peers/run --scale tiny --logs 10000000 --log-deployments 50   # the logs questions (logs.py)

One system at a time (so none competes with another for the cores): start it on
loopback with its data in a temp dir, load the whole fleet through its native path
(Sonde: OTLP/HTTP protobuf, and a second Sonde through its remote-write receiver;
Prometheus and VictoriaMetrics: remote write, the same snappy bodies), time the
queries (queries.py), then a batch-size sweep on separate deployments, then its bytes
on disk after its own flush or merge, then stop it. Prints the tables (report.py) and
writes results.json and two PNGs to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import load
import logs
import peers
import queries
import report
import wire
from workload import SCALES, Fleet

SWEEP_STEPS = {"tiny": (30, 120), "default": (6, 30, 120, 360)}  # samples per series a request


def system_run(kind: str, tmp: pathlib.Path, fleet: Fleet, reps, sweep_fleet: Fleet, args) -> dict:
    if kind == "Sonde (OTLP)":
        server, enc = peers.Sonde(tmp, "sonde-otlp", "/v1/otlp/v1/metrics"), "otlp"
    elif kind == "Sonde (remote write)":
        server, enc = peers.Sonde(tmp, "sonde-rw", "/api/v1/write"), "remote-write"
    elif kind == "Prometheus":
        server, enc = peers.Prometheus(tmp), "remote-write"
    else:
        server, enc = peers.VictoriaMetrics(tmp), "remote-write"
    settle = 1 if args.scale == "tiny" else 120  # tiny checks numbers, not CPU
    out: dict = {}
    try:
        _say(f"{kind}: loading {len(reps)} replicas x {fleet.scale.steps} steps")
        out["ingest"] = load.load(server, fleet, reps, enc, steps=args.steps, per_request=args.per_request,
                                  senders=args.senders, settle_s=settle)
        i = out["ingest"]
        _say(f"  {i['samples']:,} samples in {i['wall_s']:.1f} s, {i['per_cpu_s']:,.0f} per server CPU-s")
        end_ms = fleet.end_ns // 10**6
        if kind == "Sonde (OTLP)":
            out["queries"] = queries.run_all("sonde", server, end_ms, args.runs)
            out["queries_cached"] = queries.run_all("sonde-cached", server, end_ms, args.runs)
        elif kind != "Sonde (remote write)":
            out["queries"] = queries.run_all("promql-nocache" if kind == "VictoriaMetrics" else "promql",
                                             server, end_ms, args.runs)
            if kind == "VictoriaMetrics":
                out["queries_cached"] = queries.run_all("promql", server, end_ms, args.runs)
        if "queries" in out:
            _say("  queries p50 ms: " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in out["queries"].items()))
        out["sweep"] = []
        for n, steps in enumerate(SWEEP_STEPS.get(args.scale, SWEEP_STEPS["default"])):
            sreps = [sweep_fleet.replica(900 + n, r) for r in range(sweep_fleet.scale.replicas)]
            p = load.load(server, sweep_fleet, sreps, enc, steps=steps, per_request=1, senders=args.senders,
                          settle_s=settle / 4)
            out["sweep"].append(p)
        samples = i["samples"] + sum(p["samples"] for p in out["sweep"])
        disk, how = server.disk_bytes()
        out.update(disk_bytes=disk, disk_how=how, bytes_per_sample=disk / samples)
        _say(f"  {disk:,} bytes on disk, {disk / samples:.2f} per sample ({how})")
    finally:
        server.stop()
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, help="query repetitions (default: the scale's)")
    ap.add_argument("--steps", type=int, default=180, help="samples per series in a request (180: 30 minutes)")
    ap.add_argument("--per-request", type=int, default=1, help="replicas per request")
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--out", type=pathlib.Path, help="folder for results.json and the plots")
    ap.add_argument("--logs", type=int, default=0, help="also the logs comparison, with this many lines (0: not)")
    ap.add_argument("--log-deployments", type=int, default=50)
    ap.add_argument("--skip-remote-write", action="store_true",
                    help="leave out the second Sonde (remote write): at --scale 24h it alone adds ~12 minutes here")
    ap.add_argument("--report", type=pathlib.Path, help="only print the tables (and with --out, plots) of a"
                    " results.json written before")
    args = ap.parse_args()
    if args.report:
        return show(json.loads(args.report.read_text()), args.out)
    missing = peers.missing_binaries()
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    scale = SCALES[args.scale]
    args.runs = args.runs or scale.runs
    # the data end: a half-hour boundary at least two minutes ago, so that windows
    # ending there line up with every system's steps and nothing is "in the future"
    end_ns = (time.time_ns() - 120 * 10**9) // (1800 * 10**9) * (1800 * 10**9)
    fleet = Fleet(scale, args.seed, end_ns)
    t = time.perf_counter()
    reps = [fleet.replica(d, r) for d, r in fleet.replicas()]
    gen_s = time.perf_counter() - t
    wire.check(fleet)
    # the sweep's deployments: the last 48 minutes (inside Prometheus' appendable hour)
    tiny = args.scale == "tiny"
    sweep_scale = dataclasses.replace(scale, name="sweep", deployments=1, replicas=2 if tiny else 8,
                                      hours=0.25 if tiny else 0.8)
    sweep_fleet = Fleet(sweep_scale, args.seed, end_ns)
    load_avg = os.getloadavg()
    _say(f"{scale}: {sum(fleet.samples(r, 0, scale.steps) for r in reps):,} samples generated in {gen_s:.1f} s;"
         f" load average {load_avg[0]:.2f}")
    res = {"scale": dataclasses.asdict(scale), "seed": args.seed, "end_ns": end_ns, "runs": args.runs,
           "steps_per_request": args.steps, "replicas_per_request": args.per_request, "senders": args.senders,
           "load_avg_start": load_avg, "cores": os.cpu_count(), "machine": platform.platform(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "systems": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sonde-peers-") as tmp:
        for kind in ("Sonde (OTLP)", "Sonde (remote write)", "Prometheus", "VictoriaMetrics"):
            if args.skip_remote_write and kind == "Sonde (remote write)":
                continue
            res["systems"][kind] = system_run(kind, pathlib.Path(tmp), fleet, reps, sweep_fleet, args)
        if args.logs:
            _say(f"logs: {args.logs:,} lines over {args.log_deployments} deployments")
            res["logs"] = logs.run(pathlib.Path(tmp), args.seed, args.logs, args.log_deployments, end_ns, min(args.runs, 10))
    res["elapsed_s"] = time.perf_counter() - t0
    res["load_avg_end"] = os.getloadavg()
    s = res["systems"]
    res["diffs"] = {}
    for key, *_ in queries.QUERIES:
        prom = s["Prometheus"]["queries"][key]["answer"]
        d_sonde, pairs = queries.median_rel_diff(s["Sonde (OTLP)"]["queries"][key]["answer"], prom)
        vm = s["VictoriaMetrics"]["queries"][key]["answer"]
        d_vm, _ = queries.median_rel_diff(vm, prom)
        d_sonde_vm, _ = queries.median_rel_diff(s["Sonde (OTLP)"]["queries"][key]["answer"], vm)
        # a kept answer must be the computed one: the same points, the same values
        kept = s["Sonde (OTLP)"]["queries_cached"][key]["answer"]
        computed = s["Sonde (OTLP)"]["queries"][key]["answer"]
        res["diffs"][key] = {"sonde_vs_prom": d_sonde, "vm_vs_prom": d_vm, "sonde_vs_vm": d_sonde_vm, "pairs": pairs,
                             "kept_vs_computed": queries.largest_rel_diff(kept, computed), "kept_pairs": len(kept)}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for sys_res in s.values():  # answers are for the cross-check, not the record
            for q in ("queries", "queries_cached"):
                for v in sys_res.get(q, {}).values():
                    v.pop("answer", None)
        (args.out / "results.json").write_text(json.dumps(res, indent=1))
    show(res, args.out)


def show(res: dict, out: pathlib.Path | None) -> None:
    """Print the tables of a run; with ``out``, draw the plots there."""
    sc = res["scale"]
    print(f"## {sc['name']}: {sc['deployments']} deployments x {sc['replicas']} replicas x {sc['gpus']} GPUs,"
          f" {sc['hours']:g} h at 10 s; {res['elapsed_s']:.0f} s; load average {res['load_avg_start'][0]:.2f} -> "
          f"{res['load_avg_end'][0]:.2f} on {res['cores']} cores\n")
    print("### Ingest and disk\n\n" + report.ingest_table(res) + "\n")
    print(f"### Queries, ms over {res['runs']} runs, deployment {queries.DEP[1]}\n\n" + report.query_table(res) + "\n")
    if "queries_cached" in res["systems"][report.SONDE]:
        print("### The same queries, answers kept (Sonde's query_cache_mb, VictoriaMetrics' cache)\n\n"
              + report.cached_table(res) + "\n")
    print("### Ingest against batch size\n\n" + report.sweep_table(res))
    if "logs" in res:
        print("\n### Logs\n\n" + logs.table(res["logs"]))
    if out:
        for path in report.plots(res, out, sc["name"]):
            _say(f"wrote {path}")


if __name__ == "__main__":
    main()
