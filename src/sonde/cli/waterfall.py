"""``sonde request``'s terminal view: a request's spans as a waterfall, then its log lines.

Spans are nested under their parent (a span whose parent is not in the trace, such
as the caller's client span in a service Sonde does not see, is a root), siblings in
start order. Each bar sits on one time axis that covers the request and every span
of its trace, so a child's bar lies under its parent's and the widths compare.
"""

from __future__ import annotations

import math
from collections import defaultdict

from rich.text import Text

from .follow import line_text, utc_text

BAR = 40
MAX_NAME = 48
_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


def duration_text(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{seconds:.2f} s"


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def nest(spans: list[dict]) -> list[tuple[int, dict]]:
    """(depth, span) in display order: depth first, each parent before its children."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[int]] = defaultdict(list)
    roots = []
    for i, s in enumerate(spans):
        parent = s.get("parent_span_id")
        if parent in ids and parent != s["span_id"]:
            children[parent].append(i)
        else:
            roots.append(i)
    out, seen = [], set()

    def walk(start: int) -> None:
        # an explicit stack: a trace may nest deeper than Python's recursion limit
        stack = [(0, start)]
        while stack:
            depth, i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            out.append((depth, spans[i]))
            stack.extend((depth + 1, c) for c in reversed(children[spans[i]["span_id"]]))

    for i in roots:
        walk(i)
    # spans whose parents form a cycle (a malformed trace) reach no root; show them anyway
    for i in range(len(spans)):
        walk(i)
    return out


def _bar(start: int, end: int, lo: int, total: int) -> str:
    a = min(BAR - 1, int((start - lo) * BAR / total))
    b = max(a + 1, min(BAR, math.ceil((end - lo) * BAR / total)))
    return " " * a + "█" * (b - a) + " " * (BAR - b)


def _status(span: dict) -> str:
    if span.get("http_status"):
        return str(span["http_status"])
    return "ERROR" if span.get("status_code") == _ERROR else ""


def render(request: dict, entity: str) -> list[Text]:
    """The lines ``sonde request`` prints for the body of ``GET .../requests/{id}``;
    spans recorded by another entity than ``entity`` (a chain's other chainlets) name it."""
    start = int(request["timestamp"])
    lines = [Text(f"request {request['request_id']}  trace {request['trace_id']}", style="bold"),
             Text(f"{request['route']}  status {request.get('status_code') or '-'}  "
                  f"{duration_text(request['duration_seconds'])}  replica {request.get('replica') or '-'}  "
                  f"at {utc_text(start, 3)}"), Text("")]
    rows = nest(request["spans"])
    if rows:
        lo = min([start] + [int(s["start"]) for _, s in rows])
        hi = max([start + _ns(request["duration_seconds"])]
                 + [int(s["start"]) + _ns(s["duration_seconds"]) for _, s in rows])
        total = max(hi - lo, 1)
        labels = []
        for depth, s in rows:
            label = "  " * depth + s["name"] + ("" if s["entity"] == entity else f" [{s['scope']} {s['entity']}]")
            labels.append(label if len(label) <= MAX_NAME else label[:MAX_NAME - 1] + "…")
        width = max(len(x) for x in labels)
        lines.append(Text(f"{'span':<{width}}  0{duration_text(total / 1e9):>{BAR - 1}}", style="dim"))
        for label, (_, s) in zip(labels, rows):
            t0 = int(s["start"])
            style = "red" if _status(s) == "ERROR" or (s.get("http_status") or 0) >= 500 else "cyan"
            line = Text(f"{label:<{width}}  ")
            line.append(_bar(t0, t0 + _ns(s["duration_seconds"]), lo, total), style=style)
            line.append(f"  {duration_text(s['duration_seconds']):>9}  {_status(s)}".rstrip())
            lines.append(line)
    else:
        lines.append(Text("no spans", style="dim"))
    logs = request.get("logs") or []
    lines += [Text(""), Text(f"logs ({len(logs)})" if logs else "no log lines", style="bold")]
    lines += [Text(line_text(x)) for x in logs]
    return lines
