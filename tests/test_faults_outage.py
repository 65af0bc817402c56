"""Outage: a real ``sonde agent run`` keeps supervising a child that prints steadily while
its ``sonde serve`` is down (stopped, then started again on the same data after the
outage); the agent spools and replays (docs/agent.md, Export and the spool).

The child also records a span around each line with the OpenTelemetry SDK, set up by
``sonde.instrument.configure``: the agent hands it ``SONDE_SPOOL_DIR`` (a directory
beside its own spool), so its span batches wait on disk too (sonde.instrument.durable).

Checked afterwards: every line the child printed is stored once, in the order printed
(arrival order included: the replay keeps it), and so is every span; every sample the
agent took is stored once; and no answer during the drain was a 5xx (the agent logs every failed attempt at
debug level, with the status when there was one; the server logs a 5xx as an error).
The server stops cleanly here, so no batch is committed without an answer and nothing
may be stored twice (a kill -9 mid-commit is tests/test_agent_e2e.py's and
tests/test_faults_crash.py's case).
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

# Prints numbered lines every `delay` seconds, each inside a span of the same number,
# until the file "<state>.stop" appears; the state file holds how many it printed.
CHILD = textwrap.dedent('''
    import os, sys, time
    from sonde.instrument import configure
    state, delay, server, key_file = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    telemetry = configure(server=server, api_key=open(key_file).read(), model_id="m-e2e",
                          deployment_id="d-outage", replica="c0001", logs=False, set_global=False)
    tracer = telemetry.tracer_provider.get_tracer("steady")
    i = 0
    while not os.path.exists(state + ".stop"):
        with tracer.start_as_current_span(f"seq {i:06d}"):
            print(f"INFO:model:seq={i:06d}", flush=True)
        i += 1
        with open(state + ".tmp", "w") as f:
            f.write(str(i))
        os.replace(state + ".tmp", state)
        time.sleep(delay)
    telemetry.shutdown()  # the last batch, and what the spool holds while the server answers
''')


class SteadyAgent(agent_e2e.AgentProc):
    """The end-to-end agent (same flags), supervising a child that prints until told to stop."""

    def __init__(self, tmp, server: LiveServer, deployment: str):
        super().__init__(tmp, server, deployment, "agent")
        (tmp / "steady.py").write_text(CHILD)
        self.cmd = [*self.cmd[:self.cmd.index("--")], "--log-level", "debug",
                    "--", sys.executable, str(tmp / "steady.py"), str(tmp / "child.state"), "0.02", server.url,
                    str(tmp / "ingest.key")]

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
    lines, samples, spans, told = read_store(
        server.data_dir,
        "SELECT message FROM sonde.logs WHERE entity = 'd-outage' AND position(message, 'seq=') > 0 ORDER BY seq",
        "SELECT count() AS n, uniqExact(ts) AS u FROM sonde.metric_points"
        " WHERE metric = 'process.memory.usage' AND entity = 'd-outage'",
        "SELECT name FROM sonde.spans WHERE entity = 'd-outage' ORDER BY seq",
        # the child's exporter says so on its stderr, which the agent ships as log lines
        "SELECT message FROM sonde.logs WHERE entity = 'd-outage' AND position(message, 'spooling to') > 0",
    )
    seqs = [int(re.search(r"seq=(\d+)", r["message"]).group(1)) for r in lines]
    assert seqs == list(range(printed)), f"missing, twice or out of order: {sorted(set(range(printed)) ^ set(seqs))[:20]}"
    span_seqs = [int(r["name"].split()[1]) for r in spans]
    assert span_seqs == list(range(printed)), \
        f"spans missing, twice or out of order: {sorted(set(range(printed)) ^ set(span_seqs))[:20]} of {len(span_seqs)}"
    assert told, "the child's span exporter never saw the outage"
    assert samples == [{"n": agent.samples(), "u": agent.samples()}], (samples, agent.samples())
    err = agent.err_path.read_text()
    assert "server unavailable" in err, "the agent never saw the outage"
    fives = re.findall(r"server unavailable \((5\d\d):", err + "".join(r["message"] for r in told))
    assert not fives, f"5xx answers: {fives}"
    server_log = (tmp_path / "data" / f"server-{server.port}.log").read_text()
    assert "ERROR" not in server_log and "Traceback" not in server_log, server_log[-3000:]
    return {"outage_s": round(ready - stopped, 1), "lines": printed, "spans": len(span_seqs),
            "lines_during_outage": during, "samples": agent.samples(),
            "backlog_batches": backlog, "drained_after_ready_s": round(drained_s, 1)}


def test_outage_agent_spools_and_every_line_and_sample_arrives_once(tmp_path):
    print(outage(tmp_path, 7))  # and the server's start: down ~10-12 s


@pytest.mark.drill
def test_outage_of_a_minute(tmp_path):
    print(outage(tmp_path, 60))  # and the server's start
