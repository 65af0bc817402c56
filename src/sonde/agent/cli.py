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
from ..spool import DEFAULT_MAX_BYTES

log = logging.getLogger("sonde.agent")


#: the placing groups (docs/api.md#placement): (name, required flags, optional flags), flag -> attribute
_GROUPS = (
    ("deployment", ("deployment_id",), ("model_id",)),
    ("training job", ("training_project_id", "training_job_id"), ()),
    ("chainlet", ("chain_deployment_id", "chainlet_id"), ("chain_id",)),
    ("loops deployment", ("loops_deployment_id",), ()),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _placement(opts: dict) -> dict[str, str]:
    """What the telemetry belongs to (the placing resource attributes, docs/api.md#placement):
    exactly one of a deployment, a training job, a chainlet or a loops deployment, plus
    the node (``--node-id``/``--node-rank``) when given."""
    named = [g for g in _GROUPS if any(opts.get(f) for f in g[1] + g[2])]
    if len(named) != 1:
        what = ", ".join(" + ".join(_flag(f) for f in g[1]) for g in _GROUPS)
        raise click.UsageError(f"one placement is required: {what}" if not named else
                               "name one of a deployment, a training job, a chainlet or a loops deployment, not "
                               + " and ".join(g[0] for g in named))
    group, required, optional = named[0]
    missing = [_flag(f) for f in required if not opts.get(f)]
    if missing:
        raise click.UsageError(f"a {group} needs {' and '.join(missing)}")
    out = {f"sonde.{f}": opts.get(f) or "" for f in required + optional}
    if opts.get("node_id"):
        out["sonde.node_id"] = opts["node_id"]
    if opts.get("node_rank") is not None:
        out["sonde.node_rank"] = str(opts["node_rank"])
    return out


def _target(placement: dict[str, str]) -> str:
    """A short name of the placement, for the spool dir and the agent's messages."""
    for keys in (("sonde.deployment_id",), ("sonde.training_project_id", "sonde.training_job_id"),
                 ("sonde.chain_deployment_id", "sonde.chainlet_id"), ("sonde.loops_deployment_id",)):
        if placement.get(keys[-1]):
            name = "-".join(placement[k] for k in keys)
            break
    else:
        name = "default"
    if placement.get("sonde.node_id") or placement.get("sonde.node_rank"):
        name += "-node-" + (placement.get("sonde.node_id") or placement["sonde.node_rank"])
    return name


#: seconds a finished process's agent keeps sending what it holds before it exits
FINAL_FLUSH_S = 60.0


def _spool_dir(opts: dict) -> str:
    return opts["spool_dir"] or _default_spool_dir(opts)


def _default_spool_dir(opts: dict) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    parts = [base, "sonde-agent", _target(_placement(opts))]
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
        click.option("--deployment-id", default=None,
                     help="Deployment this replica serves (sonde.deployment_id). One placement is required: "
                          "this, a training job, a chainlet or a loops deployment."),
        click.option("--training-project-id", default=None,
                     help="Training project of the job (sonde.training_project_id); with --training-job-id."),
        click.option("--training-job-id", default=None,
                     help="Training job this node runs (sonde.training_job_id); the job's status follows the "
                          "process (docs/agent.md)."),
        click.option("--chain-id", default=None, help="Chain of the chainlet (sonde.chain_id)."),
        click.option("--chain-deployment-id", default=None,
                     help="Chain deployment of the chainlet (sonde.chain_deployment_id); with --chainlet-id."),
        click.option("--chainlet-id", default=None, help="Chainlet this replica serves (sonde.chainlet_id)."),
        click.option("--loops-deployment-id", default=None,
                     help="Trainer (loops) deployment this node serves (sonde.loops_deployment_id)."),
        click.option("--node-id", default=None, help="Node of a multi-node job (sonde.node_id)."),
        click.option("--node-rank", default=None, type=click.IntRange(min=0),
                     help="Rank of the node in a multi-node job (sonde.node_rank; 0 is the leader)."),
    ]):
        f = decorator(f)
    return f


