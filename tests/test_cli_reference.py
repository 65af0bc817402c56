import pathlib

from sonde.cli.reference import render


def test_cli_reference_is_current():
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert doc.read_text() == render(), "run: python -m sonde.cli.reference"


def test_every_command_shows_an_example_in_its_help():
    import click

    from sonde.cli.main import cli

    def leaves(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from leaves(sub, path + [name])
        else:
            yield " ".join(path), cmd

    missing = []
    for path, cmd in leaves(cli, ["sonde"]):
        text = cmd.get_help(click.Context(cmd, info_name=path))
        if "Example" not in text or "sonde " not in text.split("Example", 1)[1]:
            missing.append(path)
    assert not missing, missing
