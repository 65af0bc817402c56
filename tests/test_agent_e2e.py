"""End to end: ``sonde agent run`` (a real subprocess) supervising a real child, sending to a
real ``sonde serve``. The server is killed mid-stream and restarted on the same data;
the agent itself is restarted while the server is down. Every line must arrive exactly
once (checked through the logs API) and every sample exactly once (checked in the
store with chDB in a separate process once the server is stopped: one chDB path per
process, and the server owns it while it runs)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from live_server import LiveServer

pytestmark = pytest.mark.e2e

N_LINES = 300
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]

GATE_AT = 200

# Prints numbered lines at four levels; resumes after the last line it printed (the
# state file is written after each print), and stops cleanly on SIGTERM, so a
# restarted agent continues the sequence rather than repeating it. Before line
# GATE_AT it waits for the file "<state>.go": the test opens the gate once the server
# is back, so the outage is always mid-stream however slow the machine is.
CHILD = textwrap.dedent('''
    import os, signal, sys, time
    state, n, delay, gate_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    start = int(open(state).read()) if os.path.exists(state) else 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    for i in range(start, n):
        while i == gate_at and not stop and not os.path.exists(state + ".go"):
            time.sleep(0.01)
        if stop:
            break
        print(f"{levels[i % 4]}:model:seq={i:05d} request_id=r{i}", flush=True)
        with open(state + ".tmp", "w") as f:
            f.write(str(i + 1))
        os.replace(state + ".tmp", state)
        time.sleep(delay)
''')


class AgentProc:
    def __init__(self, tmp, server: LiveServer, deployment: str, name: str):
        self.tmp, self.server, self.deployment = tmp, server, deployment
        self.err_path = tmp / f"{name}.stderr"
        (tmp / "child.py").write_text(CHILD)
        key_file = tmp / "ingest.key"
        key_file.write_text(server.creds["ingest_key"])
        self.cmd = [
            sys.executable, "-m", "sonde", "agent", "run", "--server", server.url, "--key-file", str(key_file),
            "--model-id", "m-e2e", "--deployment-id", deployment, "--environment", "production",
            "--interval", "1", "--spool-dir", str(tmp / "spool"), "--no-echo", "--log-level", "info",
            "--", sys.executable, str(tmp / "child.py"), str(tmp / "child.state"), str(N_LINES), "0.01", str(GATE_AT),
        ]

    def start(self) -> "AgentProc":
        self.err = open(self.err_path, "wb")
        env = {k: v for k, v in os.environ.items() if k != "SONDE_API_KEY"}
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.err, env=env)
        return self

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.err.close()

    def samples(self) -> int:
        m = re.search(r"stopped after (\d+) samples", self.err_path.read_text())
        assert m, self.err_path.read_text()[-3000:]
        return int(m.group(1))

    def open_gate(self) -> None:
        (self.tmp / "child.state.go").write_text("")

    def printed(self) -> int:
        p = self.tmp / "child.state"
        return int(p.read_text()) if p.exists() else 0


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fetch_lines(server: LiveServer, deployment: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/models/m-e2e/deployments/{deployment}/logs",
                  params={"limit": 1000, "direction": "asc"}, headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    return [line for line in r.json()["logs"] if "seq=" in line["message"]]


def assert_every_line_once(lines: list[dict], *, one_batch_twice: bool = False) -> None:
    """Every line, in order; ``one_batch_twice``: the server was killed, and the one batch
    it had committed but not answered may be stored twice (docs/agent.md, spool guarantees)."""
    seqs = [int(re.search(r"seq=(\d+)", line["message"]).group(1)) for line in lines]
    missing = sorted(set(range(N_LINES)) - set(seqs))
    dupes = sorted({s for s in seqs if seqs.count(s) > 1})
    assert not missing, f"missing {missing[:20]}..."
    if one_batch_twice and dupes:  # one run of consecutive lines, each exactly twice
        assert dupes == list(range(dupes[0], dupes[-1] + 1)) and all(seqs.count(s) == 2 for s in dupes), dupes
        lines = [line for i, line in enumerate(lines) if seqs[i] not in seqs[:i]]
        seqs = [int(re.search(r"seq=(\d+)", line["message"]).group(1)) for line in lines]
        dupes = []
    assert not dupes, f"duplicated {dupes[:20]}..."
    assert len(seqs) == N_LINES
    assert seqs == sorted(seqs)  # stamped when read, one stream: the server's order is the child's
    for line, seq in zip(lines, seqs):
        assert line["level"] == LEVELS[seq % 4] and line["request_id"] == f"r{seq}"


def stored_samples(data_dir, deployment: str) -> tuple[int, int]:
    """(rows, distinct timestamps) of one gauge the agent sends once per sample."""
    code = textwrap.dedent('''
        import json, sys
        from chdb import session
        s = session.Session(sys.argv[1])
        r = s.query("SELECT count() AS n, uniqExact(ts) AS u FROM sonde.metric_points "
                    "WHERE metric = 'process.memory.usage' AND entity = '" + sys.argv[2] + "'", "JSONEachRow")
        print(str(r).strip())
        s.close()
    ''')
    out = subprocess.run([sys.executable, "-c", code, os.path.join(data_dir, "store"), deployment],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return int(row["n"]), int(row["u"])


def spooled_batches(tmp) -> int:
    return sum(n.endswith(".otlp.gz") for n in os.listdir(tmp / "spool"))


def test_server_killed_mid_stream_every_line_and_sample_exactly_once(tmp_path):
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    try:
        agent = AgentProc(tmp_path, server, "d-kill", "agent").start()
        wait_until(lambda: agent.printed() >= 60, 30, "the child to print")
        server.kill9()  # mid-stream: the child keeps printing, the agent must spool
        wait_until(lambda: agent.printed() == GATE_AT, 30, "lines printed during the outage")
        assert agent.proc.poll() is None and spooled_batches(tmp_path) > 0
        server.start()
        agent.open_gate()
        assert agent.wait(60) == 0
        assert agent.printed() == N_LINES
        assert spooled_batches(tmp_path) == 0
        assert_every_line_once(fetch_lines(server, "d-kill"), one_batch_twice=True)
    finally:
        server.stop()
    rows, distinct = stored_samples(server.data_dir, "d-kill")
    # every sample stored; a second copy only of what the one unanswered batch held (the
    # agent samples every second and sends at least as often: a batch holds one or two)
    assert distinct == agent.samples() and rows - distinct <= 2, (rows, distinct, agent.samples())


def test_agent_restarted_while_server_is_down_spool_survives(tmp_path):
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    try:
        first = AgentProc(tmp_path, server, "d-restart", "agent1").start()
        wait_until(lambda: first.printed() >= 40, 30, "the child to print")
        server.kill9()
        time.sleep(0.5)
        first.proc.send_signal(signal.SIGTERM)  # stops the child cleanly, flushes to the spool
        assert first.wait(30) == 0
        in_spool = spooled_batches(tmp_path)
        resumed_at = first.printed()
        assert in_spool > 0 and 0 < resumed_at < N_LINES

        second = AgentProc(tmp_path, server, "d-restart", "agent2").start()
        wait_until(lambda: second.printed() == GATE_AT, 30, "the resumed child to print")
        server.start()
        second.open_gate()
        assert second.wait(60) == 0
        assert second.printed() == N_LINES
        assert spooled_batches(tmp_path) == 0
        assert "%d batches waiting" % in_spool in second.err_path.read_text()
        # one replica across the restart: the id was remembered in the spool dir
        replicas = {line["replica"] for line in fetch_lines(server, "d-restart")}
        assert len(replicas) == 1 and len(replicas.pop()) == 5
        assert_every_line_once(fetch_lines(server, "d-restart"), one_batch_twice=True)
    finally:
        server.stop()
    rows, distinct = stored_samples(server.data_dir, "d-restart")
    # the kill -9 may land between a commit and its answer: that one batch is sent again
    # (at least once, docs/agent.md), so it alone may be stored twice
    samples = first.samples() + second.samples()
    assert distinct == samples and rows - distinct <= 2, (rows, distinct, samples)


WRITER = textwrap.dedent('''
    import logging, logging.handlers, os, sys, time
    path, go = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.01)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=3000, backupCount=20)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("model")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    for i in range(120):
        log.log([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR][i % 4], "seq=%05d request_id=r%d", i, i)
        time.sleep(0.02)  # a file lives ~0.9 s, several of the tailer's 0.25 s polls
''')


def test_watch_a_running_process_and_its_rotating_log_file(tmp_path):
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    writer_py, log_file, go = tmp_path / "writer.py", tmp_path / "model.log", tmp_path / "go"
    writer_py.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(writer_py), str(log_file), str(go)])
    (tmp_path / "ingest.key").write_text(server.creds["ingest_key"])
    err = open(tmp_path / "watch.stderr", "wb")
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "sonde", "agent", "watch", "--server", server.url,
             "--key-file", str(tmp_path / "ingest.key"), "--model-id", "m-e2e", "--deployment-id", "d-watch",
             "--interval", "1", "--spool-dir", str(tmp_path / "spool"), "--pid", str(writer.pid),
             "--log-file", str(log_file)], stderr=err)
        wait_until(lambda: b"sending to" in (tmp_path / "watch.stderr").read_bytes(), 30, "the agent to start")
        time.sleep(0.5)  # its tailer is polling the (not yet existing) file
        go.write_text("")
        assert writer.wait(30) == 0
        assert agent.wait(30) == 0  # the watched process exited: so does the agent
        lines = fetch_lines(server, "d-watch")
        seqs = [int(re.search(r"seq=(\d+)", line["message"]).group(1)) for line in lines]
        assert (tmp_path / "model.log.2").exists()  # the file did rotate, more than once
        assert seqs == list(range(120))  # across the rotations, every line once, in order
        assert [line["level"] for line in lines] == [LEVELS[i % 4] for i in range(120)]
        assert lines[5]["request_id"] == "r5"
    finally:
        err.close()
        server.stop()
