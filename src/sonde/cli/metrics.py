"""The metrics verbs: ``sonde metrics``, ``sonde train metrics``, ``sonde loops metrics``.

In a table every series is one row with a sparkline of its steps over the window (rich
renders it); ``-o json`` prints the API's answer as it came.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import click

from .options import SINCE_HELP, UNTIL_HELP, Since, client_options

BARS = "▁▂▃▄▅▆▇█"
#: bars in a sparkline at most: a window has up to 360 steps, which would not fit a terminal
SPARK_WIDTH = 60


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def sparkline(values: list[float | None], width: int = SPARK_WIDTH) -> str:
    """One bar per value, scaled from the smallest to the largest; a gap for a missing one.
    Past ``width`` values, each bar is the mean of as many consecutive steps as it takes."""
    if len(values) > width:
        per = math.ceil(len(values) / width)
        values = [_mean(values[i:i + per]) for i in range(0, len(values), per)]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(BARS[min(len(BARS) - 1, int((v - lo) / span * len(BARS))) if span else 3])
    return "".join(out)


def _number(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def series_table(series: list[tuple[str, str, list[float | None]]]) -> None:
    """Rows of (name, labels, values in step order) as a rich table with sparklines."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for name in ("metric", "labels"):  # a name cut short is another name: fold it instead
        table.add_column(name, overflow="fold")
    for name in ("last", "min", "max"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("trend", no_wrap=True)  # a wrapped sparkline reads as two
    for name, labels, values in series:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        last = next((v for v in reversed(values) if v is not None), None)
        table.add_row(name, labels, _number(last), _number(min(finite) if finite else None),
                      _number(max(finite) if finite else None), sparkline(values))
    console = Console(file=sys.stdout)
    if not console.is_terminal:  # a pipe has no width: as wide as the rows need
        need = max((len(n) + len(labels) for n, labels, _ in series), default=0)
        console.width = need + 3 * 12 + SPARK_WIDTH + 20
    console.print(table)


def deployment_series(data: dict) -> list[tuple[str, str, list[float | None]]]:
    """A SERIES answer of the deployment metrics endpoint, one entry per metric and label set."""
    out = []
    for i, desc in enumerate(data["metric_descriptors"]):
        for j, labels in enumerate(desc["label_sets"]):
            values = [vs["values"][i][j] for vs in data["metric_values"]]
            out.append((desc["name"], ",".join(f"{k}={v}" for k, v in labels.items()), values))
    return out


def _points(x) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(p, dict) and "value" in p and "timestamp" in p
                                                   for p in x)


def point_series(doc, name: str = "", labels: str = "") -> Iterator[tuple[str, str, list[float | None]]]:
    """Every list of ``{"value", "timestamp"}`` points in a training or loops answer: named
    by the fields it sits under, labelled by its node (``node=node-0``) and GPU (``gpu=0``)."""
    join = lambda a, b: f"{a}.{b}" if a else b  # noqa: E731
    add = lambda a, b: f"{a},{b}" if a else b  # noqa: E731
    if _points(doc):
        yield name, labels, [p["value"] for p in doc]
    elif isinstance(doc, dict):
        for k, v in doc.items():
            if k in ("training_job", "deployment"):
                continue  # the entity's own document, not a metric
            if isinstance(v, dict) and v and all(_points(x) or x == [] for x in v.values()):
                for key, pts in v.items():  # a map keyed by GPU index
                    yield from point_series(pts, join(name, k), add(labels, f"gpu={key}"))
            else:
                yield from point_series(v, join(name, k), labels)
    elif isinstance(doc, list):
        for item in doc:
            node = item.get("node_id") if isinstance(item, dict) else None
            yield from point_series(item, name, add(labels, f"node={node}") if node else labels)


_WINDOW = [click.option("--since", "--start", "start_ms", type=Since(), help=SINCE_HELP),
           click.option("--until", "--end", "end_ms", type=Since(), help=UNTIL_HELP)]


