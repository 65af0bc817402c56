"""``sonde demo``: the README's first command.

Brings up, as child processes (``sonde.demo.stack``): ``sonde serve`` on the embedded
store, N replicas of a real FastAPI model server (``sonde.demo.model_server``), each
under ``sonde agent run``, a two-node numpy training run (``sonde.demo.trainer``) and
a two-chainlet chain (``sonde.demo.chain``), a two-node trainer (loops) deployment
(``sonde.demo.loops``) and a text-generation service with vLLM's metric names
(``sonde.demo.textgen``, not vLLM; its agent scrapes its ``/metrics``), each process
under ``sonde agent run`` too, and a load generator. Registers the models, deployments,
training job, chain deployment and loops deployment, then prints where everything is
and the ``curl`` commands that return the demo's data. Ctrl-C (or ``--duration``) stops
the whole tree in order. docs/demo.md.
"""

from __future__ import annotations

import shlex
import signal
import socket
import sys
import time
import urllib.parse

import click


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As uvicorn binds: connections of a previous run in TIME_WAIT do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class _Signals:
    """SIGINT, SIGTERM and SIGHUP: the first one stops the demo (KeyboardInterrupt out of
    whatever it is doing); any later one only asks the stop to hurry, so it can never
    interrupt the stop itself and leave children behind."""

    def __init__(self) -> None:
        self.stopping = False
        self.hurry = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # Explicitly, also for SIGINT: a shell without job control starts
            # `sonde demo &` with SIGINT ignored, and Python keeps it ignored.
            signal.signal(sig, self._on_signal)

    def _on_signal(self, *_) -> None:
        if self.stopping:
            self.hurry = True
            return
        self.stopping = True
        raise KeyboardInterrupt


