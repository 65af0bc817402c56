import dataclasses
import subprocess
import sys
import pathlib

import pytest

from sonde._exceptions import BadRequest
from sonde.cli.main import migrate, serve
from sonde.settings import SETTINGS, Config, setting

DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for s in SETTINGS:
        assert f"| `{s.name}` | `SONDE_{s.name.upper()}` | `{s.default}` |" in DOC, s.name


def test_config_fields_are_exactly_the_settings_table():
    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in SETTINGS]
    assert all(getattr(Config(), s.name) == s.default for s in SETTINGS)


@pytest.mark.parametrize("command", [serve, migrate], ids=lambda c: c.name)
def test_server_flags_take_help_and_default_from_the_table(command):
    flags = {p.name: p for p in command.params if p.name in {s.name for s in SETTINGS}}
    assert {"data_dir", "store"} <= set(flags)
    for name, flag in flags.items():
        s = setting(name)
        # None, so that the environment and the config file still apply under the flag
        assert flag.default is None and flag.help == f"{s.help} [default: {s.default}; env: SONDE_{name.upper()}]"


def test_environment_then_overrides_win():
    c = Config.load({"SONDE_PORT": "9000", "SONDE_DATA_DIR": "/x"}, data_dir="/y", host=None)
    assert c.port == 9000 and c.data_dir == "/y" and c.host == "127.0.0.1"


def test_config_file_then_environment_then_options(tmp_path):
    f = tmp_path / "sonde.toml"
    f.write_text('port = 9100\nstore = "clickhouse://ch:8123/obs?cluster=main"\nstate_sync = "store"\n'
                 'key_cache_seconds = 0\n')
    c = Config.load({"SONDE_PORT": "9200"}, config_file=str(f))
    assert (c.port, c.store, c.state_sync, c.key_cache_seconds) == (9200, "clickhouse://ch:8123/obs?cluster=main",
                                                                   "store", 0.0)
    assert Config.load({"SONDE_CONFIG": str(f)}, port=9300).port == 9300


def test_bad_config_names_the_setting_and_the_rule(tmp_path):
    f = tmp_path / "sonde.toml"
    f.write_text('prot = 9100\n')
    with pytest.raises(BadRequest, match="unknown setting 'prot'") as e:
        Config.load({}, config_file=str(f))
    assert e.value.field == "prot"
    with pytest.raises(BadRequest, match=r"state_sync \(environment\) must be one of auto, process, store") as e:
        Config.load({"SONDE_STATE_SYNC": "memory"})
    assert e.value.field == "state_sync"
    with pytest.raises(BadRequest, match=r"port \(option\) must be an integer, not 'x'"):
        Config.load({}, port="x")
    f.write_text("port = [")
    with pytest.raises(BadRequest, match="is not TOML") as e:
        Config.load({}, config_file=str(f))
    with pytest.raises(BadRequest, match="cannot read config file") as e:
        Config.load({}, config_file=str(tmp_path / "missing.toml"))
    assert e.value.field == "config"


def test_serve_refuses_a_bad_config_file_before_starting(tmp_path):
    f = tmp_path / "sonde.toml"
    f.write_text('auto_migrate = "sometimes"\n')
    r = subprocess.run([sys.executable, "-m", "sonde", "serve", "--config", str(f), "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "auto_migrate (config file" in r.stderr and "must be one of embedded, always, never" in r.stderr


def test_a_setting_below_its_minimum_names_the_rule():
    with pytest.raises(BadRequest, match=r"alert_eval_seconds \(environment\) must be at least 1, not '0.5'") as e:
        Config.load({"SONDE_ALERT_EVAL_SECONDS": "0.5"})
    assert e.value.field == "alert_eval_seconds"
    assert Config.load({"SONDE_ALERT_EVAL_SECONDS": "1"}).alert_eval_seconds == 1.0
    with pytest.raises(BadRequest, match=r"metrics_rate_limit \(option\) must be at least 1"):
        Config.load({}, metrics_rate_limit=0)
