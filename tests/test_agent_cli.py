"""``sonde agent`` options: what is refused before anything starts; the GPU probe's output."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from sonde.agent.gpu import probe
from sonde.agent.spool import Spool
from sonde.cli.main import cli

from test_agent_samplers import h200


def invoke(*args, env=None):
    return CliRunner().invoke(cli, ["agent", *args], env={"SONDE_API_KEY": None, **(env or {})})


def test_run_needs_a_deployment_and_a_key(tmp_path):
    r = invoke("run", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "--deployment-id is required" in r.output
    r = invoke("run", "--deployment-id", "d", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass")
    assert r.exit_code == 2 and "no ingest key" in r.output
    r = invoke("run", "--deployment-id", "d", "--interval", "0.5", "--", "true", env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "--interval" in r.output
    r = invoke("run", "--deployment-id", "d", "--key-file", str(tmp_path / "missing"), "--", "true")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_watch_needs_something_to_watch(tmp_path):
    r = invoke("watch", "--deployment-id", "d", "--spool-dir", str(tmp_path), env={"SONDE_API_KEY": "k"})
    assert r.exit_code == 2 and "give --pid, --log-file, or both" in r.output


def test_two_agents_cannot_share_a_spool(tmp_path):
    held = Spool(str(tmp_path))
    try:
        r = invoke("run", "--deployment-id", "d", "--spool-dir", str(tmp_path), "--", sys.executable, "-c", "pass",
                   env={"SONDE_API_KEY": "k"})
        assert r.exit_code == 1 and "in use by another sonde agent" in r.output
    finally:
        held.close()


def test_gpu_probe_prints_a_sample_and_its_cost(capsys):
    assert probe(samples=50, nvml=h200()) == 0
    out = capsys.readouterr().out
    assert "'gpu_type': 'NVIDIA H200'" in out
    assert "hw.gpu.memory.usage" in out and "120413601792" in out
    assert "per sample over 50:" in out and "us wall" in out and "(2 GPU(s))" in out