def instructions(stack, deployment: dict) -> str:
    from ..demo.loops import LOOPS_DEPLOYMENT, LOOPS_NODES
    from ..demo.stack import (CHAIN, CHAIN_DEPLOYMENT, DEPLOYMENT, MODEL, TEXTGEN_DEPLOYMENT, TEXTGEN_MODEL,
                              TEXTGEN_REPLICA, TRAINING_JOB, TRAINING_NODES, TRAINING_PROJECT)

    url, q = stack.url, shlex.quote
    # The key rides in the fragment, which the browser never sends: it stays out of the
    # server's access log; the page moves it to localStorage and drops it from the URL.
    dashboard = f"{url}/ui/#key={urllib.parse.quote(stack.creds.get('management_key', ''), safe='')}"
    base = f"{url}/v1/models/{MODEL}/deployments/{DEPLOYMENT}"
    # The interpreter running the demo certainly exists and reads JSON; a bare `python3`
    # or `jq` might not be on the user's PATH.
    key = (f"KEY=$({q(sys.executable)} -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"management_key\"])' "
           f"{q(stack.creds_path)})")
    auth = '-H "Authorization: Bearer $KEY"'
    # the interpreter running the demo has sonde installed, whatever is on PATH
    sonde = f"{q(sys.executable)} -m sonde"
    replicas = " ".join(stack.replica_ports)
    more, curls = "", ""
    textgen = stack.textgen
    if stack.training:
        seconds = stack.training_steps * stack.training_step_interval
        more += (f"\n  Training      {TRAINING_PROJECT} / {TRAINING_JOB}: numpy MLP, {stack.training_steps} SGD steps "
                 f"(~{seconds:.0f} s) on {TRAINING_NODES} nodes (node-0 .. node-{TRAINING_NODES - 1}),\n"
                 f"                each under `sonde agent run --node-rank R`; checkpoints in {stack.data_dir}/cache/")
        curls += (f"\n  curl -s -X POST {auth} -H 'Content-Type: application/json' -d '{{}}' "
                  f"\"{url}/v1/training_projects/{TRAINING_PROJECT}/jobs/{TRAINING_JOB}/metrics\"")
    if stack.chain:
        more += (f"\n  Chain         {CHAIN} / {CHAIN_DEPLOYMENT}: chainlets preprocess -> predict, each under "
                 f"`sonde agent run`;\n                a tenth of the traffic enters at preprocess")
        curls += f"\n  curl -s {auth} \"{url}/v1/chains/{CHAIN}/deployments\""
    if stack.loops:
        more += (f"\n  Trainer       {LOOPS_DEPLOYMENT} (loops): numpy policy, REINFORCE, on {LOOPS_NODES} nodes "
                 f"(node-0 .. node-{LOOPS_NODES - 1}),\n                each under `sonde agent run --node-rank R`; "
                 f"a tenth of the traffic samples from it")
        curls += (f"\n  curl -s -X POST {auth} -H 'Content-Type: application/json' -d '{{}}' "
                  f"\"{url}/v1/loops/deployments/{LOOPS_DEPLOYMENT}/metrics\"")
    if textgen:
        more += (f"\n  Text gen      {TEXTGEN_MODEL} / {TEXTGEN_DEPLOYMENT} ({TEXTGEN_REPLICA}): toy tokens with vLLM's "
                 f"metric names, not vLLM,\n                under `sonde agent run --scrape "
                 f"http://127.0.0.1:{stack.textgen_port}/metrics`; ~1.5 completions/s, half streamed")
        curls += (f"\n  curl -s {auth} \"{url}/v1/models/{TEXTGEN_MODEL}/deployments/{TEXTGEN_DEPLOYMENT}/metrics?"
                  "metrics=sonde_llm_time_to_first_token_seconds,baseten_llm_output_tokens_total,"
                  "sonde_llm_kv_cache_usage_ratio,baseten_llm_num_requests\"")
    what = []
    if stack.training:
        what.append("the training job's status and CPU, memory and disk per node")
    if stack.chain:
        what.append("the chain's deployment with its chainlets' active replicas")
    if stack.loops:
        what.append("the trainer deployment's requests by status, latency, and CPU and memory per node")
    if textgen:
        what.append("the text-generation deployment's time to first token, output tokens, KV-cache use and "
                    "requests running, scraped from its vLLM-style /metrics page")
    what = "\nThen " + ";\n".join(what) + "." if what else ""
    return f"""
Sonde demo is up.

  API           {url}   (interactive docs: {url}/docs)
  Dashboard     {dashboard}
  Keys          {stack.creds_path}   (admin, management and ingest keys; mode 0600)
  Deployment    {MODEL} / {DEPLOYMENT} ({deployment.get('environment')}); instance type from the agents' hardware report
  Replicas      {replicas}: a numpy model server each, under `sonde agent run` (state: starting, then ready)
  Traffic       {stack.rps:g} req/s Poisson, x3 bursts for 5 s every 30 s; slow batches, bad inputs (4xx),
                sensor glitches (5xx)
  Process logs  {stack.log_dir}/   (server.log, {next(iter(stack.replica_ports), 'r0001')}.log, ...){more}

In another shell, these return the demo's data within a minute (the first line reads the
management key): requests by status, latency and replicas over the last hour; CPU and
memory per replica (and GPUs, if any) over the last minute; the latest warnings and errors.{what}

  {key}
  curl -s {auth} "{base}/metrics?mode=SUMMARY&metrics=baseten_inference_requests_total,baseten_end_to_end_response_time_seconds,baseten_replicas_active"
  curl -s {auth} "{base}/metrics?metrics=baseten_container_cpu_usage_seconds_total,baseten_container_cpu_memory_working_set_bytes,baseten_gpu_utilization,baseten_gpu_memory_used"
  curl -s {auth} "{base}/logs?min_level=WARNING&limit=10"{curls}

The slowest requests of the last hour, from the model servers' traces (each with its
log-line count; add /REQUEST_ID for its spans and log lines, or open the dashboard's
latency chart and click a step):

  curl -s {auth} "{base}/requests?order=slowest&limit=5"

Alerts (two rules on the demo deployment, evaluated every alert_eval_seconds; docs/alerts.md),
and the whole workspace as a Prometheus would scrape it (docs/export.md):

  curl -s {auth} "{url}/v1/alerts"
  curl -s {auth} "{url}/metrics"

Live, in this terminal (Ctrl-C stops; docs/logs.md#following-logs): the last ten minutes of
the deployment's logs and then every new line, a metrics table with a sparkline per series,
and the raw live stream (Server-Sent Events) the CLI and the dashboard read:

  {sonde} logs {MODEL} {DEPLOYMENT} -f --since 10m --server {url} --key "$KEY"
  {sonde} metrics {MODEL} {DEPLOYMENT} --since 15m --server {url} --key "$KEY"
  curl -sN {auth} "{base}/logs/stream?min_level=WARNING"

Ctrl-C stops everything.
"""


