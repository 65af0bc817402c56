"""The logs verbs: ``sonde logs``, ``sonde chains logs``, ``sonde train logs``, ``sonde loops logs``.

One command shape per log target (:data:`TARGETS`), built by :func:`logs_command`, with
logcli's habits: ``--since``/``--until`` as a time ago or a time, ``-n`` lines (paged
through the API past its 1000 a call), ``-f`` over the live stream, levels coloured only
on a terminal, and notes on stderr so stdout pipes cleanly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import click

from .follow import Skip, follow, line_text
from .options import SINCE_HELP, UNTIL_HELP, Since, client_options

#: the API's largest page
PAGE = 1000
#: lines printed before following when neither -n nor --since says
FOLLOW_BACKLOG = 20
#: the API's default window, made explicit when several pages must share it
DEFAULT_WINDOW_MS = 30 * 60 * 1000
#: a training job in one of these states writes no more lines. The agent sets COMPLETED or
#: FAILED; a PUT may set any string, the vendor's own spelling (TRAINING_JOB_FAILED) too
JOB_ENDED = ("COMPLETED", "FAILED", "STOPPED", "CANCELLED", "CANCELED")


def job_ended(status: str) -> bool:
    return status.upper().removeprefix("TRAINING_JOB_") in JOB_ENDED
#: how long `train logs -f` keeps reading after the job ended: its last lines are in flight
JOB_DRAIN_S = 2.0


@dataclass(frozen=True)
class LogTarget:
    args: tuple[str, ...]
    path: str
    line_filters: bool  # replica, request id, component, pattern, includes, excludes


TARGETS = {
    "deployment": LogTarget(("model_id", "deployment_id"), "/v1/models/{model_id}/deployments/{deployment_id}/logs",
                            True),
    "chainlet": LogTarget(("chain_id", "chain_deployment_id", "chainlet_id"),
                          "/v1/chains/{chain_id}/deployments/{chain_deployment_id}/chainlets/{chainlet_id}/logs", True),
    "job": LogTarget(("training_project_id", "training_job_id"),
                     "/v1/training_projects/{training_project_id}/jobs/{training_job_id}/logs", True),
    "loops": LogTarget(("deployment_id",), "/v1/loops/deployments/{deployment_id}/logs", False),
}

_LINE_OPTIONS = [
    click.option("--replica", help="Only this replica's lines."),
    click.option("--request-id", help="Only this request's lines."),
    click.option("--component", help="Only this component's lines."),
    click.option("--grep", "--search", "search_pattern", help="RE2 pattern the line must match."),
    click.option("--include", "includes", multiple=True, help="Substring that must appear; repeatable."),
    click.option("--exclude", "excludes", multiple=True, help="Substring that must not appear; repeatable."),
]

_OPTIONS = [
    click.option("--since", "--start", "start_epoch_millis", type=Since(), help=SINCE_HELP),
    click.option("--until", "--end", "end_epoch_millis", type=Since(), help=UNTIL_HELP),
    click.option("--direction", type=click.Choice(["asc", "desc"]), help="Newest first (desc, the default) or oldest."),
    click.option("-n", "--limit", type=click.IntRange(min=1),
                 help="How many lines; past 1000 they are read page by page. [default: the API's 500; with -f"
                      f" and no --since, {FOLLOW_BACKLOG} before the live ones]"),
    click.option("--level", "--min-level", "min_level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
                 help="This level and above."),
    click.option("-f", "--follow", is_flag=True,
                 help="Then print new lines as they arrive (the live stream), until Ctrl-C."),
]


def _emitter(fmt: str):
    if fmt in ("json", "jsonl"):
        return lambda line: click.echo(json.dumps(line))
    return lambda line: click.echo(line_text(line, color=True))


def read_pages(api, path: str, params: dict, n: int | None, emit) -> int:
    """Print up to ``n`` lines of the window (one call's default when None), page by page;
    returns how many. Lines sharing a millisecond across two pages print once."""
    limit = n or params.get("limit")
    if limit is None or limit <= PAGE:
        lines = api.call("GET", path, params={**params, **({"limit": limit} if limit else {})})["logs"]
        for line in lines:
            emit(line)
        return len(lines)
    desc = params.get("direction", "desc") == "desc"
    now = time.time_ns() // 1_000_000
    window = {"end_epoch_millis": params.get("end_epoch_millis") or now}
    window["start_epoch_millis"] = params.get("start_epoch_millis") or window["end_epoch_millis"] - DEFAULT_WINDOW_MS
    printed, skip = 0, Skip()
    while printed < limit:
        ask = min(PAGE, limit - printed + sum(skip.left.values()))
        page = api.call("GET", path, params={**params, **window, "limit": ask})["logs"]
        fresh = [line for line in page if not skip(line)]
        for line in fresh[:limit - printed]:
            emit(line)
        printed += min(len(fresh), limit - printed)
        if len(page) < ask:
            break
        edge = int(page[-1]["timestamp"]) // 10**6
        if not fresh:  # a whole page inside one millisecond, all printed: step past it
            click.echo(f"sonde: over {PAGE} lines in the millisecond {edge}; skipping the rest of it", err=True)
            window["end_epoch_millis" if desc else "start_epoch_millis"] = edge if desc else edge + 1
            skip = Skip()
            continue
        # the next page starts at the edge millisecond again (the API pages by ms)
        window["end_epoch_millis" if desc else "start_epoch_millis"] = edge + 1 if desc else edge
        skip = Skip([x for x in page if int(x["timestamp"]) // 10**6 == edge], edge)
    return printed


def _job_ended(api, target_args: dict):
    """``until`` for ``train logs -f``: true once the job has ended and its last lines had
    time to arrive (the job's status is read every 2 s); the status it ended with is kept
    for the caller."""
    state = {"status": None, "ended_at": None, "checked": 0.0}
    path = "/v1/training_projects/{training_project_id}/jobs/{training_job_id}".format(**target_args)

    def until() -> bool:
        now = time.monotonic()
        if state["ended_at"] is not None:
            return now - state["ended_at"] >= JOB_DRAIN_S
        if now - state["checked"] >= 2.0:
            state["checked"] = now
            try:
                job = api.call("GET", path)["training_job"]
            except click.ClickException as exc:  # the stream says more if the server is gone
                click.echo(f"sonde: could not read the job's status ({exc.message}); trying again", err=True)
                return False
            if job_ended(job["current_status"]):
                state["status"], state["error"] = job["current_status"], job.get("error_message")
                state["ended_at"] = now
        return False

    return until, state


def run_logs(api, target: LogTarget, target_args: dict, follow_lines: bool, filters: dict,
             job: bool = False) -> None:
    if follow_lines and filters.get("end_epoch_millis") is not None:
        raise click.UsageError("--follow reads new lines as they come: it takes no --until")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in filters.items() if v not in (None, ())}
    path = target.path.format(**target_args)
    emit = _emitter(api.fmt)
    if not follow_lines:
        if api.fmt == "json":  # one document: collect the pages first
            lines: list[dict] = []
            read_pages(api, path, params, params.pop("limit", None), lines.append)
            click.echo(json.dumps({"logs": lines}, indent=2))
        else:
            read_pages(api, path, params, params.pop("limit", None), emit)
        return
    stream_params = {k: v for k, v in params.items() if k not in ("limit", "direction", "end_epoch_millis")}
    skip = None
    if "start_epoch_millis" not in params:
        # the last lines, then the stream from the newest one's millisecond, less what was
        # printed; with none, from just before the GET, so a line arriving in between shows
        asked_at = time.time_ns() // 1_000_000
        backlog: list[dict] = []
        read_pages(api, path, {**stream_params, "direction": "desc"}, params.get("limit") or FOLLOW_BACKLOG,
                   backlog.append)
        for line in reversed(backlog):
            emit(line)
        edge = int(backlog[0]["timestamp"]) // 10**6 if backlog else asked_at
        stream_params["start_epoch_millis"] = edge
        skip = Skip(backlog, edge)
    until, state = _job_ended(api, target_args) if job else (None, None)
    click.echo("sonde: following (Ctrl-C to stop)", err=True)
    follow(api, path, stream_params, emit, skip=skip, until=until)
    if state is not None and state["status"] is not None:
        click.echo(f"sonde: training job ended: {state['status']}"
                   + (f" ({state['error']})" if state.get("error") else ""), err=True)
        if state["status"].upper().removeprefix("TRAINING_JOB_") != "COMPLETED":
            raise SystemExit(1)


def logs_command(name: str, target: LogTarget, doc: str, *, job: bool = False) -> click.Command:
    """The logs command of ``target``: its ids as arguments, the options its API takes."""

    def command(api, follow, **kw):
        target_args = {a: kw.pop(a) for a in target.args}
        run_logs(api, target, target_args, follow, kw, job=job)

    command.__doc__ = doc
    cmd = client_options(formats=("text", "json", "jsonl"))(command)
    for opt in reversed(_OPTIONS + (_LINE_OPTIONS if target.line_filters else [])):
        cmd = opt(cmd)
    for arg in reversed(target.args):
        cmd = click.argument(arg)(cmd)
    return click.command(name)(cmd)


logs = logs_command("logs", TARGETS["deployment"], """Deployment logs, newest first; -f follows them live.

\b
Examples:
  sonde logs MODEL DEPLOYMENT --since 1h --level WARNING --grep 'CUDA|NCCL'
  sonde logs MODEL DEPLOYMENT -f --since 10m          # like logcli --tail --since 10m
  sonde logs MODEL DEPLOYMENT -n 5000 -o jsonl > lines.jsonl""")

chainlet_logs = logs_command("logs", TARGETS["chainlet"], """A chainlet's logs; -f follows them live.

\b
Example:
  sonde chains logs CHAIN CHAIN_DEPLOYMENT CHAINLET -f --level INFO""")

job_logs = logs_command("logs", TARGETS["job"], """A training job's logs; -f follows them until the job ends,
then prints its final status (exit status 1 unless it COMPLETED).

\b
Example:
  sonde train logs PROJECT JOB -f --since 1h""", job=True)

loops_logs = logs_command("logs", TARGETS["loops"], """A trainer (loops) deployment's logs; -f follows them live.

\b
Example:
  sonde loops logs DEPLOYMENT --since 30m --level WARNING""")