def _window(fn):
    for opt in reversed(_WINDOW):
        fn = opt(fn)
    return fn


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.option("--mode", type=click.Choice(["CURRENT", "SUMMARY", "SERIES"]),
              help="[default: SERIES in a table (a sparkline per series over the window, the last hour unless"
                   " --since), CURRENT for json, SUMMARY for json over --since/--until]")
@click.option("--metric", "names", multiple=True, help="Metric name; repeat for several.")
@_window
@client_options()
def metrics(api, model_id, deployment_id, mode, names, start_ms, end_ms):
    """Deployment metrics: in a table one row per series, with a sparkline.

    \b
    Examples:
      sonde metrics MODEL DEPLOYMENT --since 6h --metric baseten_inference_requests_total
      sonde metrics MODEL DEPLOYMENT --mode SUMMARY --since 1d -o json"""
    windowed = start_ms is not None or end_ms is not None
    if mode is None:
        mode = "SERIES" if api.fmt == "table" else ("SUMMARY" if windowed else "CURRENT")
    if mode == "CURRENT" and windowed:
        mode = "SUMMARY"  # a window was asked for: CURRENT is always the last minute
    params = {"mode": mode, "metrics": list(names), "start_epoch_millis": start_ms, "end_epoch_millis": end_ms}
    data = api.call("GET", f"/v1/models/{model_id}/deployments/{deployment_id}/metrics",
                    params={k: v for k, v in params.items() if v not in (None, [])})
    if api.fmt == "table":
        # the API leaves out a metric with no data in the window; one asked for by name says so
        shown = {d["name"] for d in data["metric_descriptors"]}
        series_table(deployment_series(data) + [(n, "(no data)", []) for n in dict.fromkeys(names) if n not in shown])
        return
    rows = []
    for vs in data["metric_values"]:
        for desc, values in zip(data["metric_descriptors"], vs["values"]):
            for labels, value in zip(desc["label_sets"], values):
                label = ",".join(f"{k}={v}" for k, v in labels.items())
                rows.append({"start_epoch_millis": vs["start_epoch_millis"], "metric": desc["name"],
                             "labels": label, "value": value})
    api.emit(data, rows)


def _print_points(api, data: dict) -> None:
    if api.fmt == "table":
        series_table(list(point_series(data)))
    elif api.fmt == "jsonl":
        for name, labels, values in point_series(data):
            click.echo(json.dumps({"metric": name, "labels": labels, "values": values}))
    else:
        click.echo(json.dumps(data, indent=2))


@click.command("metrics")
@click.argument("training_project_id")
@click.argument("training_job_id")
@click.option("--step", "step_seconds", type=int, help="Seconds per point [default: from the window].")
@_window
@client_options()
def job_metrics(api, training_project_id, training_job_id, step_seconds, start_ms, end_ms):
    """A training job's metrics per node: GPU, CPU, memory, storage, cache.

    \b
    Example:
      sonde train metrics PROJECT JOB --since 6h"""
    params = {"start_epoch_millis": start_ms, "end_epoch_millis": end_ms, "step_seconds": step_seconds}
    data = api.call("GET", f"/v1/training_projects/{training_project_id}/jobs/{training_job_id}/metrics",
                    params={k: v for k, v in params.items() if v is not None})
    _print_points(api, data)


@click.command("metrics")
@click.argument("deployment_id")
@click.option("--step", "step_seconds", type=int, help="Seconds per point [default: from the window].")
@_window
@client_options()
def loops_metrics(api, deployment_id, step_seconds, start_ms, end_ms):
    """A trainer (loops) deployment's metrics: requests, latency, CPU and memory per node.

    \b
    Example:
      sonde loops metrics DEPLOYMENT --since 1h"""
    body = {"start_epoch_millis": start_ms, "end_epoch_millis": end_ms, "step_seconds": step_seconds}
    data = api.call("POST", f"/v1/loops/deployments/{deployment_id}/metrics",
                    json={k: v for k, v in body.items() if v is not None})
    _print_points(api, data)
