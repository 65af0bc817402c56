"""The CLI's logs and metrics verbs as a user runs them: child processes against a real
``sonde serve``: -f over the live stream (reconnecting across a server restart), paging
past 1000 lines, colour only on a terminal, profiles, train/chains/loops verbs."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time

import httpx
import pytest

from live_server import LiveServer
from otlp_build import encode, gauge, log_record, logs_request, metrics_request, number

DEP = {"sonde.model_id": "cm", "sonde.deployment_id": "cd", "sonde.replica": "r0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # quick key checks and heartbeats, two streams a key: the revoked-key and 429 paths in seconds
    s = LiveServer(tmp_path_factory.mktemp("cli-tail"), env={
        "SONDE_STREAM_KEY_CHECK_SECONDS": "0.5", "SONDE_STREAM_HEARTBEAT_SECONDS": "1",
        "SONDE_STREAM_LIMIT_PER_KEY": "2"}).start()
    yield s
    s.stop()


def send(server, res: dict, records) -> None:
    body, headers = encode(logs_request(res, records))
    httpx.post(f"{server.url}/v1/otlp/v1/logs", content=body,
               headers={**headers, **server.headers("ingest_key")}, timeout=30).raise_for_status()


def run(server, *args, ok=True, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sonde", *args, "--server", server.url, "--data-dir", server.data_dir],
                       capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    if ok:
        assert r.returncode == 0, r.stderr
    return r


class Follower:
    """``sonde ... -f -o jsonl`` as a child; its stdout read line by line with a deadline."""

    def __init__(self, server, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "sonde", *args, "-f", "-o", "jsonl", "--server",
                                      server.url, "--data-dir", server.data_dir],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.watchdog = threading.Timer(90, self.proc.kill)  # a follow that stops printing fails, not hangs
        self.watchdog.start()

    def messages(self, n: int) -> list[str]:
        return [json.loads(self.proc.stdout.readline())["message"] for _ in range(n)]

    def stop(self) -> str:
        self.watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.proc.stderr.read()


def test_follow_prints_the_last_lines_then_the_stream_once_across_a_server_restart(server):
    now = time.time_ns()
    send(server, DEP, [log_record(now - 10_000_000 * (30 - i), f"old {i}") for i in range(30)])
    f = Follower(server, "logs", "cm", "cd", "-n", "5")
    try:
        assert f.messages(5) == [f"old {i}" for i in range(25, 30)]
        # a line in the same millisecond as the last printed is new: printed, once
        send(server, DEP, [log_record(now - 10_000_000, "same ms as the last printed")]
             + [log_record(now + i * 10_000, f"new {i}") for i in range(1500)])
        assert f.messages(1501) == ["same ms as the last printed"] + [f"new {i}" for i in range(1500)]
        # the server dies and comes back: the client reconnects with its last id (a crash:
        # a graceful stop waits for open streams to end)
        server.kill9()
        server.start()
        send(server, DEP, [log_record(now - 3600 * 10**9, "replayed from a spool, an hour old"),
                           log_record(time.time_ns(), "after the restart")])
        assert f.messages(2) == ["replayed from a spool, an hour old", "after the restart"]
    finally:
        err = f.stop()
    assert "following" in err and "reconnecting" in err
    # a server that cannot be reached at all is an error at once, not a reconnect loop
    r = subprocess.run([sys.executable, "-m", "sonde", "logs", "cm", "cd", "-f", "--since", "1m", "--server",
                        "http://127.0.0.1:1", "--key", "k"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot reach" in r.stderr and "reconnecting" not in r.stderr


def test_follow_ends_with_the_servers_word_on_a_revoked_key_and_past_the_stream_limit(server):
    made = httpx.post(f"{server.url}/v1/admin/workspaces/{server.creds['workspace_id']}/api_keys",
                      headers=server.headers("admin_key"), json={"name": "tail", "scope": "management"}).json()
    send(server, {**DEP, "sonde.deployment_id": "cd-key"}, [log_record(time.time_ns(), "hello")])
    two = [Follower(server, "logs", "cm", "cd-key", "--since", "1m", "--key", made["key"]) for _ in range(2)]
    try:
        assert [f.messages(1) for f in two] == [["hello"], ["hello"]]
        third = run(server, "logs", "cm", "cd-key", "-f", "--since", "1m", "--key", made["key"], ok=False)
        assert third.returncode == 1 and "429" in third.stderr and "reconnecting" not in third.stderr
        httpx.delete(f"{server.url}/v1/admin/api_keys/{made['id']}",
                     headers=server.headers("admin_key")).raise_for_status()
        assert [f.proc.wait(timeout=30) for f in two] == [1, 1]
    finally:
        errs = [f.stop() for f in two]
    assert all("revoked" in e for e in errs), errs


def test_follow_since_is_logcli_tail_since(server):
    now = time.time_ns()
    res = {**DEP, "sonde.deployment_id": "cd-since"}
    send(server, res, [log_record(now - 20 * 60 * 10**9, "too old"), log_record(now - 5 * 60 * 10**9, "recent 1"),
                       log_record(now - 60 * 10**9, "recent 2", severity_text="ERROR")])
    f = Follower(server, "logs", "cm", "cd-since", "--since", "10m")
    try:
        assert f.messages(2) == ["recent 1", "recent 2"]
        send(server, res, [log_record(time.time_ns(), "live")])
        assert f.messages(1) == ["live"]
    finally:
        f.stop()
    # the line filters reach the stream as they reach the GET (includes/excludes repeated)
    f = Follower(server, "logs", "cm", "cd-since", "--since", "10m", "--include", "recent", "--include", "1",
                 "--exclude", "2", "--replica", "r0")
    try:
        assert f.messages(1) == ["recent 1"]
        send(server, res, [log_record(time.time_ns(), "recent 12 live"), log_record(time.time_ns(), "recent 1 live")])
        assert f.messages(1) == ["recent 1 live"]
    finally:
        f.stop()


def test_pages_past_1000_lines_each_once(server):
    t = time.time_ns() - 60 * 10**9
    res = {**DEP, "sonde.deployment_id": "cd-pages"}
    # 600 lines in one millisecond, then 900 spread out: the pages meet inside the crowded ms
    send(server, res, [log_record(t + i, f"crowd {i:04d}") for i in range(600)]
         + [log_record(t + 10**6 * (i + 1), f"spread {i:03d}") for i in range(900)])
    newest = run(server, "logs", "cm", "cd-pages", "--since", "5m", "-n", "1500", "-o", "jsonl").stdout.splitlines()
    msgs = [json.loads(line)["message"] for line in newest]
    assert msgs == [f"spread {i:03d}" for i in range(899, -1, -1)] + [f"crowd {i:04d}" for i in range(599, -1, -1)]
    out = run(server, "logs", "cm", "cd-pages", "--since", "5m", "-n", "1200", "--direction", "asc", "-o", "jsonl")
    got = [json.loads(line)["message"] for line in out.stdout.splitlines()]
    assert got == [f"crowd {i:04d}" for i in range(600)] + [f"spread {i:03d}" for i in range(600)]
    whole = json.loads(run(server, "logs", "cm", "cd-pages", "--since", "5m", "-n", "1001", "-o", "json").stdout)
    assert len(whole["logs"]) == 1001
    # more lines in one millisecond than a page: the API pages by millisecond, so the rest
    # of that millisecond cannot be reached; said on stderr, and the pages go on after it
    res = {**DEP, "sonde.deployment_id": "cd-crowd"}
    send(server, res, [log_record(t + i, f"crowd {i:04d}") for i in range(1100)]
         + [log_record(t + 10**6, "after the crowd")])
    out = run(server, "logs", "cm", "cd-crowd", "--since", "5m", "-n", "2000", "--direction", "asc", "-o", "jsonl")
    got = [json.loads(line)["message"] for line in out.stdout.splitlines()]
    assert got == [f"crowd {i:04d}" for i in range(1000)] + ["after the crowd"]
    assert "over 1000 lines in the millisecond" in out.stderr


def test_levels_coloured_on_a_terminal_only_and_notes_on_stderr(server):
    send(server, {**DEP, "sonde.deployment_id": "cd-tty"}, [log_record(time.time_ns(), "boom", severity_text="ERROR")])
    piped = run(server, "logs", "cm", "cd-tty")
    assert "boom" in piped.stdout and "\x1b[" not in piped.stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sonde", "logs", "cm", "cd-tty", "--server", server.url,
                             "--data-dir", server.data_dir], stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        try:
            chunk = os.read(leader, 4096) if ready else b""
        except OSError:
            chunk = b""
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(leader)
    assert b"boom" in out and b"\x1b[31m" in out  # ERROR in red


def test_profiles_and_their_precedence(server, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'default_profile = "local"\n[profiles.local]\nurl = "{server.url}"\n'
                   f'api_key = "{server.creds["management_key"]}"\n'
                   '[profiles.broken]\nurl = "http://127.0.0.1:1"\napi_key = "nope"\n')
    env = {**os.environ, "SONDE_CLI_CONFIG": str(cfg)}
    env.pop("SONDE_URL", None)
    env.pop("SONDE_API_KEY", None)

    def sonde(*args):
        return subprocess.run([sys.executable, "-m", "sonde", *args, "--data-dir", "/nonexistent"],
                              capture_output=True, text=True, timeout=60, env=env)

    assert sonde("models", "-o", "json").returncode == 0  # the default profile's url and key
    r = sonde("models", "--profile", "broken")
    assert r.returncode == 1 and "cannot reach http://127.0.0.1:1" in r.stderr
    # the flag beats the profile
    assert sonde("models", "--profile", "broken", "--server", server.url, "--key",
                 server.creds["management_key"]).returncode == 0
    r = sonde("models", "--profile", "nope")
    assert r.returncode == 2 and "'nope' is not in" in r.stderr and "broken, local" in r.stderr
    # the environment beats the profile too
    env.update(SONDE_URL=server.url, SONDE_API_KEY=server.creds["management_key"])
    assert sonde("models", "--profile", "broken").returncode == 0
    del env["SONDE_URL"], env["SONDE_API_KEY"]
    cfg.write_text('[profiles.x]\nuri = "typo"\n')
    r = sonde("models", "--profile", "x")
    assert r.returncode == 2 and "unknown field 'uri'" in r.stderr
    cfg.write_text('[profiles.x\nurl = "no closing bracket"\n')
    r = sonde("models")
    assert r.returncode == 2 and f"profiles file {cfg}" in r.stderr


def test_train_chains_loops_verbs(server):
    job = {"sonde.training_project_id": "cp", "sonde.training_job_id": "cj", "sonde.node_rank": "0",
           "sonde.node_id": "node-0"}
    now = time.time_ns()
    send(server, job, [log_record(now - 10**9, "epoch 1", severity_text="INFO")])
    body, headers = encode(metrics_request(job, [gauge("hw.gpu.utilization", [
        number(now - k * 10 * 10**9, k / 10, attrs={"hw.gpu.index": "0"}) for k in range(6, 0, -1)], unit="1")]))
    httpx.post(f"{server.url}/v1/otlp/v1/metrics", content=body,
               headers={**headers, **server.headers("ingest_key")}).raise_for_status()
    assert "cj" in run(server, "train", "jobs", "cp").stdout
    table = run(server, "train", "metrics", "cp", "cj", "--since", "2m").stdout
    row = next(line for line in table.splitlines() if "gpu_utilization" in line and "gpu=0" in line)
    assert any(bar in row for bar in "▁▂▃▄▅▆▇█")
    f = Follower(server, "train", "logs", "cp", "cj")
    try:
        assert f.messages(1) == ["epoch 1"]
        send(server, job, [log_record(time.time_ns(), "epoch 2")])
        assert f.messages(1) == ["epoch 2"]
        # the job ends (the agent's exit record): the follow ends with its status
        send(server, job, [log_record(time.time_ns(), "training process exited with code 3: boom",
                                      severity_text="ERROR",
                                      attrs={"component": "sonde.agent", "sonde.job.status": "FAILED",
                                             "sonde.job.exit_code": "3",
                                             "sonde.job.error": "boom"})])
        assert f.proc.wait(timeout=30) == 1
    finally:
        err = f.stop()
    assert "training job ended: FAILED" in err
    # a job that already ended (a status a PUT set, in the vendor's spelling): the follow
    # prints its lines, reads a moment more, and ends with its status: exit 0 for completed
    httpx.put(f"{server.url}/v1/training_projects/cp/jobs/cj-done", headers=server.headers(),
              json={"current_status": "TRAINING_JOB_COMPLETED"}).raise_for_status()
    send(server, {**job, "sonde.training_job_id": "cj-done"}, [log_record(time.time_ns(), "saved the model")])
    r = run(server, "train", "logs", "cp", "cj-done", "-f")
    assert "saved the model" in r.stdout and "training job ended: TRAINING_JOB_COMPLETED" in r.stderr
    chainlet = {"sonde.chain_id": "cc", "sonde.chain_deployment_id": "ccd", "sonde.chainlet_id": "ccl"}
    send(server, chainlet, [log_record(time.time_ns(), "chainlet says hi", severity_text="WARNING")])
    out = run(server, "chains", "logs", "cc", "ccd", "ccl", "--level", "WARNING", "-o", "jsonl").stdout
    assert [json.loads(x)["message"] for x in out.splitlines()] == ["chainlet says hi"]
    send(server, {"sonde.loops_deployment_id": "clp"}, [log_record(time.time_ns(), "loops line")])
    assert "loops line" in run(server, "loops", "logs", "clp").stdout


def test_metrics_table_has_a_sparkline_per_series_from_the_api_numbers(server):
    now = time.time_ns()
    res = {**DEP, "sonde.deployment_id": "cd-spark"}
    gib = float(2**30)
    start, end = now // 10**6 - 3600_000, now // 10**6
    # a point at the start of each of the last 30 one-minute steps, held through it (a gauge's
    # step is its time-weighted mean): each step's value is its point's
    body, headers = encode(metrics_request(res, [gauge("process.memory.usage", [
        number((start + (60 - k) * 60_000) * 10**6, gib * (1 + k % 3)) for k in range(30, 0, -1)],
        unit="By")]))
    httpx.post(f"{server.url}/v1/otlp/v1/metrics", content=body,
               headers={**headers, **server.headers("ingest_key")}).raise_for_status()
    name = "baseten_container_cpu_memory_working_set_bytes"
    api = httpx.get(f"{server.url}/v1/models/cm/deployments/cd-spark/metrics", headers=server.headers(),
                    params={"mode": "SERIES", "metrics": name, "start_epoch_millis": start,
                            "end_epoch_millis": end}).json()
    values = [vs["values"][0][0] for vs in api["metric_values"]]
    assert len(values) == 60 and {v for v in values if v is not None} == {gib, 2 * gib, 3 * gib}
    # 1, 2, 3 GiB scaled from the smallest to the largest: the lowest, the middle, the top bar
    expected = "".join({None: " ", gib: "▁", 2 * gib: "▅", 3 * gib: "█"}[v] for v in values).strip()
    table = run(server, "metrics", "cm", "cd-spark", "--metric", name, "--metric", "baseten_inference_requests_total",
                "--since", str(start), "--until", str(end)).stdout
    row = next(line for line in table.splitlines() if name in line)
    assert expected in row and "3.22123e+09" in row  # last, max: 3 GiB
    assert "(no data)" in next(line for line in table.splitlines() if "baseten_inference_requests_total" in line)
    # a week has 360 steps: each bar is then the mean of 6
    from sonde.cli.metrics import sparkline

    assert sparkline([1.0] * 300 + [None] * 54 + [2.0] * 6) == "▁" * 50 + " " * 9 + "█"
