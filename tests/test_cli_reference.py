import pathlib

from sonde.cli.reference import render


def test_cli_reference_is_current():
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert doc.read_text() == render(), "run: python -m sonde.cli.reference"