_AGENT_OPTIONS = [
    click.option("--replica", default=None,
                 help="Replica id (sonde.replica, 5 chars) [default: generated, remembered in the spool dir]."),
    click.option("--environment", default=None, help="Environment name (sonde.environment)."),
    click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
                 help="Model (or training read-write) cache directory: its filesystem is reported as the cache mount."),
    click.option("--ephemeral-dir", default=None, type=click.Path(file_okay=False),
                 help="A directory on the ephemeral (container) disk [default: the working directory]."),
    click.option("--ready-url", default=None, help="Replica is ready when this URL answers 200 [default: ready at once]."),
    click.option("--server", default="http://127.0.0.1:8080", show_default=True, envvar="SONDE_SERVER",
                 help="Sonde server URL (env SONDE_SERVER)."),
    click.option("--key-file", default=None, type=click.Path(exists=True, dir_okay=False),
                 help="File holding the ingest key [default: env SONDE_API_KEY]."),
    click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=1.0),
                 help="Seconds between samples (at least 1)."),
    click.option("--scrape", "scrape_urls", multiple=True, metavar="URL",
                 help="A Prometheus /metrics page to scrape (repeatable), e.g. http://127.0.0.1:8000/metrics; "
                      "its series are sent under this agent's placement (docs/model-servers.md)."),
    click.option("--scrape-interval", default=None, type=click.FloatRange(min=1.0),
                 help="Seconds between scrapes of each target [default: --interval]."),
    click.option("--scrape-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
                 help="Seconds a scrape may take in all; a slower target counts as failed."),
    click.option("--scrape-series-limit", default=10_000, show_default=True, type=click.IntRange(min=1),
                 help="Series kept per target and scrape; the rest are dropped (counted, logged)."),
    click.option("--spool-dir", default=None, type=click.Path(file_okay=False),
                 help="Spool for batches the server cannot take yet [default: ~/.local/state/sonde-agent/TARGET, "
                      "TARGET the deployment, PROJECT-JOB, CHAIN_DEPLOYMENT-CHAINLET or loops deployment id, "
                      "plus -node-NODE]."),
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
    from ..spool import Spool, SpoolBusy

    logging.basicConfig(level=opts["log_level"].upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per POST otherwise
    placement = _placement(opts)
    key = _key(opts["key_file"])
    spool_dir = _spool_dir(opts)
    try:
        spool = Spool(spool_dir, opts["spool_max_bytes"])
    except SpoolBusy as exc:
        raise click.ClickException(f"{exc} (another sonde agent?); give this one its own --spool-dir") from exc
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
             replica, _target(placement), opts["server"], opts["interval"], spool.dir, len(spool))
    scraper = None
    if opts["scrape_urls"]:
        from .scrape import Scraper

        every = opts["scrape_interval"] or opts["interval"]
        try:
            scraper = Scraper(opts["scrape_urls"], exporter.add_metrics, interval=every, start_ns=start_ns,
                              timeout=opts["scrape_timeout"], series_limit=opts["scrape_series_limit"], clock=clock)
        except ValueError as exc:
            spool.close()
            raise click.UsageError(str(exc)) from exc
        log.info("sonde agent: scraping %s every %.0f s", ", ".join(t.name for t in scraper.targets), every)
    return Agent(exporter, samplers, interval=opts["interval"], clock=clock, restarts=restarts, start_ns=start_ns,
                 scraper=scraper)


def _on_signals(stop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


@click.group()
def agent() -> None:
    """Run next to a model server: supervise or watch it, sample, export to Sonde."""


@agent.command(context_settings={"ignore_unknown_options": True})
@agent_options
@click.option("--restart", "restart_policy", default=None,
              type=click.Choice(["on-failure", "always", "never"]),
              help="When to start the process again [default: on-failure; never for a training job].")
@click.option("--restart-backoff", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="First restart delay, seconds; doubles per crash.")
@click.option("--restart-backoff-max", default=60.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Longest restart delay, seconds.")
@click.option("--stop-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between SIGTERM and SIGKILL when stopping.")
@click.option("--echo/--no-echo", default=True, show_default=True, help="Also write the process's output to ours.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(cmd, restart_policy, restart_backoff, restart_backoff_max, stop_timeout, echo, **opts) -> None:
    """Start CMD (after --), capture its output as logs, restart it on crash, sample it.

    For a training job the process is not restarted (unless --restart says so), and when
    it ends for good the agent reports the job's end (docs/agent.md): COMPLETED on exit
    0, else FAILED with the last error line.

    \b
    Example:
      sonde agent run --model-id M --deployment-id D -- python -m my_server --port 8000
    """
    from .model import Counter
    from .supervisor import LastError, Supervisor

    training = bool(opts.get("training_job_id"))
    restart_policy = restart_policy or ("never" if training else "on-failure")
    restarts = Counter()
    holder: dict = {}
    the_agent = _build(opts, lambda: holder["sup"].pid, restarts)
    last_error = LastError()
    on_log = the_agent.emit_log
    if training:
        def on_log(record, emit=the_agent.emit_log):
            last_error.see(record)
            emit(record)
    sup = holder["sup"] = Supervisor(
        cmd, on_log=on_log, on_event=lambda msg, sev: the_agent.emit_event(msg, sev),
        state=the_agent.state, restarts=restarts, ready_url=opts["ready_url"], restart=restart_policy,
        backoff_initial=restart_backoff, backoff_max=max(restart_backoff, restart_backoff_max),
        backoff_reset=max(60.0, restart_backoff_max), stop_timeout=stop_timeout, echo=echo,
        # The process's own OpenTelemetry spans and log records (sonde.instrument.configure)
        # wait beside the agent's batches while the server is away.
        env={"SONDE_SPOOL_DIR": os.path.join(_spool_dir(opts), "sdk"), **os.environ},
    )
    _on_signals(sup.stop)
    the_agent.start()
    try:
        code = sup.run()
        if training and not sup.stopping:  # ended by itself, not stopped by a signal to the agent
            the_agent.emit_job_exit(code, last_error.line(code, sup.failure))
    finally:
        # A process that ended by itself (a training job's end) leaves no agent to
        # replay this spool later, and its last batches carry the job's final status:
        # keep trying through a slow or restarting server. A signal asks for speed.
        if sup.stopping:
            the_agent.stop()
        else:
            the_agent.stop(flush_timeout=FINAL_FLUSH_S, keep_trying=True)
    sys.exit(code)


@agent.command()
@agent_options
@click.option("--pid", type=int, default=None, help="Process whose tree to sample; the agent ends when it exits.")
@click.option("--log-file", "log_files", multiple=True, type=click.Path(dir_okay=False),
              help="Log file to follow across rotation and truncation (repeatable).")
@click.option("--from-start", is_flag=True, help="Send the lines already in the log files too.")
def watch(pid, log_files, from_start, **opts) -> None:
    """Attach to a running model server: sample --pid's process tree, tail --log-file.

    \b
    Example:
      sonde agent watch --model-id M --deployment-id D --pid 4242 --log-file /var/log/model.log
    """
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
    """Print one NVML sample and the per-sample cost (microseconds).

    \b
    Example:
      sonde agent gpu-probe
    """
    from .gpu import probe

    sys.exit(probe(samples))
