"""Options every client command shares: where the server is, which key, what output.

One decorator, :func:`client_options`, adds them all, so every command reads and
prints the same way (the sqlite-utils pattern). Commands receive a ready ``Api``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import click
import httpx

from ..settings import setting


class Api:
    def __init__(self, server: str, key: str | None, fmt: str):
        self.server = server.rstrip("/")
        self.key = key
        self.fmt = fmt

    def call(self, method: str, path: str, **kw) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            r = httpx.request(method, self.server + path, headers=headers, timeout=60, **kw)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.server}: {exc}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                msg = body.get("message") or r.text
                field = (body.get("error") or {}).get("field")
            except ValueError:
                msg, field = r.text, None
            raise click.ClickException(f"{r.status_code}: {msg}" + (f" (field: {field})" if field else ""))
        return r.json() if r.content else None

    def emit(self, data: Any, rows: list[dict] | None = None, columns: list[str] | None = None,
             display: Callable[[dict], dict] | None = None) -> None:
        """Print ``data`` as JSON, or ``rows`` as a table / JSON lines. ``display`` turns a
        row into its table cells, so JSON keeps the API's raw fields (epoch ns, seconds)."""
        if self.fmt == "json" or rows is None:
            click.echo(json.dumps(data, indent=2))
        elif self.fmt == "jsonl":
            for row in rows:
                click.echo(json.dumps(row))
        else:
            from rich.console import Console
            from rich.table import Table

            if display is not None:
                rows = [display(row) for row in rows]
            cols = columns or (list(rows[0]) if rows else [])
            table = Table(*cols, show_lines=False)
            for row in rows:
                table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
            Console(file=sys.stdout, width=200).print(table)


def _default_key(data_dir: str, which: str) -> str | None:
    try:
        with open(os.path.join(data_dir, "credentials.json")) as f:
            return json.load(f).get(which)
    except (OSError, ValueError):
        return None


def profiles_path() -> str:
    """``SONDE_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/sonde/config.toml`` (``~/.config``)."""
    if os.environ.get("SONDE_CLI_CONFIG"):
        return os.environ["SONDE_CLI_CONFIG"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "sonde", "config.toml")


#: a profile's field for each kind of key a command needs
PROFILE_KEYS = {"management_key": "api_key", "admin_key": "admin_key", "ingest_key": "ingest_key"}
_PROFILE_FIELDS = {"url", *PROFILE_KEYS.values()}


def load_profile(name: str | None) -> dict:
    """The named profile (else the file's ``default_profile``) of the profiles file; {} when
    no file and no name. A missing profile or a malformed file is a usage error naming it."""
    path = profiles_path()
    if not os.path.exists(path):
        if name:
            raise click.UsageError(f"--profile {name}: no profiles file at {path} (or set SONDE_CLI_CONFIG)")
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"profiles file {path}: {exc}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise click.UsageError(f"profiles file {path}: 'profiles' must be a table ([profiles.NAME])")
    name = name or data.get("default_profile")
    if not name:
        return {}
    if not isinstance(name, str):
        raise click.UsageError(f"profiles file {path}: default_profile must be a string")
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        known = ", ".join(sorted(profiles)) or "none"
        raise click.UsageError(f"profile {name!r} is not in {path} (profiles: {known})")
    unknown = sorted(set(profile) - _PROFILE_FIELDS)
    if unknown:
        raise click.UsageError(f"profile {name!r} in {path}: unknown field {unknown[0]!r}"
                               f" (fields: {', '.join(sorted(_PROFILE_FIELDS))})")
    for field, value in profile.items():
        if not isinstance(value, str) or not value:
            raise click.UsageError(f"profile {name!r} in {path}: {field} must be a non-empty string")
    return profile


DEFAULT_URL = f"http://{setting('host').default}:{setting('port').default}"


def client_options(key_kind: str = "management_key", formats: tuple[str, ...] = ("table", "json", "jsonl")):
    """Add --server, --key, --profile, --data-dir and --format; pass ``api`` to the command.

    Where the server and key come from, first found: the flag, the environment
    (``SONDE_URL``, ``SONDE_API_KEY``), the profile (``--profile``, ``SONDE_PROFILE`` or the
    file's ``default_profile``), then a local server and DATA_DIR/credentials.json."""

    def decorate(fn):
        @click.option("--server", envvar=["SONDE_URL", "SONDE_SERVER"], default=None,
                      help=f"Sonde server URL [env: SONDE_URL; else the profile's url; else {DEFAULT_URL}].")
        @click.option("--key", envvar="SONDE_API_KEY", default=None,
                      help=f"API key [env: SONDE_API_KEY; else the profile's {PROFILE_KEYS[key_kind]};"
                           f" else {key_kind} from DATA_DIR/credentials.json].")
        @click.option("--profile", envvar="SONDE_PROFILE", default=None,
                      help="A named server of the profiles file (~/.config/sonde/config.toml; sonde --help).")
        @click.option("--data-dir", envvar="SONDE_DATA_DIR", default=setting("data_dir").default, show_default=True,
                      help="Where to find credentials.json when no key is given otherwise.")
        @click.option("-o", "--format", "fmt", type=click.Choice(list(formats)), default=formats[0],
                      show_default=True, help="Output format.")
        @functools.wraps(fn)
        def wrapper(server, key, profile, data_dir, fmt, **kw):
            # the default profile only when no server was named: its key belongs to its own url
            chosen = load_profile(profile) if (profile or not server) else {}
            server = server or chosen.get("url") or DEFAULT_URL
            key = key or chosen.get(PROFILE_KEYS[key_kind]) or _default_key(data_dir, key_kind)
            return fn(api=Api(server, key, fmt), **kw)

        return wrapper

    return decorate


# --- times: what --since, --until and durations accept ------------------------------------

SINCE_HELP = "Window start: a time ago (30m, 1h, 7d), an ISO time (UTC unless it has an offset) or epoch ms."
UNTIL_HELP = "Window end, in the same forms as --since.  [default: now]"

_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """Seconds of ``500ms``, ``2s``, ``1.5s``, ``30m``, ``1h``, ``7d``; None if not one."""
    m = _DURATION.fullmatch(text.strip().lower())
    return float(m[1]) * _UNIT_S[m[2]] if m else None


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        seconds = value if isinstance(value, float) else parse_duration(value)
        return seconds if seconds is not None else self.fail(
            f"{value!r} is not a duration such as 500ms, 2s or 1.5s", param, ctx)


class Since(click.ParamType):
    """A time ago (``30m``, ``1h``, ``7d``), an ISO 8601 time, or epoch milliseconds
    (digits), as epoch milliseconds: every command's ``--since`` and ``--until``."""

    name = "SINCE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if value.strip().isdigit():
            return int(value)
        seconds = parse_duration(value)
        if seconds is not None:
            return time.time_ns() // 1_000_000 - round(seconds * 1000)
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(f"{value!r} is neither a time ago (30m, 1h, 7d) nor an ISO time", param, ctx)
        if when.tzinfo is None:  # times are shown in UTC, so a bare one is read as UTC too
            when = when.replace(tzinfo=timezone.utc)
        return round(when.timestamp() * 1000)
