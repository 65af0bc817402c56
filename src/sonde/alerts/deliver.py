"""Delivery: what Sonde posts to each kind of receiver, and the retrying sender.

- ``alertmanager``: a JSON list of alerts to ``{url}/api/v2/alerts``, as Prometheus
  sends them. Firing alerts are posted on every evaluation with ``endsAt`` a few
  intervals ahead (Alertmanager resolves an alert that stops being re-sent), a
  resolved one once with ``endsAt`` its resolution time. Grouping, silences,
  inhibition and the notifiers are Alertmanager's.
- ``webhook``: Alertmanager's webhook payload (version 4), once when alerts fire and
  once when they resolve, one payload per rule and status.

Posts go out on a background thread so evaluation never waits for a receiver; a failed
post (connection error, timeout, 5xx or 429) is retried with exponential backoff, up
to ``attempts`` tries. Pending retries live in memory: a restart drops them, and
Alertmanager receivers get the firing alerts again at the next evaluation anyway.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any

import httpx

from ..query.window import iso

log = logging.getLogger("sonde.alerts")

#: startsAt/endsAt of "not set", as Alertmanager writes it in webhook payloads
ZERO_TIME = "0001-01-01T00:00:00Z"


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def alertmanager_alerts(instances: list[dict], *, ends_ms: int, generator_url: str) -> list[dict]:
    """The ``/api/v2/alerts`` body: firing instances end at ``ends_ms`` unless re-sent,
    resolved ones (``resolved_at_ms``) at their resolution."""
    return [{"labels": i["labels"], "annotations": i["annotations"], "startsAt": iso(i["fired_at_ms"]),
             "endsAt": iso(i.get("resolved_at_ms") or ends_ms), "generatorURL": generator_url}
            for i in instances]


def webhook_payload(receiver: str, status: str, instances: list[dict], *, external_url: str) -> dict:
    """Alertmanager's webhook payload, version 4, for instances of one rule."""
    alerts = [{"status": status, "labels": i["labels"], "annotations": i["annotations"],
               "startsAt": iso(i["fired_at_ms"]),
               "endsAt": iso(i["resolved_at_ms"]) if status == "resolved" else ZERO_TIME,
               "generatorURL": external_url, "fingerprint": i["fingerprint"]} for i in instances]
    group = {k: instances[0]["labels"][k] for k in ("alertname", "rule_id")}
    return {
        "version": "4", "receiver": receiver, "status": status, "alerts": alerts,
        "groupLabels": group,
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
        "truncatedAlerts": 0,
    }


class Sender:
    """Posts JSON bodies in the background, retrying failures with exponential backoff.

    ``transport`` is httpx's (tests may pass a real one bound elsewhere); ``backoff_s``
    is the first retry's delay, doubled each time."""

    def __init__(self, *, attempts: int = 6, backoff_s: float = 1.0, timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._client = httpx.Client(timeout=timeout_s, transport=transport,
                                    headers={"User-Agent": "sonde-alerts"})
        self._queue: list[tuple[float, int, str, Any, int]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self.sent = 0
        self.failed = 0
        self._thread: threading.Thread | None = None  # started by the first post

    def post(self, url: str, body: Any) -> None:
        self._push(time.monotonic(), url, body, 1)

    def _push(self, due: float, url: str, body: Any, attempt: int) -> None:
        with self._cond:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="sonde-alert-sender", daemon=True)
                self._thread.start()
            self._idle.clear()
            heapq.heappush(self._queue, (due, next(self._order), url, body, attempt))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    if not self._queue:
                        self._idle.set()
                    self._cond.wait(None if not self._queue else self._queue[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, url, body, attempt = heapq.heappop(self._queue)
            self._send(url, body, attempt)

    def _send(self, url: str, body: Any, attempt: int) -> None:
        try:
            r = self._client.post(url, json=body)
            retry = r.status_code >= 500 or r.status_code == 429
            if r.status_code < 300:
                self.sent += 1
                return
            why = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            retry, why = True, f"{type(exc).__name__}: {exc}"
        if retry and attempt < self.attempts:
            delay = self.backoff_s * 2 ** (attempt - 1)
            log.warning("alert post to %s failed (%s); retry %d in %.1f s", url, why, attempt, delay)
            self._push(time.monotonic() + delay, url, body, attempt + 1)
        else:
            self.failed += 1
            log.error("alert post to %s failed (%s); giving up after %d tries", url, why, attempt)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing is queued or being retried; True when drained."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        """Stop the thread (what is still queued is dropped); a later post starts it again."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
            self._queue.clear()
            self._idle.set()
        if thread is not None:
            thread.join(timeout=5)
