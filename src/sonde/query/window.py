"""Time windows of the metrics endpoints: mode, start, end and the step ladder.

docs/api.md (#windows, #modes, #steps) fixes the rules; training-job and loops
metrics take the same parameters, so they resolve them here too.

- CURRENT (the default) takes no start/end and covers the most recent 60 s as one
  value set; SUMMARY is one value set over the window; SERIES is value sets at
  ``start + k * step`` with ``step`` the smallest rung of :data:`STEP_LADDER_S` that
  gives at most :data:`MAX_STEPS` steps, and ``ceil(window / step)`` of them (the
  last one may be partial).
- Defaults: end = now, start = end - 1 h. ``end <= start``, a window over 7 days or a
  start in the future: 400 naming the field.

Windows are half-open, ``[start, end)``, in epoch milliseconds; a sample or delta
belongs to the step its timestamp falls in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .._exceptions import BadRequest

MODES = ("CURRENT", "SUMMARY", "SERIES")
CURRENT_MS = 60_000
DEFAULT_WINDOW_MS = 3600_000
MAX_WINDOW_MS = 7 * 86400_000
STEP_LADDER_S = (60, 300, 900, 1800, 3600)
MAX_STEPS = 360
# ts is stored as Int64 nanoseconds; larger millis would overflow it.
MAX_EPOCH_MS = (2**63 - 1) // 1_000_000


def iso(ms: int) -> str:
    """Epoch milliseconds as the vendor's timestamps: ISO 8601 in UTC with a ``Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    mode: str
    start_ms: int
    end_ms: int
    step_s: int | None  # SERIES only; the vendor's step_seconds

    @property
    def step_ms(self) -> int:
        """Length of one value set: the step, or the whole window for CURRENT/SUMMARY."""
        return self.step_s * 1000 if self.step_s else self.end_ms - self.start_ms

    @property
    def n_steps(self) -> int:
        return -(-(self.end_ms - self.start_ms) // self.step_ms)

    def step_starts_ms(self) -> list[int]:
        return [self.start_ms + k * self.step_ms for k in range(self.n_steps)]

    # Nanosecond forms, the unit of the stored ``ts``.
    @property
    def start_ns(self) -> int:
        return self.start_ms * 1_000_000

    @property
    def end_ns(self) -> int:
        return self.end_ms * 1_000_000

    @property
    def step_ns(self) -> int:
        return self.step_ms * 1_000_000


def step_for(window_ms: int, ladder: tuple[int, ...] = STEP_LADDER_S) -> int:
    """The smallest rung of the ladder that gives at most MAX_STEPS steps."""
    for step in ladder:
        if -(-window_ms // (step * 1000)) <= MAX_STEPS:
            return step
    # Unreachable for windows within MAX_WINDOW_MS (7 d / 1 h = 168 steps).
    raise BadRequest("window too long for the step ladder", field="start_epoch_millis")


def parse_mode(mode: str | None) -> str:
    """Modes are the vendor's upper-case enum; lower-case spellings are accepted too."""
    if mode is None:
        return "CURRENT"
    m = mode.strip().upper()
    if m not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}", field="mode")
    return m


def _epoch(value: int | None, field: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_EPOCH_MS:
        raise BadRequest(f"{field} must be epoch milliseconds between 0 and {MAX_EPOCH_MS}", field=field)
    return value


def resolve(mode: str | None, start_ms: int | None, end_ms: int | None, now_ms: int | None = None) -> Window:
    """Apply the defaults and rules to the request's parameters."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    m = parse_mode(mode)
    start_ms, end_ms = _epoch(start_ms, "start_epoch_millis"), _epoch(end_ms, "end_epoch_millis")
    if m == "CURRENT":
        for field, value in (("start_epoch_millis", start_ms), ("end_epoch_millis", end_ms)):
            if value is not None:
                raise BadRequest(f"{field} must be omitted in CURRENT mode", field=field)
        return Window(m, now - CURRENT_MS, now, None)
    end = now if end_ms is None else end_ms
    start = end - DEFAULT_WINDOW_MS if start_ms is None else start_ms
    if start > now:
        raise BadRequest("start_epoch_millis is in the future", field="start_epoch_millis")
    if end <= start:
        raise BadRequest("end_epoch_millis must be after start_epoch_millis", field="end_epoch_millis")
    if end - start > MAX_WINDOW_MS:
        # The vendor documents the 7-day limit on end_epoch_millis.
        raise BadRequest("the window between start and end must not exceed 7 days", field="end_epoch_millis")
    return Window(m, start, end, step_for(end - start) if m == "SERIES" else None)


#: Most value sets a client-chosen step may ask for (training and loops metrics).
MAX_POINTS = 10_080


def resolve_stepped(start_ms: int | None, end_ms: int | None, step_s: int | None, now_ms: int | None = None,
                    *, ladder: tuple[int, ...] = STEP_LADDER_S) -> Window:
    """A SERIES window whose step the client may choose (training and loops metrics):
    the start/end rules of :func:`resolve`; ``step_seconds`` when given (positive, at
    most MAX_POINTS steps), else the smallest rung of ``ladder`` giving <= 360 steps."""
    if step_s is not None and step_s <= 0:
        raise BadRequest("step_seconds must be a positive number of seconds", field="step_seconds")
    w = resolve("SERIES", start_ms, end_ms, now_ms)
    span = w.end_ms - w.start_ms
    if step_s is None:
        step_s = step_for(span, ladder)
    elif -(-span // (step_s * 1000)) > MAX_POINTS:
        raise BadRequest(f"step_seconds gives more than {MAX_POINTS} points over this window; use a larger step",
                         field="step_seconds")
    return Window("SERIES", w.start_ms, w.end_ms, step_s)
