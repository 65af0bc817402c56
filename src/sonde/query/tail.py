"""The live tail: a log target's lines in the order they arrived, from a cursor the client holds.

Every stored line has ``seq``, its arrival number (wall-clock nanoseconds when its
request was numbered, unique, growing). A stream reads ``seq > cursor`` up to a
*horizon*: a number below which no line can still be on its way to the store. Lines
are numbered before their group commit, so a line numbered earlier may become visible
after one numbered later; reading only up to the horizon is what makes "each line
exactly once, no gap" hold:

- this process numbered the line: the horizon is just below its oldest reservation not
  yet committed (:meth:`sonde.store.Store.committed_seq`), exact;
- another API replica did (a ClickHouse cluster): the horizon is also held
  ``settle_ns`` behind the wall clock, the time such a commit (and clock skew between
  replicas) may take.

The cursor travels in the event id (``Last-Event-ID`` on reconnect), so any replica can
resume any stream, and the server keeps nothing per client. It is ``SEQ.ORIGIN``: the
last line sent, and the horizon when the stream first opened, which splits the backlog
asked for by ``start_epoch_millis`` (lines already stored, filtered by their timestamp)
from the live lines (everything that arrives later, whatever its timestamp: an agent
replaying its spool after an outage sends old lines that are new to the stream).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .._exceptions import BadRequest
from ..store import Store
from .logs import Arrival, LogQuery, Target, build_sql, log_views


@dataclass(frozen=True)
class Cursor:
    seq: int  # the last line sent; 0 before the first
    origin: int  # the horizon when the stream first opened

    def encode(self) -> str:
        return f"{self.seq}.{self.origin}"

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        seq, dot, origin = text.strip().partition(".")
        if not (dot and seq.isdigit() and origin.isdigit() and len(text) < 48):
            raise BadRequest("Last-Event-ID is not a cursor this server sent (the id: of an event)",
                             field="Last-Event-ID")
        return cls(int(seq), int(origin))


def horizon(store: Store, settle_ns: int | None) -> int:
    """The highest ``seq`` a stream may read now. ``settle_ns`` None: this process is the
    store's only writer (chDB); otherwise other writers' lines are taken as committed
    ``settle_ns`` after they were numbered."""
    if settle_ns is None:
        return store.committed_seq()
    return store.committed_seq(others_until=time.time_ns() - settle_ns)


class Tail:
    """One stream's reader: :meth:`read` returns the next lines, each with its event id."""

    def __init__(self, store: Store, ws: str, target: Target, q: LogQuery, *,
                 cursor: Cursor | None, settle_ns: int | None):
        self.store, self.ws, self.target, self.q = store, ws, target, q
        self.settle_ns = settle_ns
        backlog = q.start_ns > 0
        self.origin = cursor.origin if cursor else horizon(store, settle_ns)
        # where the next read starts: after the last line sent, or (a new stream) from
        # the beginning when a backlog was asked for, else from the horizon: new lines only
        self.after = cursor.seq if cursor else (0 if backlog else self.origin)
        self.last = self.after

    def read(self) -> list[tuple[str, dict]]:
        """Up to ``q.limit`` lines past the cursor, oldest arrival first."""
        upto = horizon(self.store, self.settle_ns)
        if upto <= self.after:
            return []
        since = self.q.start_ns if self.q.start_ns > 0 else None
        sql, params = build_sql(self.store.t("logs"), self.ws, self.target, self.q,
                                arrival=Arrival(self.after, upto, since, self.origin))
        # up to the horizon every row is committed: no need to wait for the write-ahead log
        table = self.store.committed.query_arrow(sql, params)
        seqs = table.column("seq").to_pylist()
        lines = log_views(table)
        out = []
        for seq, line in zip(seqs, lines):
            out.append((Cursor(seq, self.origin).encode(), line))
        if seqs:
            self.last = seqs[-1]
        # A short page read everything up to the horizon: the next read starts there, so a
        # rare filter does not rescan since its last match. A full page stops at its last line.
        self.after = upto if len(seqs) < self.q.limit else seqs[-1]
        return out
