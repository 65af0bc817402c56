import dataclasses
import pathlib

from sonde.settings import SETTINGS, Config

DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for s in SETTINGS:
        assert f"| `{s.name}` | `SONDE_{s.name.upper()}` | `{s.default}` |" in DOC, s.name


def test_config_fields_are_exactly_the_settings_table():
    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in SETTINGS]
    assert all(getattr(Config(), s.name) == s.default for s in SETTINGS)


def test_environment_then_overrides_win():
    c = Config.load({"SONDE_PORT": "9000", "SONDE_DATA_DIR": "/x"}, data_dir="/y", host=None)
    assert c.port == 9000 and c.data_dir == "/y" and c.host == "127.0.0.1"
