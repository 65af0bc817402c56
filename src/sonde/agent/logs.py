"""Turn one line of a model server's output into a log record.

Level detection, in order:

1. JSON lines (``{...}``): the ``level`` / ``severity`` / ``levelname`` / ``log.level``
   field (any case). ``request_id`` and ``component`` come from fields of those names.
2. glog/absl prefixes (``I0501 12:00:00.123456 42 file.cc:12] ...``), used by the C++
   parts of inference stacks.
3. A header of the usual Python ``logging``, uvicorn, gunicorn, loguru and vLLM formats:
   the line may start with timestamps, bracketed fields (``[7]``), separators and at
   most one logger name before the level word (``INFO:root:msg``, ``2024-05-01
   12:00:00,123 - app - WARNING - msg``, ``[2024-05-01 ...] [ERROR] msg``, ``INFO:
   127.0.0.1:5 - "GET / HTTP/1.1" 200``). The level word must be upper case unless
   it is bracketed (``[info     ]``, structlog's console renderer), so prose such as
   "Error loading weights" or "loaded 3 INFO records" gets no level.

No level found means no level (severity 0), never a guess. ``request_id=X`` and
``component=X`` tokens anywhere in a plain line fill those attributes. uvicorn access
lines also get ``http.request.method``, ``url.path``, ``http.response.status_code``.
ANSI colour codes are removed: uvicorn colours its level names on a terminal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .model import CANONICAL, SEVERITY, LogRecord

_LEVELS = "TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|EXCEPTION|CRITICAL|FATAL"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# A level word: bare (upper case only) or bracketed (any case, padded as structlog does).
_LEVEL_AT = re.compile(
    rf"\[\s*(?P<b>(?i:{_LEVELS}))\s*\]|<(?P<a>(?i:{_LEVELS}))>|(?P<w>{_LEVELS})(?=$|[\s:|,\]\-])"
)
# Header pieces that may precede the level word.
_TIMESTAMP = re.compile(
    r"(?:\d{4}[-/]\d{2}[-/]\d{2}|\d{2}[-/]\d{2}(?:[-/]\d{2,4})?)"          # date
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"                    # time
    r"(?:\s?(?:Z|[+-]\d{2}:?\d{2}|UTC)(?![\w]))?"                          # zone
    r"|\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"                                  # time alone
    r"|\d{10}(?:\.\d+)?(?=\s)"                                             # epoch seconds
)
_BRACKETED = re.compile(r"[\[(<][^\])>\n]{0,64}[\])>]")
_SEPARATOR = re.compile(r"[-|:,]")
_LOGGER = re.compile(r"[A-Za-z_][\w.\-]{0,80}(?=\s*(?:\s-\s|:|\|))")
_MAX_HEADER_STEPS = 8

_GLOG = re.compile(r"([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\S+:\d+\]")
_GLOG_LEVEL = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "FATAL"}

# Bounded repeats and a bounded search window: lines are untrusted and can be 64 KiB of
# one token, where an unbounded ``\S+`` would backtrack quadratically.
_ACCESS = re.compile(
    r'(?P<client>\S{1,100}) - "(?P<method>[A-Z]{1,16}) (?P<target>\S{1,8192}) HTTP/[\d.]{1,4}" (?P<status>\d{3})(?!\d)'
)
_ACCESS_WINDOW = 160  # the request line starts within this many characters of the message
_TOKEN = re.compile(r'(?:^|[\s,;(\[{])(request_id|component)=(?:"([^"]{1,256})"|([^\s,;)\]}"]{1,256}))')

_JSON_LEVEL_KEYS = ("level", "severity", "levelname", "log.level", "loglevel", "severity_text", "lvl")
_JSON_REQUEST_KEYS = ("request_id", "requestId", "request-id")
_JSON_MESSAGE_KEYS = ("message", "msg", "event")


def _level_from_header(line: str) -> tuple[str | None, int]:
    """The level word of a log header and where the message after it starts."""
    pos, n, logger_seen = 0, len(line), False
    for _ in range(_MAX_HEADER_STEPS):
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos >= n:
            return None, 0
        m = _LEVEL_AT.match(line, pos)
        if m:
            return (m.group("b") or m.group("a") or m.group("w")).upper(), m.end()
        for rx in (_TIMESTAMP, _BRACKETED, _SEPARATOR):
            m = rx.match(line, pos)
            if m:
                pos = m.end()
                break
        else:
            m = None if logger_seen else _LOGGER.match(line, pos)
            if m is None:
                return None, 0
            logger_seen, pos = True, m.end()
    return None, 0


def _tokens(text: str, attrs: dict[str, Any]) -> None:
    for m in _TOKEN.finditer(text):
        attrs.setdefault(m.group(1), m.group(2) or m.group(3))


def _json_fields(obj: dict) -> tuple[str | None, dict[str, Any]]:
    attrs: dict[str, Any] = {}
    level = None
    nested_log = obj.get("log") if isinstance(obj.get("log"), dict) else {}
    for key in _JSON_LEVEL_KEYS:
        value = obj.get(key, nested_log.get("level") if key == "log.level" else None)
        if isinstance(value, str) and value.strip().upper() in SEVERITY:
            level = value.strip().upper()
            break
    for key in _JSON_REQUEST_KEYS:
        if isinstance(obj.get(key), (str, int)) and obj[key] != "":
            attrs["request_id"] = str(obj[key])
            break
    if isinstance(obj.get("component"), str) and obj["component"]:
        attrs["component"] = obj["component"]
    for key in _JSON_MESSAGE_KEYS:
        if isinstance(obj.get(key), str):
            _tokens(obj[key], attrs)
            break
    return level, attrs


def parse(line: str) -> tuple[str | None, dict[str, Any]]:
    """(level name or None, attributes) of one line, without its newline."""
    stripped = line.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return _json_fields(obj)
    attrs: dict[str, Any] = {}
    m = _GLOG.match(line)
    if m:
        level, rest = _GLOG_LEVEL[m.group(1)], m.end()
    else:
        level, rest = _level_from_header(line)
    message = line[rest:]
    access = _ACCESS.search(message, 0, _ACCESS_WINDOW + 8200) if '"' in message[:_ACCESS_WINDOW] else None
    if access and access.start() < _ACCESS_WINDOW:
        attrs["http.request.method"] = access.group("method")
        attrs["url.path"] = access.group("target").split("?", 1)[0]
        attrs["http.response.status_code"] = int(access.group("status"))
        attrs["client.address"] = access.group("client").rsplit(":", 1)[0] if ":" in access.group("client") else access.group("client")
    _tokens(message, attrs)
    return level, attrs


def make_record(line: str, ts_ns: int, stream: str | None = None) -> LogRecord:
    """A log record for one captured line; ``stream`` is ``stdout``/``stderr`` when known."""
    line = _ANSI.sub("", line.rstrip("\r\n")) if "\x1b" in line else line.rstrip("\r\n")
    level, attrs = parse(line)
    if stream:
        attrs["log.iostream"] = stream
    if level is None:
        return LogRecord(ts_ns, line, 0, "", attrs)
    return LogRecord(ts_ns, line, SEVERITY[level], CANONICAL[level], attrs)
