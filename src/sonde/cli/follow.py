"""``-f``: follow a logs path over its live stream (``PATH/stream``, docs/logs.md#live-tail).

The server sends each line once, in arrival order, with an id; this client remembers the
last id and, when the connection drops (a restarted server, a proxy's timeout), connects
again with ``Last-Event-ID`` after a short backoff, so nothing is missed or printed twice.
The cursor is the client's: any API replica can take the reconnect.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import click
import httpx

#: seconds between two attempts to reconnect, growing to the last
BACKOFF = (0.5, 1.0, 2.0, 5.0)
#: stream events read ahead of what is printed
PAGE_AHEAD = 1000

LEVEL_STYLE = {"DEBUG": {"fg": "bright_black"}, "INFO": {"fg": "green"}, "WARNING": {"fg": "yellow"},
               "ERROR": {"fg": "red", "bold": True}}


def utc_text(ns: int, digits: int = 9) -> str:
    """Epoch nanoseconds as ISO 8601 UTC with ``digits`` fractional digits."""
    when = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{ns % 10**9:09d}"[:digits + 1] if digits else ""
    return f"{when}{frac}Z"


def line_text(line: dict, color: bool = False) -> str:
    """A LogV1 line as one line of text: time, level, replica, message. ``color``: the
    level styled (click.echo drops the styles again when stdout is not a terminal)."""
    level = line.get("level") or "-"
    if color and level in LEVEL_STYLE:
        level = click.style(f"{level:<7}", **LEVEL_STYLE[level])
    elif color:
        level = f"{level:<7}"
    return " ".join([utc_text(int(line["timestamp"])), level, line.get("replica") or "-", line["message"]])


def line_key(line: dict) -> str:
    return json.dumps(line, sort_keys=True)


class Skip:
    """Lines already printed at a boundary millisecond, each as many times as printed:
    what a second read that overlaps the first (by a millisecond) must not print again."""

    def __init__(self, lines: list[dict] = (), ms: int | None = None):
        self.ms = ms
        self.left = Counter(line_key(x) for x in lines if ms is not None and int(x["timestamp"]) // 10**6 == ms)

    def __call__(self, line: dict) -> bool:
        k = line_key(line)
        if self.left[k] > 0 and int(line["timestamp"]) // 10**6 == self.ms:
            self.left[k] -= 1
            return True
        return False


def events(client: httpx.Client, url: str, params: dict, headers: dict,
           stop: threading.Event) -> Iterator[tuple[str, dict]]:
    """(event type, the event's JSON data) from the stream, reconnecting with the last id.

    The first connection must succeed (a wrong URL or key fails at once); after that a
    network error, a 5xx (a proxy while the server restarts) or the stream's end is met
    with a note on stderr and a reconnect after a backoff."""
    last_id, attempt, connected = None, 0, False
    while not stop.is_set():
        h = dict(headers, **({"Last-Event-ID": last_id} if last_id else {}))
        try:
            # read timeout: three heartbeats missed means a dead connection, not a quiet one
            with client.stream("GET", url, params=params, headers=h, timeout=httpx.Timeout(30, read=45)) as r:
                if r.status_code >= 400:
                    r.read()
                    if r.status_code < 500 or not connected:
                        raise click.ClickException(_error_text(r))
                    raise _Retry(f"{r.status_code} from the server")
                connected, attempt = True, 0
                kind, data, eid = "message", [], None
                for raw in r.iter_lines():
                    if raw == "":
                        if data:
                            if eid is not None:
                                last_id = eid
                            yield kind, json.loads("\n".join(data))
                        kind, data, eid = "message", [], None
                    elif not raw.startswith(":"):
                        field, _, value = raw.partition(":")
                        value = value.removeprefix(" ")
                        if field == "data":
                            data.append(value)
                        elif field == "id":
                            eid = value
                        elif field == "event":
                            kind = value
            why = "the server closed the stream"
        except (httpx.TransportError, httpx.StreamError, _Retry) as exc:
            if not connected:
                raise click.ClickException(f"cannot reach {url}: {exc}") from exc
            why = str(exc) if isinstance(exc, _Retry) else type(exc).__name__
        if stop.is_set():
            return
        wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        attempt += 1
        click.echo(f"sonde: stream interrupted ({why}); reconnecting in {wait:g} s", err=True)
        stop.wait(wait)


class _Retry(Exception):
    """A stream answer worth trying again (a 5xx once the stream had worked)."""


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        field = (body.get("error") or {}).get("field")
        return f"{r.status_code}: {body.get('message')}" + (f" (field: {field})" if field else "")
    except ValueError:
        return f"{r.status_code}: {r.text}"


def follow(api, path: str, params: dict, emit: Callable[[dict], None], *, skip: Skip | None = None,
           until: Callable[[], bool] | None = None) -> None:
    """Print the stream's lines until interrupted, or until ``until()`` (asked about once a
    second) turns true.

    The stream is read on a daemon thread and printed from this one: a read blocked on a
    quiet connection cannot be interrupted from another thread (closing the response does
    not wake it before the next heartbeat), so ``until`` and Ctrl-C act here at once and
    the blocked reader is simply left behind as the command returns."""
    stop = threading.Event()
    # bounded: a slow reader of stdout (a pager) holds the stream back rather than memory
    inbox: queue.Queue = queue.Queue(maxsize=PAGE_AHEAD)
    headers = {"Authorization": f"Bearer {api.key}"} if api.key else {}

    def read() -> None:
        try:
            with httpx.Client() as client:
                for item in events(client, api.server + path + "/stream", params, headers, stop):
                    inbox.put(("event", item))
        except BaseException as exc:  # handed to the printing thread, which raises it
            inbox.put(("error", exc))
        else:
            inbox.put(("end", None))

    threading.Thread(target=read, daemon=True, name="sonde-stream").start()
    next_check = time.monotonic()
    try:
        while True:
            try:
                what, item = inbox.get(timeout=0.25)
            except queue.Empty:
                what, item = None, None
            if what == "error":
                raise item
            if what == "end":
                return
            if what == "event":
                kind, data = item
                if kind == "error":
                    raise click.ClickException(data.get("message") or "the stream ended with an error")
                if skip is None or not skip(data):
                    emit(data)
            if until is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                if until():
                    return
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
