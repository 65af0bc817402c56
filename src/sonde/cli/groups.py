"""``sonde train``, ``sonde chains``, ``sonde loops``: each entity's list, logs and metrics verbs."""

from __future__ import annotations

import click

from .logs import chainlet_logs, job_logs, loops_logs
from .metrics import job_metrics, loops_metrics
from .options import client_options


def list_command(name: str, args: tuple[str, ...], path: str, field: str, columns: list[str],
                 doc: str) -> click.Command:
    """A command that GETs ``path`` (formatted with its arguments) and lists ``field``."""

    def command(api, **ids):
        data = api.call("GET", path.format(**ids))
        api.emit(data, data[field], columns)

    command.__doc__ = doc
    cmd = client_options()(command)
    for arg in reversed(args):
        cmd = click.argument(arg)(cmd)
    return click.command(name)(cmd)


@click.group()
def train() -> None:
    """Training projects and jobs: list them, their logs, their metrics."""


@click.group()
def chains() -> None:
    """Chains: list them and their deployments, their chainlets' logs."""


@click.group()
def loops() -> None:
    """Trainer (loops) deployments: list them, their logs, their metrics."""


for group, commands in (
    (train, [
        list_command("projects", (), "/v1/training_projects", "training_projects",
                     ["id", "name", "team_name", "created_at"],
                     "List training projects.\n\n\b\nExample:\n  sonde train projects -o json"),
        list_command("jobs", ("training_project_id",), "/v1/training_projects/{training_project_id}/jobs",
                     "training_jobs", ["id", "name", "current_status", "error_message", "created_at"],
                     "List a training project's jobs with their status.\n\n\b\nExample:\n  sonde train jobs PROJECT"),
        job_logs, job_metrics]),
    (chains, [
        list_command("list", (), "/v1/chains", "chains", ["id", "name", "deployments_count", "created_at"],
                     "List chains.\n\n\b\nExample:\n  sonde chains list"),
        list_command("deployments", ("chain_id",), "/v1/chains/{chain_id}/deployments", "deployments",
                     ["id", "status", "environment", "created_at"],
                     "List a chain's deployments.\n\n\b\nExample:\n  sonde chains deployments CHAIN -o json"),
        chainlet_logs]),
    (loops, [
        list_command("deployments", (), "/v1/loops/deployments", "deployments", ["id", "name", "status", "created_at"],
                     "List trainer (loops) deployments.\n\n\b\nExample:\n  sonde loops deployments"),
        loops_logs, loops_metrics]),
):
    for command in commands:
        group.add_command(command)

ALL = [train, chains, loops]
