"""The agent running a training process: placement, hardware, and the job's end status.

End to end: a real ``sonde serve``, a real ``sonde agent run --training-project-id ...``
supervising a real child that exits 0 or fails; the job is then read through
``GET .../jobs/{j}`` and validated against the spec. The ingest rule itself (which
node may end a job, a PUT's status wins) is checked in process through the OTLP receiver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from live_server import LiveServer
from otlp_build import encode, log_record, logs_request
from spec_schema import validate

CHILD_OK = textwrap.dedent('''
    import sys, time
    for step in range(3):
        print(f"INFO step={step} loss={1.0 / (step + 1):.3f}", flush=True)
        time.sleep(0.2)
    print("warning: nothing wrong", file=sys.stderr, flush=True)
''')
CHILD_FAIL = textwrap.dedent('''
    import time
    print("INFO step=0", flush=True)
    time.sleep(0.3)
    raise ValueError("loss is nan at step 1")
''')


def run_agent(tmp, server: LiveServer, job: str, child: str, *extra: str) -> int:
    (tmp / f"{job}.py").write_text(child)
    (tmp / "ingest.key").write_text(server.creds["ingest_key"])
    cmd = [sys.executable, "-m", "sonde", "agent", "run", "--server", server.url,
           "--key-file", str(tmp / "ingest.key"), "--training-project-id", "p-e2e", "--training-job-id", job,
           "--node-id", "node-a", "--node-rank", "0", "--cache-dir", str(tmp), "--interval", "1",
           "--spool-dir", str(tmp / f"spool-{job}"), "--no-echo", *extra, "--", sys.executable, str(tmp / f"{job}.py")]
    env = {k: v for k, v in os.environ.items() if k != "SONDE_API_KEY"}
    with open(tmp / f"{job}.stderr", "wb") as err:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=120).returncode


def get_job(server: LiveServer, job: str) -> dict:
    r = httpx.get(f"{server.url}/v1/training_projects/p-e2e/jobs/{job}", headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    validate(r.json(), "GetTrainingJobResponseV1")
    return r.json()["training_job"]


@pytest.mark.e2e
def test_agent_runs_training_jobs_to_completed_and_failed(tmp_path):
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    try:
        assert run_agent(tmp_path, server, "j-ok", CHILD_OK) == 0
        ok = get_job(server, "j-ok")
        assert ok["current_status"] == "COMPLETED" and ok["error_message"] is None
        # the instance type the agent saw on this machine
        it = ok["instance_type"]
        assert it["id"] != "unknown" and it["millicpu_limit"] > 0 and it["memory_limit_mib"] > 0
        assert it["name"] == it["id"] and (it["gpu_count"] > 0) == (it["gpu_type"] is not None)

        assert run_agent(tmp_path, server, "j-fail", CHILD_FAIL) == 1  # not restarted: its status is ours
        failed = get_job(server, "j-fail")
        assert failed["current_status"] == "FAILED"
        assert failed["error_message"] == "ValueError: loss is nan at step 1"

        # a PUT's terminal status outranks the agent's report
        r = httpx.put(f"{server.url}/v1/training_projects/p-e2e/jobs/j-stopped", headers=server.headers(),
                      json={"current_status": "STOPPED"}, timeout=30)
        assert r.status_code == 200
        assert run_agent(tmp_path, server, "j-stopped", CHILD_FAIL) == 1
        assert get_job(server, "j-stopped")["current_status"] == "STOPPED"

        # the node's telemetry and the exit line are the job's logs, on node rank 0
        r = httpx.get(f"{server.url}/v1/training_projects/p-e2e/jobs/j-fail/logs", headers=server.headers(),
                      params={"limit": 100, "direction": "asc"}, timeout=30)
        assert r.status_code == 200, r.text
        messages = [line["message"] for line in r.json()["logs"]]
        assert "INFO step=0" in messages and messages[-1].startswith("training process exited with code 1")
        r = httpx.get(f"{server.url}/v1/training_projects/p-e2e/jobs/j-ok/metrics", headers=server.headers(),
                      params={"start_epoch_millis": int(time.time() * 1000) - 600_000}, timeout=30)
        assert r.status_code == 200, r.text
        nodes = r.json()["per_node_metrics"]
        assert [n["node_id"] for n in nodes] == ["node-a"] and r.json()["cache"] is not None
    finally:
        server.stop()


def exit_record(status: str, error: str = ""):
    attrs = {"component": "sonde.agent", "sonde.job.status": status,
             "sonde.job.exit_code": "0" if status == "COMPLETED" else "1"}
    if error:
        attrs["sonde.job.error"] = error
    return log_record(time.time_ns(), "training process exited", attrs=attrs)


def send_exit(client, creds, job: str, rank: int | None, status: str, error: str = "") -> None:
    res = {"sonde.training_project_id": "p1", "sonde.training_job_id": job}
    if rank is not None:
        res["sonde.node_rank"] = rank
    body, headers = encode(logs_request(res, [exit_record(status, error)]))
    r = client.post("/v1/otlp/v1/logs", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def status(client, job: str) -> tuple[str, str | None]:
    r = client.get(f"/v1/training_projects/p1/jobs/{job}")
    assert r.status_code == 200, r.text
    validate(r.json(), "GetTrainingJobResponseV1")
    j = r.json()["training_job"]
    return j["current_status"], j["error_message"]


def test_job_exit_rules(client, creds):
    # a worker's clean exit does not complete the job; the leader's does
    send_exit(client, creds, "j1", 1, "COMPLETED")
    assert status(client, "j1") == ("RUNNING", None)
    send_exit(client, creds, "j1", 0, "COMPLETED")
    assert status(client, "j1") == ("COMPLETED", None)
    send_exit(client, creds, "j1", 1, "FAILED", "late")  # the first end wins
    assert status(client, "j1") == ("COMPLETED", None)
    # any node's failure fails the job; a single node (no rank) is the leader
    send_exit(client, creds, "j2", 3, "FAILED", "OOM")
    assert status(client, "j2") == ("FAILED", "OOM")
    send_exit(client, creds, "j3", None, "COMPLETED")
    assert status(client, "j3") == ("COMPLETED", None)
    # a PUT after the agent's report wins (here: the job runs again), and a later report ends it again
    r = client.put("/v1/training_projects/p1/jobs/j2", json={"current_status": "RUNNING"})
    assert r.status_code == 200 and r.json()["training_job"]["current_status"] == "RUNNING"
    send_exit(client, creds, "j2", 0, "COMPLETED")
    assert status(client, "j2") == ("COMPLETED", None)
    # a status the agent does not send changes nothing
    send_exit(client, creds, "j4", 0, "EXPLODED")
    assert status(client, "j4") == ("RUNNING", None)


CHILD_GATED = textwrap.dedent('''
    import os, sys, time
    print("INFO step=0 loss=1.000", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    print("INFO training finished", flush=True)
''')


@pytest.mark.e2e
def test_a_job_that_ends_while_the_server_is_away_still_reaches_completed(tmp_path):
    """The job's end is in the agent's last batches and no later agent replays its spool:
    it keeps trying (docs/agent.md, FINAL_FLUSH_S) through the server's restart."""
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    gate = tmp_path / "gate"
    (tmp_path / "j-late.py").write_text(CHILD_GATED)
    (tmp_path / "ingest.key").write_text(server.creds["ingest_key"])
    cmd = [sys.executable, "-m", "sonde", "agent", "run", "--server", server.url,
           "--key-file", str(tmp_path / "ingest.key"), "--training-project-id", "p-e2e",
           "--training-job-id", "j-late", "--node-id", "node-a", "--node-rank", "0", "--interval", "1",
           "--spool-dir", str(tmp_path / "spool"), "--no-echo", "--", sys.executable, str(tmp_path / "j-late.py"),
           str(gate)]
    env = {k: v for k, v in os.environ.items() if k != "SONDE_API_KEY"}
    err = open(tmp_path / "agent.stderr", "wb")
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 30
        while get_job_or_none(server, "j-late") is None:
            assert time.monotonic() < deadline and agent.poll() is None, "the agent never registered the job"
            time.sleep(0.2)
        assert server.stop() == 0
        gate.write_text("")  # the job ends while the server is down
        time.sleep(3)
        assert agent.poll() is None, "the agent gave up while the server was away"
        server.start()
        assert agent.wait(90) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        err.close()
    try:
        job = get_job(server, "j-late")
        assert job["current_status"] == "COMPLETED", job
        assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".otlp.gz")]
    finally:
        assert server.stop() == 0


def get_job_or_none(server: LiveServer, job: str) -> dict | None:
    r = httpx.get(f"{server.url}/v1/training_projects/p-e2e/jobs/{job}", headers=server.headers(), timeout=30)
    return r.json()["training_job"] if r.status_code == 200 else None
