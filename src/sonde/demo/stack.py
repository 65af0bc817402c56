"""``sonde demo``'s process tree, started and stopped in order.

    sonde demo                                   (this process)
    |- sonde serve --data-dir D --port P         D/logs/server.log
    |- sonde agent run ... --replica r0001       D/logs/r0001.log (the agent, and its
    |    '- python -m sonde.demo.model_server      child's output, which it echoes)
    |- ... one agent per replica
    |- sonde agent run --training-... --node-rank 0   D/logs/node-0.log, node-1.log: one
    |    '- python -m sonde.demo.trainer --rank 0     agent per simulated training node
    |- sonde agent run --chain-... --chainlet-id predict      D/logs/predict.log,
    |    '- python -m sonde.demo.chain --role predict         preprocess.log
    |- ... and the preprocess chainlet, which calls predict
    |- sonde agent run --loops-... --node-rank 0   D/logs/loops-node-0.log, loops-node-1.log:
    |    '- python -m sonde.demo.loops --rank 0     the trainer (loops) deployment's nodes
    |- sonde agent run ... --scrape URL/metrics   D/logs/textgen.log: the text-generation
    |    '- python -m sonde.demo.textgen             deployment (a toy with vLLM's metric names)
    '- python -m sonde.demo.loadgen              stdout: a summary line every 10 s

Every child gets a process group of its own, so a Ctrl-C at the terminal reaches only
this process, which then stops the tree in an order that loses nothing: the load
generator first (no new traffic), then the agents (each stops its model server, whose
lifespan exit exports the last metrics, then takes a last sample and flushes its log
lines: both need the server), and the server last. A second Ctrl-C skips the waiting
and kills what is left. A training node's agent exits by itself when its run ends
(``--restart never``); that is no reason to stop the demo. On Linux the children also get SIGTERM if this process dies
without stopping them (``PR_SET_PDEATHSIG``), and whatever is still alive of the tree
at the end (even a model server whose agent was killed) is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil

from .loops import HIDDEN, LOOPS_DEPLOYMENT, LOOPS_NODES, N_ACTIONS
from .model import N_FEATURES

MODEL, DEPLOYMENT, ENVIRONMENT = "demo-model", "demo-v1", "production"
TRAINING_PROJECT, TRAINING_JOB = "demo-project", "demo-job-1"
CHAIN, CHAIN_DEPLOYMENT, CHAINLETS = "demo-chain", "demo-chain-v1", ("preprocess", "predict")
TRAINING_NODES = 2
TEXTGEN_MODEL, TEXTGEN_DEPLOYMENT, TEXTGEN_REPLICA = "demo-textgen", "demo-textgen-v1", "t0001"
PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover - a Linux without a loadable libc
    _libc = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; the demo process has no threads then,
    # so a preexec_fn is safe here.
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    may_exit: bool = False  # a training node: its end is the job's, not a failure
    reported: bool = False


@dataclass
class Stack:
    data_dir: str
    port: int
    replicas: int = 2
    interval: float = 5.0
    rps: float = 20.0
    min_load_seconds: float = 3.0
    training: bool = True
    training_steps: int = 600
    training_step_interval: float = 0.25
    chain: bool = True
    loops: bool = True
    textgen: bool = True
    python: str = sys.executable
    children: list[Child] = field(default_factory=list)
    creds: dict = field(default_factory=dict)
    replica_ports: dict[str, int] = field(default_factory=dict)
    chain_ports: dict[str, int] = field(default_factory=dict)
    loops_ports: dict[str, int] = field(default_factory=dict)
    textgen_port: int = 0

    def __post_init__(self) -> None:
        self.data_dir = os.path.abspath(self.data_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.creds_path = os.path.join(self.data_dir, "credentials.json")
        self.log_dir = os.path.join(self.data_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)

    # -- starting ------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], *, log: str | None, env: dict | None = None,
               stop_signal: int = signal.SIGTERM, stop_timeout: float = 10.0, may_exit: bool = False) -> Child:
        """Start one child; its output goes to ``log`` under logs/, or without one to a
        pipe that :meth:`relay` passes on (a process group in the terminal's background
        must not write to it itself: with ``stty tostop`` that stops it)."""
        out = open(os.path.join(self.log_dir, log), "ab") if log else subprocess.PIPE
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, process_group=0, preexec_fn=_die_with_parent)
        finally:
            if log:
                out.close()  # the child holds its own descriptor
        if proc.stdout is not None:
            os.set_blocking(proc.stdout.fileno(), False)
        child = Child(name, proc, stop_signal, stop_timeout, may_exit)
        self.children.append(child)
        return child

    def start_server(self, timeout: float = 60.0) -> dict:
        """``sonde serve``; returns credentials.json once the API answers with its keys."""
        server = self._spawn("server", [self.python, "-m", "sonde", "serve", "--data-dir", self.data_dir,
                                        "--port", str(self.port), "--log-level", "warning"],
                             # alerts every 5 s: the demo's rules fire while a short run lasts
                             env={**os.environ, "SONDE_ALERT_EVAL_SECONDS": os.environ.get("SONDE_ALERT_EVAL_SECONDS", "5")},
                             log="server.log", stop_signal=signal.SIGINT, stop_timeout=30.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"sonde serve exited with {server.proc.returncode}; see {self.log_dir}/server.log")
            try:
                with open(self.creds_path) as f:
                    creds = json.load(f)
                r = httpx.get(f"{self.url}/v1/models", timeout=2.0,
                              headers={"Authorization": f"Bearer {creds['management_key']}"})
                if r.status_code == 200:
                    self.creds = creds
                    return creds
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass  # not written yet, half written, or not listening yet
            time.sleep(0.2)
        raise RuntimeError(f"sonde serve did not answer within {timeout:.0f} s; see {self.log_dir}/server.log")

    def register(self) -> dict:
        """The model and its production deployment, as an operator would PUT them."""
        headers = {"Authorization": f"Bearer {self.creds['management_key']}"}
        base = f"{self.url}/v1/models/{MODEL}"
        httpx.put(base, headers=headers, json={"name": "Demo model (numpy ridge regression)"},
                  timeout=10).raise_for_status()
        # No instance_type_name: the server derives it from the hardware the agents
        # report (sonde.hw.*), and a PUT of one would override that for good.
        r = httpx.put(f"{base}/deployments/{DEPLOYMENT}", headers=headers, timeout=10,
                      json={"name": "v1", "is_production": True, "environment": ENVIRONMENT})
        r.raise_for_status()
        if self.textgen:
            tg = f"{self.url}/v1/models/{TEXTGEN_MODEL}"
            httpx.put(tg, headers=headers, json={"name": "Demo text generation (a toy with vLLM's metric names)"},
                      timeout=10).raise_for_status()
            httpx.put(f"{tg}/deployments/{TEXTGEN_DEPLOYMENT}", headers=headers, timeout=10,
                      json={"name": "v1", "is_production": True, "environment": ENVIRONMENT}).raise_for_status()
        if self.training:
            # The job back to RUNNING: a demo started again on the same data dir runs it
            # again, and only a RUNNING job takes the agent's end report.
            tp = f"{self.url}/v1/training_projects/{TRAINING_PROJECT}"
            httpx.put(tp, headers=headers, json={"name": "Demo training project"}, timeout=10).raise_for_status()
            httpx.put(f"{tp}/jobs/{TRAINING_JOB}", headers=headers, timeout=10, json={
                "name": f"numpy MLP, SGD, {TRAINING_NODES} nodes", "current_status": "RUNNING"}).raise_for_status()
        if self.chain:
            ch = f"{self.url}/v1/chains/{CHAIN}"
            httpx.put(ch, headers=headers, json={"name": "Demo chain (preprocess -> predict)"},
                      timeout=10).raise_for_status()
            httpx.put(f"{ch}/deployments/{CHAIN_DEPLOYMENT}", headers=headers, timeout=10, json={
                "environment": ENVIRONMENT,
                "chainlets": [{"id": c, "name": c.capitalize()} for c in CHAINLETS]}).raise_for_status()
        if self.loops:
            httpx.put(f"{self.url}/v1/loops/deployments/{LOOPS_DEPLOYMENT}", headers=headers, timeout=10, json={
                "base_model": f"numpy MLP policy ({2 * N_FEATURES}-{HIDDEN}-{N_ACTIONS}), REINFORCE",
                "base_url": f"http://127.0.0.1:{self._loops_ports()['node-0']}", "status": {"name": "RUNNING"},
            }).raise_for_status()
        self._alert_rules(headers)
        return r.json()

    def _alert_rules(self, headers: dict) -> None:
        """Two of docs/alerts.md's ready rules on the demo deployment (the traffic has
        sensor glitches, so the first fires within a minute); once, across restarts."""
        have = {r["name"] for r in httpx.get(f"{self.url}/v1/alert_rules", headers=headers, timeout=10).json()["rules"]}
        for name, condition in (
            ("DemoServerErrors", {"type": "metric", "metric": "baseten_inference_requests_total",
                                  "labels": {"status": "5xx"}, "window_seconds": 300, "op": ">", "threshold": 0}),
            ("DemoSlowP95", {"type": "metric", "metric": "baseten_end_to_end_response_time_seconds",
                             "labels": {"quantile": "0.95"}, "window_seconds": 300, "op": ">", "threshold": 1}),
        ):
            if name not in have:
                httpx.post(f"{self.url}/v1/alert_rules", headers=headers, timeout=10, json={
                    "name": name, "model_id": MODEL, "deployment_id": DEPLOYMENT, "condition": condition,
                    "annotations": {"summary": f"{name} at {{{{ $value }}}}"}}).raise_for_status()

    def _agent_env(self, **placement: str) -> dict:
        """Read by the agent (server, ingest key) and, passed on to its child, by the demo
        server's configure() (``SONDE_MODEL_ID``... places its request metrics)."""
        # One BLAS thread per process, like a one-CPU container: N replicas each starting
        # a thread per core would only fight over the cores.
        return {**os.environ, "SONDE_SERVER": self.url, "SONDE_API_KEY": self.creds["ingest_key"],
                "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                **{f"SONDE_{k.upper()}": v for k, v in placement.items()}}

    def _agent(self, placement: list[str], spool: str, cache: str | None = None, port: int | None = None) -> list[str]:
        """``sonde agent run`` with the demo's flags, up to its ``--``: ``placement`` (ids,
        node, replica), its ``--cache-dir``, the ``/health`` of ``port`` as its ready URL."""
        cmd = [self.python, "-m", "sonde", "agent", "run", *placement, "--environment", ENVIRONMENT]
        if cache:
            os.makedirs(cache, exist_ok=True)
            cmd += ["--cache-dir", cache]
        if port:
            cmd += ["--ready-url", f"http://127.0.0.1:{port}/health"]
        # The spool in the data dir, not ~/.local/state: a spool left by an earlier demo on
        # another data dir holds batches for a server (and key) that are gone.
        return cmd + ["--server", self.url, "--interval", f"{self.interval:g}",
                      "--spool-dir", os.path.join(self.data_dir, "spool", spool), "--"]

    def start_replicas(self) -> None:
        for i in range(1, self.replicas + 1):
            replica = f"r{i:04d}"  # five characters, as replica ids are
            port = self.replica_ports[replica] = free_port()
            cache = os.path.join(self.data_dir, "cache", f"r{i}")
            env = self._agent_env(model_id=MODEL, deployment_id=DEPLOYMENT, replica=replica, environment=ENVIRONMENT)
            cmd = self._agent(["--model-id", MODEL, "--deployment-id", DEPLOYMENT, "--replica", replica],
                              replica, cache, port) + [
                self.python, "-m", "sonde.demo.model_server", "--port", str(port), "--cache-dir", cache,
                "--export-interval", f"{self.interval:g}", "--min-load-seconds", f"{self.min_load_seconds:g}",
            ]
            # The agent's stop: SIGTERM to the model server, up to 10 s, then its last flush (5 s).
            self._spawn(f"agent {replica}", cmd, log=f"{replica}.log", env=env, stop_timeout=20.0)

    def start_training(self) -> None:
        """One agent per simulated node of the training job, each running the trainer."""
        for rank in range(TRAINING_NODES):
            node = f"node-{rank}"
            cache = os.path.join(self.data_dir, "cache", f"train-{node}")
            cmd = self._agent(["--training-project-id", TRAINING_PROJECT, "--training-job-id", TRAINING_JOB,
                               "--node-id", node, "--node-rank", str(rank)], f"train-{node}", cache) + [
                self.python, "-m", "sonde.demo.trainer", "--rank", str(rank), "--world-size", str(TRAINING_NODES),
                "--steps", str(self.training_steps), "--step-interval", f"{self.training_step_interval:g}",
                "--checkpoint-every", str(max(1, min(50, self.training_steps // 4))), "--cache-dir", cache,
            ]
            self._spawn(f"agent {node}", cmd, log=f"{node}.log", env=self._agent_env(), stop_timeout=20.0,
                        may_exit=True)

    def start_chain(self) -> None:
        """The chain's two chainlets, predict first (preprocess calls it), each under an agent."""
        for chainlet in ("predict", "preprocess"):
            self.chain_ports[chainlet] = free_port()
        for chainlet in ("predict", "preprocess"):
            port = self.chain_ports[chainlet]
            cache = os.path.join(self.data_dir, "cache", f"chain-{chainlet}")
            env = self._agent_env(replica="c0001", environment=ENVIRONMENT)
            cmd = self._agent(["--chain-id", CHAIN, "--chain-deployment-id", CHAIN_DEPLOYMENT, "--chainlet-id",
                               chainlet, "--replica", "c0001"], f"chain-{chainlet}", cache, port) + [
                self.python, "-m", "sonde.demo.chain", "--role", chainlet, "--port", str(port),
                "--chain-id", CHAIN, "--chain-deployment-id", CHAIN_DEPLOYMENT,
                "--export-interval", f"{self.interval:g}",
            ]
            cmd += (["--cache-dir", cache] if chainlet == "predict"
                    else ["--predict-url", f"http://127.0.0.1:{self.chain_ports['predict']}"])
            self._spawn(f"agent {chainlet}", cmd, log=f"{chainlet}.log", env=env, stop_timeout=20.0)

    def _loops_ports(self) -> dict[str, int]:
        """Each loops node's port, chosen once: the PUT names rank 0's URL before the nodes start."""
        if not self.loops_ports:
            self.loops_ports.update({f"node-{rank}": free_port() for rank in range(LOOPS_NODES)})
        return self.loops_ports

    def start_loops(self) -> None:
        """The trainer (loops) deployment's nodes (``loops.py``), each under an agent placed
        on the loops deployment with its node id and rank."""
        for rank, (node, port) in enumerate(self._loops_ports().items()):
            replica = f"l{rank + 1:04d}"
            cache = os.path.join(self.data_dir, "cache", f"loops-{node}")
            env = self._agent_env(replica=replica, environment=ENVIRONMENT)
            cmd = self._agent(["--loops-deployment-id", LOOPS_DEPLOYMENT, "--node-id", node, "--node-rank",
                               str(rank), "--replica", replica], f"loops-{node}", cache, port) + [
                self.python, "-m", "sonde.demo.loops", "--rank", str(rank), "--node-id", node, "--port", str(port),
                "--cache-dir", cache, "--export-interval", f"{self.interval:g}",
            ]
            self._spawn(f"agent loops {node}", cmd, log=f"loops-{node}.log", env=env, stop_timeout=20.0)

    def start_textgen(self) -> None:
        """The text-generation service under an agent that scrapes its vLLM-style /metrics
        page, as an agent would scrape a real vLLM replica's (docs/model-servers.md)."""
        port = self.textgen_port = free_port()
        env = self._agent_env(model_id=TEXTGEN_MODEL, deployment_id=TEXTGEN_DEPLOYMENT, replica=TEXTGEN_REPLICA,
                              environment=ENVIRONMENT)
        cmd = self._agent(["--model-id", TEXTGEN_MODEL, "--deployment-id", TEXTGEN_DEPLOYMENT, "--replica",
                           TEXTGEN_REPLICA, "--scrape", f"http://127.0.0.1:{port}/metrics"], "textgen", port=port) + [
            self.python, "-m", "sonde.demo.textgen", "--port", str(port), "--served-model-name", TEXTGEN_MODEL,
            "--export-interval", f"{self.interval:g}",
        ]
        self._spawn("agent textgen", cmd, log="textgen.log", env=env, stop_timeout=20.0)

    def start_loadgen(self) -> None:
        cmd = [self.python, "-m", "sonde.demo.loadgen", "--rps", f"{self.rps:g}"]
        for port in self.replica_ports.values():
            cmd += ["--target", f"http://127.0.0.1:{port}"]
        if self.chain_ports:
            cmd += ["--chain-target", f"http://127.0.0.1:{self.chain_ports['preprocess']}"]
        for port in self.loops_ports.values():
            cmd += ["--loops-target", f"http://127.0.0.1:{port}"]
        if self.textgen_port:
            cmd += ["--textgen-target", f"http://127.0.0.1:{self.textgen_port}", "--textgen-model", TEXTGEN_MODEL]
        self._spawn("loadgen", cmd, log=None, stop_signal=signal.SIGINT, stop_timeout=8.0)

    def relay(self) -> None:
        """Copy what the piped children (the load generator) wrote to our stdout."""
        for c in self.children:
            pipe = c.proc.stdout
            if pipe is None or pipe.closed:
                continue
            try:
                data = os.read(pipe.fileno(), 1 << 16)
            except BlockingIOError:
                continue
            if not data:  # end of file: the child is gone
                pipe.close()
                continue
            sys.stdout.buffer.write(data)
            sys.stdout.flush()

    def exited(self) -> list[str]:
        """Names of the children that have exited although nobody stopped them (a
        training node that ended is not one of them: see :meth:`ended`)."""
        return [c.name for c in self.children if c.proc.poll() is not None and not c.may_exit]

    def ended(self) -> list[str]:
        """Training nodes that ended since the last call, as ``node-0 ended (exit N)``."""
        out = []
        for c in self.children:
            if c.may_exit and not c.reported and c.proc.poll() is not None:
                c.reported = True
                out.append(f"{c.name.removeprefix('agent ')} ended (exit {c.proc.returncode})")
        return out

    # -- stopping ------------------------------------------------------------------------
    def stop(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """Stop loadgen, then the agents, then the server; kill leftovers of the tree."""
        tree = _descendants()  # before anything exits and its children are re-parented
        order = [[c for c in self.children if c.name == "loadgen"],
                 [c for c in self.children if c.name.startswith("agent")],
                 [c for c in self.children if c.name == "server"]]
        for group in order:
            for c in group:
                _signal(c.proc, c.stop_signal)
            for c in group:
                _wait(c, hurry)
            self.relay()  # the load generator's last summary
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(tree, timeout=5)


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _wait(child: Child, hurry: Callable[[], bool]) -> None:
    deadline = time.monotonic() + child.stop_timeout
    while child.proc.poll() is None and time.monotonic() < deadline and not hurry():
        time.sleep(0.05)
    if child.proc.poll() is None:
        print(f"sonde demo: {child.name} did not stop in time; killing it", file=sys.stderr, flush=True)
        child.proc.kill()
        child.proc.wait()
