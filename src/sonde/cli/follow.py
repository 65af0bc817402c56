"""``-f``: follow a logs path over its live stream (``PATH/stream``, docs/logs.md#live-tail).

The server sends each line once, in arrival order, with an id; this client remembers the
last id and, when the connection drops (a restarted server, a proxy's timeout), connects
again with ``Last-Event-ID`` after a short backoff, so nothing is missed or printed twice.
The cursor is the client's: any API replica can take the reconnect.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import click
import httpx

#: seconds between two attempts to reconnect, growing to the last
BACKOFF = (0.5, 1.0, 2.0, 5.0)

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


def events(client: httpx.Client, url: str, params: dict, headers: dict, stop: threading.Event,
           on_response: Callable[[httpx.Response], None] = lambda r: None) -> Iterator[tuple[str, dict]]:
    """(event type, the event's JSON data) from the stream, reconnecting with the last id."""
    last_id, attempt = None, 0
    while not stop.is_set():
        h = dict(headers, **({"Last-Event-ID": last_id} if last_id else {}))
        try:
            with client.stream("GET", url, params=params, headers=h, timeout=httpx.Timeout(30, read=90)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise click.ClickException(_error_text(r))
                on_response(r)
                attempt = 0
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
        except Exception as exc:
            if stop.is_set():  # closed on purpose, from the watching thread
                return
            if not isinstance(exc, (httpx.TransportError, httpx.StreamError)):
                raise
            wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            click.echo(f"sonde: stream interrupted ({type(exc).__name__}); reconnecting in {wait:g} s", err=True)
            stop.wait(wait)


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        field = (body.get("error") or {}).get("field")
        return f"{r.status_code}: {body.get('message')}" + (f" (field: {field})" if field else "")
    except ValueError:
        return f"{r.status_code}: {r.text}"


def follow(api, path: str, params: dict, emit: Callable[[dict], None], *, skip: Skip | None = None,
           until: Callable[[], bool] | None = None) -> None:
    """Print the stream's lines until interrupted, or until ``until()`` turns true (checked
    every second on a thread: it closes the stream, so a quiet stream ends too)."""
    stop = threading.Event()
    holder: dict = {}

    def watch() -> None:
        while not stop.wait(1.0):
            if until():
                stop.set()
                r = holder.get("response")
                if r is not None:
                    r.close()  # ends iter_lines in the reader, wherever it waits

    if until is not None:
        threading.Thread(target=watch, daemon=True).start()
    headers = {"Authorization": f"Bearer {api.key}"} if api.key else {}
    try:
        with httpx.Client() as client:
            for kind, data in events(client, api.server + path + "/stream", params, headers, stop,
                                     on_response=lambda r: holder.__setitem__("response", r)):
                if kind == "error":
                    raise click.ClickException(data.get("message") or "the stream ended with an error")
                if skip is not None and skip(data):
                    continue
                emit(data)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
