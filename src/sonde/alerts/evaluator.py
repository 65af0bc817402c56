"""The evaluation loop: every ``alert_eval_seconds``, in one process of the deployment.

Each round reads every workspace's rules, receivers and alert state from the store,
evaluates the rules (``alerts/evaluate.py``), advances each instance
(``alerts/state.py``), writes the changed state in one INSERT and hands the posts to
the :class:`~sonde.alerts.deliver.Sender`. State is written before anything is posted,
so a crash between the two can lose a notification but never announce one twice.

With several API replicas on one ClickHouse cluster each runs this loop, but only the
holder of the store's lease (``store/alerts.py``) evaluates; the lease lasts three
intervals and its holder renews it every round, so when the holder dies another
replica takes over within three intervals.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from ..store import Store
from ..store.alerts import AlertDocs
from .deliver import Sender, alertmanager_alerts, webhook_payload
from .evaluate import evaluate
from .state import Transition, step

log = logging.getLogger("sonde.alerts")


@dataclass
class Round:
    """What one evaluation did (``sonde_alert_*`` figures and the benchmark read it)."""

    evaluated: bool = False
    rules: int = 0
    active: int = 0
    fired: int = 0
    resolved: int = 0
    seconds: float = 0.0


class Evaluator:
    def __init__(self, store: Store, *, interval_s: float = 30.0, sender: Sender | None = None,
                 external_url: str = "", holder: str | None = None):
        self.docs = AlertDocs(store)
        self.store = store
        self.interval_s = interval_s
        self.sender = sender or Sender()
        self.external_url = external_url
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one round at a time (the loop, or a test's run_once)

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sonde-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.docs.release(self.holder)
        except Exception:  # the store may already be closed; the lease then expires
            pass
        self.sender.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                done = self.run_once()
            except Exception:
                log.exception("alert evaluation failed")
                continue
            if done.seconds > self.interval_s:
                # the next round starts an interval after this one ended: say so, with the cure
                log.warning("alert evaluation of %d rules took %.1f s, longer than alert_eval_seconds (%g);"
                            " share windows between a deployment's rules or raise the setting",
                            done.rules, done.seconds, self.interval_s)

    # --- one round ------------------------------------------------------------------------

    def run_once(self, now_ms: int | None = None) -> Round:
        with self._lock:
            return self._round(time.time_ns() // 1_000_000 if now_ms is None else now_ms)

    def _round(self, now_ms: int) -> Round:
        t0 = time.perf_counter()
        rules = self.docs.all("rule")
        states = self.docs.all("state")
        if not rules and not states:
            return Round()
        if not self.docs.lease(self.holder, 3 * self.interval_s, now_ms):
            return Round()
        by_ws: dict[str, list[dict]] = defaultdict(list)
        for ws, _, rule in rules:
            by_ws[ws].append(rule)
        prior: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
        for ws, fp, inst in states:
            prior[(ws, inst["rule_id"])][fp] = inst
        result = Round(evaluated=True, rules=len(rules))
        writes: list[tuple[str, str, str, dict | None]] = []
        outcome: list[tuple[str, dict | None, Transition]] = []
        for ws, ws_rules in by_ws.items():
            holding = evaluate(self.store, ws, ws_rules, now_ms)
            for rule in ws_rules:
                before = prior.pop((ws, rule["id"]), {})
                t = step(rule, before, holding.get(rule["id"]), now_ms)
                outcome.append((ws, rule, t))
                writes += [(ws, "state", i["fingerprint"], i) for i in t.keep if before.get(i["fingerprint"]) != i]
                writes += [(ws, "state", fp, None) for fp in t.forget]
        for (ws, _), before in prior.items():  # instances of deleted rules end
            t = step(None, before, [], now_ms)
            outcome.append((ws, None, t))
            writes += [(ws, "state", fp, None) for fp in t.forget]
        self.docs.write(writes)
        self._deliver(outcome, now_ms)
        for _, _, t in outcome:
            result.active += len(t.keep)
            result.fired += len(t.fired)
            result.resolved += len(t.resolved)
        result.seconds = time.perf_counter() - t0
        return result

    def _deliver(self, outcome: list[tuple[str, dict | None, Transition]], now_ms: int) -> None:
        receivers: dict[str, list[dict]] = defaultdict(list)
        for ws, _, doc in self.docs.all("receiver"):
            receivers[ws].append(doc)
        # Alertmanager drops an alert whose endsAt passed without a re-send; leave room for
        # a few missed rounds, as Prometheus does (4 x max(interval, 1 min)).
        ends_ms = now_ms + int(4 * max(self.interval_s, 60) * 1000)
        per_ws: dict[str, list[dict]] = defaultdict(list)
        for ws, _, t in outcome:
            per_ws[ws] += [i for i in t.keep if i["state"] == "firing"] + t.resolved
        for ws, recvs in receivers.items():
            for r in recvs:
                if r["type"] == "alertmanager":
                    if per_ws.get(ws):
                        self.sender.post(r["url"].rstrip("/") + "/api/v2/alerts",
                                         alertmanager_alerts(per_ws[ws], ends_ms=ends_ms,
                                                             generator_url=self.external_url))
                    continue
                for rws, _, t in outcome:
                    if rws != ws:
                        continue
                    for status, instances in (("firing", t.fired), ("resolved", t.resolved)):
                        if instances:
                            self.sender.post(r["url"], webhook_payload(r["name"], status, instances,
                                                                       external_url=self.external_url))

    # --- reads for the API ----------------------------------------------------------------

    def active(self, ws: str) -> list[dict]:
        """The workspace's pending and firing alerts, by name then labels."""
        return sorted(self.docs.list(ws, "state"), key=lambda i: (i["labels"]["alertname"], sorted(i["labels"].items())))