@click.command()
@click.option("--data-dir", default="./sonde-data", show_default=True,
              help="Store, keys, process logs, model cache and agent spools.")
@click.option("--port", default=8080, show_default=True, type=int, help="The Sonde server's port.")
@click.option("--duration", default=0.0, type=click.FloatRange(min=0.0),
              help="Seconds to run once up; 0 runs until Ctrl-C.")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Model server replicas, each under `sonde agent run`.")
@click.option("--rps", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Mean requests per second outside bursts.")
# Sampling and export interval; tests shorten it to see data sooner.
@click.option("--interval", default=5.0, hidden=True, type=click.FloatRange(min=1.0))
@click.option("--training/--no-training", default=True, show_default=True,
              help="Run the two-node numpy training job, each node under `sonde agent run`.")
@click.option("--training-steps", default=0, type=click.IntRange(min=0),
              help="SGD steps per node; 0: as many as fit in the run, up to 3 minutes.")
@click.option("--training-step-interval", default=0.25, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds per training step (compute, then a sleep).")
@click.option("--chain/--no-chain", default=True, show_default=True,
              help="Run the two-chainlet chain (preprocess -> predict), each under `sonde agent run`.")
@click.option("--loops/--no-loops", default=True, show_default=True,
              help="Run the two-node trainer (loops) deployment, each node under `sonde agent run`.")
def demo(data_dir: str, port: int, duration: float, replicas: int, rps: float, interval: float,
         training: bool, training_steps: int, training_step_interval: float, chain: bool, loops: bool) -> None:
    """Server; model replicas, a training job, a chain and a trainer under agents; load: all real.

    \b
    Example:
      sonde demo --port 8081 --data-dir /tmp/sonde --duration 300
    """
    from ..demo.stack import Stack

    if not _port_free(port):
        raise click.ClickException(f"port {port} is in use; pick another with --port")
    if not training_steps:
        # About the demo's length or 3 minutes, whichever is shorter; with --duration, it
        # ends ~10 s early, so the job's COMPLETED is in before the demo stops.
        seconds = min(180.0, max(5.0, duration - 10.0)) if duration > 0 else 180.0
        training_steps = max(1, int(seconds / training_step_interval)) if training_step_interval > 0 else 600
    signals = _Signals()
    stack = Stack(data_dir, port, replicas=replicas, interval=interval, rps=rps, training=training,
                  training_steps=training_steps, training_step_interval=training_step_interval, chain=chain,
                  loops=loops)
    failed = None
    try:
        click.echo(f"sonde demo: starting the server on {stack.url} (data in {stack.data_dir})", err=True)
        stack.start_server()
        deployment = stack.register()
        stack.start_replicas()
        if chain:
            stack.start_chain()
        if training:
            stack.start_training()
        if loops:
            stack.start_loops()
        stack.start_textgen()
        stack.start_loadgen()
        click.echo(instructions(stack, deployment))
        deadline = time.monotonic() + duration if duration > 0 else None
        while deadline is None or time.monotonic() < deadline:
            failed = stack.exited()
            if failed:
                break
            for ended in stack.ended():
                click.echo(f"sonde demo: training {ended}; the job's status is in the 4th command's answer",
                           err=True)
            stack.relay()
            time.sleep(0.2)
        signals.stopping = True
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a child that would not start: say why, then clean up
        failed = [str(exc)]
    finally:
        signals.stopping = True  # from here on a signal only hurries the stop
        click.echo("sonde demo: stopping (load generator, agents and their processes, then the server)", err=True)
        stack.stop(hurry=lambda: signals.hurry)
        click.echo("sonde demo: stopped", err=True)
    if failed:
        raise click.ClickException(f"stopped because this ended early: {', '.join(failed)}; "
                                   f"see {stack.log_dir}/")
