"""``sonde agent``: the command group (``run``, ``watch``, ``gpu-probe``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

import click

# Only what the options need at import: ``sonde`` loads this group for every command,
# and the agent's runtime (protobuf classes, psutil, NVML) is imported when it runs.
from .spool import DEFAULT_MAX_BYTES

log = logging.getLogger("sonde.agent")


def _placement(opts: dict) -> dict[str, str]:
    """What the telemetry belongs to (SONDE.md's first group of resource attributes).

    Training jobs, chainlets and loops deployments (issue 5) add their flags to
    ``placement_options`` and their ``sonde.*`` keys here; one placement is required."""
    if not opts.get("deployment_id"):
        raise click.UsageError("--deployment-id is required")
    return {"sonde.model_id": opts.get("model_id") or "", "sonde.deployment_id": opts["deployment_id"]}


def _default_spool_dir(opts: dict) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    parts = [base, "sonde-agent", opts.get("deployment_id") or "default"]
    if opts.get("replica"):
        parts.append(opts["replica"])
    return os.path.join(*parts)


def _key(key_file: str | None) -> str:
    if key_file:
        with open(key_file) as f:
            return f.read().strip()
    key = os.environ.get("SONDE_API_KEY")
    if not key:
        raise click.UsageError("no ingest key: set SONDE_API_KEY or pass --key-file")
    return key


def placement_options(f):
    for decorator in reversed([
        click.option("--model-id", default=None, help="Model the deployment belongs to (sonde.model_id)."),
        click.option("--deployment-id", default=None, help="Deployment this replica serves (sonde.deployment_id). Required."),
    ]):
        f = decorator(f)
    return f


_AGENT_OPTIONS = [
    click.option("--replica", default=None,
                 help="Replica id (sonde.replica, 5 chars) [default: generated, remembered in the spool dir]."),
    click.option("--environment", default=None, help="Environment name (sonde.environment)."),
    click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                 help="Model cache directory: its filesystem is reported as the cache mount."),
    click.option("--ephemeral-dir", default=None, type=click.Path(file_okay=False),
                 help="A directory on the ephemeral (container) disk [default: the working directory]."),
    click.option("--ready-url", default=None, help="Replica is ready when this URL answers 200 [default: ready at once]."),
    click.option("--server", default="http://127.0.0.1:8080", show_default=True, envvar="SONDE_SERVER",
                 help="Sonde server URL (env SONDE_SERVER)."),
    click.option("--key-file", default=None, type=click.Path(exists=True, dir_okay=False),
                 help="File holding the ingest key [default: env SONDE_API_KEY]."),
    click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=1.0),
                 help="Seconds between samples (at least 1)."),
    click.option("--spool-dir", default=None, type=click.Path(file_okay=False),
                 help="Spool for batches the server cannot take yet [default: ~/.local/state/sonde-agent/DEPLOYMENT]."),
    click.option("--spool-max-bytes", default=DEFAULT_MAX_BYTES, show_default=True, type=click.IntRange(min=1 << 20),
                 help="Spool bound; past it the oldest batches are dropped (counted, logged)."),
    click.option("--log-level", default="info", show_default=True,
                 type=click.Choice(["debug", "info", "warning", "error"]), help="The agent's own messages (stderr)."),
]


def agent_options(f):
    """The options ``run`` and ``watch`` share: placement, identity, transport, spool."""
    for decorator in reversed(_AGENT_OPTIONS):
        f = decorator(f)
    return placement_options(f)


def _build(opts: dict, pid_source, restarts):
    from . import hardware
    from .core import Agent, replica_id, resource_attrs
    from .export import Exporter
    from .gpu import GpuSampler
    from .model import SYSTEM_CLOCK
    from .node import NodeSampler
    from .process import ProcessTreeSampler
    from .spool import Spool, SpoolBusy

    logging.basicConfig(level=opts["log_level"].upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per POST otherwise
    placement = _placement(opts)
    key = _key(opts["key_file"])
    spool_dir = opts["spool_dir"] or _default_spool_dir(opts)
    try:
        spool = Spool(spool_dir, opts["spool_max_bytes"])
    except SpoolBusy as exc:
        raise click.ClickException(str(exc)) from exc
    replica = replica_id(opts["replica"], spool_dir)
    clock = SYSTEM_CLOCK
    start_ns = clock.time_ns()
    gpu = GpuSampler()
    attrs = resource_attrs(
        placement=placement, replica=replica, environment=opts["environment"],
        hardware=hardware.detect(gpu.describe()), host_name=socket.gethostname(),
    )
    exporter = Exporter(opts["server"], key, spool, attrs, clock=clock)
    mounts = {"ephemeral": os.path.abspath(opts["ephemeral_dir"] or os.getcwd())}
    if opts["cache_dir"]:
        mounts["cache"] = os.path.abspath(opts["cache_dir"])
    samplers = [gpu, NodeSampler(mounts)]
    if pid_source is not None:
        samplers.append(ProcessTreeSampler(pid_source, start_ns=start_ns))
    log.info("sonde agent: replica %s of %s, sending to %s every %.0f s (spool %s, %d batches waiting)",
             replica, placement["sonde.deployment_id"], opts["server"], opts["interval"], spool.dir, len(spool))
    return Agent(exporter, samplers, interval=opts["interval"], clock=clock, restarts=restarts, start_ns=start_ns)


def _on_signals(stop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


@click.group()
def agent() -> None:
    """Run next to a model server: supervise or watch it, sample, export to Sonde."""


@agent.command(context_settings={"ignore_unknown_options": True})
@agent_options
@click.option("--restart", "restart_policy", default="on-failure", show_default=True,
              type=click.Choice(["on-failure", "always", "never"]), help="When to start the process again.")
@click.option("--restart-backoff", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="First restart delay, seconds; doubles per crash.")
@click.option("--restart-backoff-max", default=60.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Longest restart delay, seconds.")
@click.option("--stop-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between SIGTERM and SIGKILL when stopping.")
@click.option("--echo/--no-echo", default=True, show_default=True, help="Also write the process's output to ours.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(cmd, restart_policy, restart_backoff, restart_backoff_max, stop_timeout, echo, **opts) -> None:
    """Start CMD (after --), capture its output as logs, restart it on crash, sample it."""
    from .model import Counter
    from .supervisor import Supervisor

    restarts = Counter()
    holder: dict = {}
    the_agent = _build(opts, lambda: holder["sup"].pid, restarts)
    sup = holder["sup"] = Supervisor(
        cmd, on_log=the_agent.emit_log, on_event=lambda msg, sev: the_agent.emit_event(msg, sev),
        state=the_agent.state, restarts=restarts, ready_url=opts["ready_url"], restart=restart_policy,
        backoff_initial=restart_backoff, backoff_max=max(restart_backoff, restart_backoff_max),
        backoff_reset=max(60.0, restart_backoff_max), stop_timeout=stop_timeout, echo=echo,
    )
    _on_signals(sup.stop)
    the_agent.start()
    try:
        code = sup.run()
    finally:
        the_agent.stop()
    sys.exit(code)


@agent.command()
@agent_options
@click.option("--pid", type=int, default=None, help="Process whose tree to sample; the agent ends when it exits.")
@click.option("--log-file", "log_files", multiple=True, type=click.Path(dir_okay=False),
              help="Log file to follow across rotation and truncation (repeatable).")
@click.option("--from-start", is_flag=True, help="Send the lines already in the log files too.")
def watch(pid, log_files, from_start, **opts) -> None:
    """Attach to a running model server: sample --pid's process tree, tail --log-file."""
    from .supervisor import Readiness
    from .watch import FileTailer, Watch

    if pid is None and not log_files:
        raise click.UsageError("give --pid, --log-file, or both")
    the_agent = _build(opts, pid, None)
    tailers = [FileTailer(p, the_agent.emit_log, from_start=from_start) for p in log_files]
    try:
        w = Watch(pid, tailers)
    except Exception as exc:  # psutil.NoSuchProcess
        the_agent.stop()
        raise click.ClickException(f"--pid {pid}: {exc}") from exc
    _on_signals(w.stop)
    the_agent.start()
    ready = Readiness(opts["ready_url"], the_agent.state)
    ready.start()
    try:
        w.run()
    finally:
        ready.cancel()
        the_agent.stop()


@agent.command("gpu-probe")
@click.option("--samples", default=200, show_default=True, type=click.IntRange(min=1), help="Samples to time.")
def gpu_probe(samples) -> None:
    """Print one NVML sample and the per-sample cost (microseconds)."""
    from .gpu import probe

    sys.exit(probe(samples))
