"""``sonde agent`` options: what is refused before anything starts; the GPU probe's output."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from sonde.agent.gpu import probe
from sonde.spool import Spool
from sonde.cli.main import cli

from test_agent_samplers import h200


def invoke(*args, env=None):
    return CliRunner().invoke(cli, ["agent", *args], env={"SONDE_API_KEY": None, **(env or {})})


def test_run_needs_a_deployment_and_a_key(tmp_path):
    r = invoke("run", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "one placement is required: --deployment-id, --training-project-id" in r.output
    r = invoke("run", "--deployment-id", "d", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass")
    assert r.exit_code == 2 and "no ingest key" in r.output
    r = invoke("run", "--deployment-id", "d", "--interval", "0.5", "--", "true", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "--interval" in r.output
    r = invoke("run", "--deployment-id", "d", "--key-file", str(tmp_path / "missing"), "--", "true")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_placements(tmp_path):
    from sonde.agent.cli import _placement, _target

    r = invoke("run", "--deployment-id", "d", "--training-job-id", "j", "--", "true", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "not deployment and training job" in r.output
    r = invoke("run", "--training-job-id", "j", "--", "true", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "a training job needs --training-project-id" in r.output
    r = invoke("run", "--chain-id", "c", "--chainlet-id", "cl", "--", "true", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "a chainlet needs --chain-deployment-id" in r.output
    r = invoke("run", "--training-project-id", "p", "--training-job-id", "j", "--node-rank", "-1", "--", "true")
    assert r.exit_code == 2 and "--node-rank" in r.output
    job = _placement({"training_project_id": "p", "training_job_id": "j", "node_id": "n1", "node_rank": 0})
    assert job == {"sonde.training_project_id": "p", "sonde.training_job_id": "j", "sonde.node_id": "n1",
                   "sonde.node_rank": "0"}
    assert _target(job) == "p-j-node-n1"
    chainlet = _placement({"chain_id": "c", "chain_deployment_id": "cd", "chainlet_id": "cl"})
    assert chainlet == {"sonde.chain_deployment_id": "cd", "sonde.chainlet_id": "cl", "sonde.chain_id": "c"}
    assert _target(chainlet) == "cd-cl"
    loops = _placement({"loops_deployment_id": "l", "node_rank": 2})
    assert loops == {"sonde.loops_deployment_id": "l", "sonde.node_rank": "2"} and _target(loops) == "l-node-2"
    assert _placement({"deployment_id": "d"}) == {"sonde.deployment_id": "d", "sonde.model_id": ""}


def test_watch_needs_something_to_watch(tmp_path):
    r = invoke("watch", "--deployment-id", "d", "--spool-dir", str(tmp_path), env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "give --pid, --log-file, or both" in r.output


def test_two_agents_cannot_share_a_spool(tmp_path):
    held = Spool(str(tmp_path))
    try:
        r = invoke("run", "--deployment-id", "d", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass",
                   env={"SONDE_API_KEY": "k"})
        assert r.exit_code == 1 and "in use by another process (another sonde agent?)" in r.output
    finally:
        held.close()


def test_gpu_probe_prints_a_sample_and_its_cost(capsys):
    assert probe(samples=50, nvml=h200()) == 0
    out = capsys.readouterr().out
    assert "'gpu_type': 'NVIDIA H200'" in out
    assert "hw.gpu.memory.usage" in out and "120413601792" in out
    assert "per sample over 50:" in out and "us wall" in out and "(2 GPU(s))" in out


def test_last_error_line_of_a_training_process():
    from sonde.agent.supervisor import LastError
    from sonde.agent.logs import make_record

    e = LastError()
    assert e.line(0) == "" and e.line(3) == "process exited with code 3"
    e.see(make_record("ERROR: disk full", 1, "stdout"))
    e.see(make_record("INFO: fine", 2, "stdout"))
    assert e.line(1) == "ERROR: disk full"
    e.see(make_record("Traceback (most recent call last):", 3, "stderr"))
    e.see(make_record("RuntimeError: CUDA out of memory", 4, "stderr"))
    e.see(make_record("   ", 5, "stderr"))
    assert e.line(1) == "RuntimeError: CUDA out of memory"
    assert e.line(127, "cannot start 'x'") == "cannot start 'x'"
