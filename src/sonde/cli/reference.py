"""Render docs/cli.md from the commands' own ``--help``: ``python -m sonde.cli.reference``."""

from __future__ import annotations

import pathlib
import sys

import click

from .main import cli


def _walk(cmd: click.Command, path: list[str]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name])


def render() -> str:
    out = ["# CLI reference", "", "Generated from `--help` by `python -m sonde.cli.reference`; do not edit.", ""]
    for path, cmd in _walk(cli, ["sonde"]):
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
        out += [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md")
    target.write_text(render())
