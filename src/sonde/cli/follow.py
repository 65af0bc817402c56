"""``sonde logs --follow``: a tail whose cursor the client holds.

The server keeps no cursor (any API replica may answer the next poll): the client
asks for lines from the newest timestamp it has printed, oldest first, and skips the
lines at that timestamp it has already printed. A line that arrives later with an
older timestamp than the cursor (an agent replaying its spool after an outage) is
not shown by a running follow; a plain ``sonde logs`` over the window shows it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click

#: the API's largest page; a full page means more are waiting, so ask again at once
PAGE = 1000


def _key(line: dict) -> str:
    return json.dumps(line, sort_keys=True)


def utc_text(ns: int, digits: int = 9) -> str:
    """Epoch nanoseconds as ISO 8601 UTC with ``digits`` fractional digits."""
    when = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{ns % 10**9:09d}"[:digits + 1] if digits else ""
    return f"{when}{frac}Z"


def line_text(line: dict) -> str:
    """A LogV1 line as one line of text: time, level, replica, message."""
    parts = [utc_text(int(line["timestamp"])), line.get("level") or "-", line.get("replica") or "-", line["message"]]
    return " ".join(parts)


def follow(api, path: str, params: dict, *, backlog: int, interval: float, polls: int | None = None) -> None:
    """Print the newest ``backlog`` lines, then new ones as they come; ``polls``
    bounds the number of polls (None: until interrupted)."""
    emit = (lambda line: click.echo(json.dumps(line))) if api.fmt in ("json", "jsonl") else (
        lambda line: click.echo(line_text(line)))
    params = {k: v for k, v in params.items() if k not in ("direction", "limit", "start_epoch_millis",
                                                           "end_epoch_millis")}
    first = api.call("GET", path, params={**params, "direction": "desc", "limit": backlog})["logs"][::-1]
    cursor, seen = 0, set()
    for line in first:
        emit(line)
        cursor, seen = _advance(cursor, seen, line)
    done, floor_ms = 0, 0
    try:
        while polls is None or done < polls:
            start_ms = max(cursor // 10**6 if cursor else int(time.time() * 1000) - 60_000, floor_ms)
            page = api.call("GET", path, params={**params, "direction": "asc", "limit": PAGE,
                                                 "start_epoch_millis": start_ms})["logs"]
            done += 1
            printed = 0
            for line in page:
                ts = int(line["timestamp"])
                if ts < cursor or (ts == cursor and _key(line) in seen):
                    continue
                emit(line)
                printed += 1
                cursor, seen = _advance(cursor, seen, line)
            if len(page) == PAGE and not printed:
                # A whole page inside one millisecond, all printed already: the API pages by
                # millisecond only, so the rest of that millisecond cannot be reached.
                floor_ms = start_ms + 1
                click.echo(f"sonde logs: over {PAGE} lines in the millisecond {start_ms}; skipping the rest of it",
                           err=True)
            elif len(page) < PAGE:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _advance(cursor: int, seen: set, line: dict) -> tuple[int, set]:
    ts = int(line["timestamp"])
    if ts > cursor:
        return ts, {_key(line)}
    seen.add(_key(line))
    return cursor, seen
