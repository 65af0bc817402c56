"""Markdown tables and matplotlib plots of one harness run (results.json's shape)."""

from __future__ import annotations

import math

from queries import QUERIES, step_for

SONDE = "Sonde (OTLP)"
COLOURS = {SONDE: "tab:blue", "Sonde (remote write)": "tab:cyan", "Prometheus": "tab:orange",
           "VictoriaMetrics": "tab:green", "VictoriaMetrics, nocache=1": "tab:green",
           "VictoriaMetrics, cached": "tab:olive", "Sonde, kept answers": "tab:purple"}


def _n(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:,.{digits}f}"


def _cpu_rate(load: dict) -> str:
    return (">=" if load.get("per_cpu_s_is_bound") else "") + _n(load["per_cpu_s"])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ingest_table(res: dict) -> str:
    base = res["systems"][SONDE]
    rows = []
    for name, s in res["systems"].items():
        i = s["ingest"]
        # a rate from under one clock tick of CPU is a lower bound (load.py): so is the ratio
        # it divides, an upper bound the one it is divided by
        ratio = ("<=" if i.get("per_cpu_s_is_bound") else ">=" if base["ingest"].get("per_cpu_s_is_bound") else "")
        rows.append([name, _n(i["samples"]), _n(i["batch"]), _n(i["wall_s"], 1), _n(i["per_s"]),
                     _cpu_rate(i), _n(i["p50_ms"], 1), _n(s["bytes_per_sample"], 2),
                     ratio + _n(base["ingest"]["per_cpu_s"] / i["per_cpu_s"], 2),
                     _n(base["bytes_per_sample"] / s["bytes_per_sample"], 2)])
    return _table(["system", "samples", "samples/request", "wall s", "samples/s", "samples per server CPU-s",
                   "request p50 ms", "bytes/sample on disk", "Sonde/this, per CPU-s", "Sonde/this, bytes"], rows)


def query_table(res: dict) -> str:
    s = res["systems"]
    sonde, prom, vm = s[SONDE]["queries"], s["Prometheus"]["queries"], s["VictoriaMetrics"]["queries"]
    vmc = s["VictoriaMetrics"]["queries_cached"]
    rows = []
    for key, title, window, _m, _q in QUERIES:
        rows.append([title, str(step_for(window)),
                     _n(sonde[key]["p50"], 1), _n(sonde[key]["p99"], 1), _n(prom[key]["p50"], 1), _n(prom[key]["p99"], 1),
                     _n(vm[key]["p50"], 1), _n(vm[key]["p99"], 1), _n(vmc[key]["p50"], 1), _n(vmc[key]["p99"], 1),
                     _n(sonde[key]["p50"] / prom[key]["p50"], 2), _n(sonde[key]["p50"] / vm[key]["p50"], 2),
                     _n(res["diffs"][key]["sonde_vs_prom"], 4), _n(res["diffs"][key]["vm_vs_prom"], 4),
                     _n(res["diffs"][key]["sonde_vs_vm"], 4), _n(res["diffs"][key]["pairs"])])
    return _table(["query", "step s", "Sonde p50", "Sonde p99", "Prom p50", "Prom p99", "VM p50", "VM p99",
                   "VM cached p50", "VM cached p99", "Sonde/Prom p50", "Sonde/VM p50",
                   "Sonde vs Prom, median rel. diff", "VM vs Prom, median rel. diff", "Sonde vs VM, median rel. diff",
                   "pairs compared"], rows)


def cached_table(res: dict) -> str:
    """Sonde's kept answers against VictoriaMetrics' cache (and Prometheus, which has none)."""
    s = res["systems"]
    kept, prom, vmc = s[SONDE]["queries_cached"], s["Prometheus"]["queries"], s["VictoriaMetrics"]["queries_cached"]
    rows = []
    for key, title, window, _m, _q in QUERIES:
        d = res["diffs"][key]
        rows.append([title, str(step_for(window)), _n(kept[key]["p50"], 1), _n(kept[key]["p99"], 1),
                     _n(vmc[key]["p50"], 1), _n(vmc[key]["p99"], 1), _n(prom[key]["p50"], 1),
                     _n(kept[key]["p50"] / prom[key]["p50"], 2), _n(kept[key]["p50"] / vmc[key]["p50"], 2),
                     _n(d["kept_vs_computed"], 4), _n(d["kept_pairs"])])
    return _table(["query", "step s", "Sonde kept p50", "Sonde kept p99", "VM cached p50", "VM cached p99",
                   "Prom p50", "Sonde kept/Prom p50", "Sonde kept/VM cached p50",
                   "kept vs computed, largest rel. diff", "points"], rows)


def sweep_table(res: dict) -> str:
    rows = []
    for name, s in res["systems"].items():
        for p in s["sweep"]:
            rows.append([name, _n(p["batch"]), _n(p["samples"]), _cpu_rate(p), _n(p["per_s"]), _n(p["p50_ms"], 1)])
    return _table(["system", "samples/request", "samples", "samples per server CPU-s", "samples/s", "request p50 ms"],
                  rows)


def plots(res: dict, out_dir, tag: str) -> list[str]:
    """Two PNGs: query p50 against window, ingest per CPU-s against batch size."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    s = res["systems"]
    series = [(SONDE, s[SONDE]["queries"]), ("Prometheus", s["Prometheus"]["queries"]),
              ("VictoriaMetrics, nocache=1", s["VictoriaMetrics"]["queries"]),
              ("VictoriaMetrics, cached", s["VictoriaMetrics"]["queries_cached"])]
    if "queries_cached" in s[SONDE]:
        series.append(("Sonde, kept answers", s[SONDE]["queries_cached"]))
    families = [("gpu", "GPU utilisation"), ("req", "requests by status"), ("p99", "p99 latency")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (fam, title) in zip(axes, families):
        keys = [(k, w) for k, _t, w, _m, _q in QUERIES if k.startswith(fam + "_")]
        for label, q in series:
            ax.plot([w / 3600 for _, w in keys], [q[k]["p50"] for k, _ in keys], marker="o", label=label,
                    color=COLOURS[label])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1, 24, 168], ["1 h", "24 h", "7 d"])
        ax.minorticks_off()
        ax.set_xlabel("window")
        ax.set_title(title)
    axes[0].set_ylabel("p50 ms, HTTP end to end")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Query latency against window ({tag})")
    fig.tight_layout()
    paths = [str(out_dir / f"peers-query-latency-{tag}.png")]
    fig.savefig(paths[0], dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, sys in s.items():
        pts = sorted(sys["sweep"], key=lambda p: p["batch"])
        ax.plot([p["batch"] for p in pts], [p["per_cpu_s"] for p in pts], marker="o", label=name, color=COLOURS[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples per request")
    ax.set_ylabel("samples per server CPU-second")
    ax.set_title(f"Ingest against batch size ({tag})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(str(out_dir / f"peers-ingest-batch-{tag}.png"))
    fig.savefig(paths[1], dpi=90)
    plt.close(fig)
    return paths
