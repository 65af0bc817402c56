"""Outage: a real ``sonde agent run`` keeps supervising a child that prints steadily while
its ``sonde serve`` is down (stopped, then started again on the same data after the
outage); the agent spools and replays (docs/agent.md, Export and the spool).

Checked afterwards: every line the child printed is stored once, in the order printed
(arrival order included: the replay keeps it); every sample the agent took is stored
once; and no answer during the drain was a 5xx (the agent logs every failed attempt at
debug level, with the status when there was one; the server logs a 5xx as an error).
The server stops cleanly here, so no batch is committed without an answer and nothing
may be stored twice (a kill -9 mid-commit is tests/test_agent_e2e.py's and
tests/test_faults_crash.py's case).

Spans are not in it: the agent carries logs and metrics; spans come from OTel SDK
exporters, which retry in memory, not through a spool (docs/reliability.md, Faults).
"""

from __future__ import annotations

import re
import sys
import textwrap
import time

import pytest
import test_agent_e2e as agent_e2e
from live_server import LiveServer
from test_ingest_e2e import read_store

pytestmark = pytest.mark.e2e

# Prints numbered lines every `delay` seconds until the file "<state>.stop" appears;
# the state file holds how many it printed.
CHILD = textwrap.dedent('''
    import os, sys, time
    state, delay = sys.argv[1], float(sys.argv[2])
    i = 0
    while not os.path.exists(state + ".stop"):
        print(f"INFO:model:seq={i:06d}", flush=True)
        i += 1
        with open(state + ".tmp", "w") as f:
            f.write(str(i))
        os.replace(state + ".tmp", state)
        time.sleep(delay)
''')


class SteadyAgent(agent_e2e.AgentProc):
    """The end-to-end agent (same flags), supervising a child that prints until told to stop."""

    def __init__(self, tmp, server: LiveServer, deployment: str):
        super().__init__(tmp, server, deployment, "agent")
        (tmp / "steady.py").write_text(CHILD)
        self.cmd = [*self.cmd[:self.cmd.index("--")], "--log-level", "debug",
                    "--", sys.executable, str(tmp / "steady.py"), str(tmp / "child.state"), "0.02"]

    def stop_child(self) -> None:
        (self.tmp / "child.state.stop").write_text("")


def outage(tmp_path, seconds: float) -> dict:
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    try:
        agent = SteadyAgent(tmp_path, server, "d-outage").start()
        agent_e2e.wait_until(lambda: agent.printed() >= 50, 30, "the child to print")
        assert server.stop() == 0
        down_at, stopped = agent.printed(), time.monotonic()
        time.sleep(seconds)  # the child goes on printing, the agent spools
        assert agent.proc.poll() is None and agent_e2e.spooled_batches(tmp_path) > 0
        server.start()  # the outage lasts until it answers again
        ready = time.monotonic()
        during, backlog = agent.printed() - down_at, agent_e2e.spooled_batches(tmp_path)
        agent_e2e.wait_until(lambda: agent_e2e.spooled_batches(tmp_path) == 0, 120, "the spool to drain")
        drained_s = time.monotonic() - ready
        agent.stop_child()
        assert agent.wait(60) == 0
    finally:
        assert server.stop() == 0
    printed = agent.printed()
    lines, samples = read_store(
        server.data_dir,
        "SELECT message FROM sonde.logs WHERE entity = 'd-outage' AND position(message, 'seq=') > 0 ORDER BY seq",
        "SELECT count() AS n, uniqExact(ts) AS u FROM sonde.metric_points"
        " WHERE metric = 'process.memory.usage' AND entity = 'd-outage'",
    )
    seqs = [int(re.search(r"seq=(\d+)", r["message"]).group(1)) for r in lines]
    assert seqs == list(range(printed)), f"missing, twice or out of order: {sorted(set(range(printed)) ^ set(seqs))[:20]}"
    assert samples == [{"n": agent.samples(), "u": agent.samples()}], (samples, agent.samples())
    err = agent.err_path.read_text()
    assert "server unavailable" in err, "the agent never saw the outage"
    fives = re.findall(r"server unavailable \((5\d\d):", err)
    assert not fives, f"5xx answers: {fives}"
    server_log = (tmp_path / "data" / f"server-{server.port}.log").read_text()
    assert "ERROR" not in server_log and "Traceback" not in server_log, server_log[-3000:]
    return {"outage_s": round(ready - stopped, 1), "lines": printed, "lines_during_outage": during, "samples": agent.samples(),
            "backlog_batches": backlog, "drained_after_ready_s": round(drained_s, 1)}


def test_outage_agent_spools_and_every_line_and_sample_arrives_once(tmp_path):
    print(outage(tmp_path, 7))  # and the server's start: down ~10-12 s


@pytest.mark.drill
def test_outage_of_a_minute(tmp_path):
    print(outage(tmp_path, 60))  # and the server's start
