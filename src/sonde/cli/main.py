"""``sonde``: serve, and HTTP clients of a running server."""

from __future__ import annotations

import logging

import click

from ..settings import Config, setting


@click.group()
@click.version_option(package_name="sonde")
def cli() -> None:
    """Sonde: observability for ML model serving and training.

    Client commands (all but serve, migrate, agent and demo) find their server and key,
    first found: --server/--key, the environment (SONDE_URL, SONDE_API_KEY), a profile,
    then http://127.0.0.1:8080 with the key in DATA_DIR/credentials.json. Profiles are
    named servers in ~/.config/sonde/config.toml ($XDG_CONFIG_HOME/sonde/config.toml, or
    the file SONDE_CLI_CONFIG names); --profile NAME (or SONDE_PROFILE) picks one, else
    the file's default_profile applies unless a server was named by flag or environment.
    Fields: url, api_key (management), admin_key (workspaces, keys), ingest_key. A missing
    profile, an unknown field or a malformed file is a usage error naming it.

    \b
    Example ~/.config/sonde/config.toml:
      default_profile = "prod"
      [profiles.prod]
      url = "https://sonde.example.com"
      api_key = "sonde_..."
      admin_key = "sonde_..."
      [profiles.local]
      url = "http://127.0.0.1:8080"

    \b
    Example:
      sonde logs MODEL DEPLOYMENT -f --since 10m --profile prod
    """


def _config(**options) -> Config:
    from .._exceptions import BadRequest

    try:
        return Config.load(**options)
    except BadRequest as exc:
        raise click.UsageError(str(exc)) from None


def _setting_option(name: str):
    """The flag of one setting, its help and default from the settings table. The flag
    itself defaults to None, so the environment and the config file still apply."""
    s = setting(name)
    return click.option(f"--{name.replace('_', '-')}", name, default=None, type=type(s.default),
                        help=f"{s.help} [default: {s.default}; env: SONDE_{name.upper()}]")


#: seconds a stopping server gives open requests (live log streams) before it cancels them
STREAM_DRAIN_S = 3

_config_option = click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
                              help="TOML file of settings (docs/settings.md) [env: SONDE_CONFIG].")


@cli.command()
@_setting_option("data_dir")
@_setting_option("host")
@_setting_option("port")
@_setting_option("store")
@_config_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(data_dir, host, port, store, config_file, log_level) -> None:
    """Run the API server on the embedded store (or the one --store names).

    \b
    Example:
      sonde serve --data-dir /var/lib/sonde --port 8080
    """
    import uvicorn

    from ..api.app import create_app
    from ..heap import keep_heap

    config = _config(config_file=config_file, data_dir=data_dir, host=host, port=port, store=store)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_heap(config.heap_keep_mb)  # before the app's threads make their heaps
    app = create_app(config)
    click.echo(f"sonde: serving on http://{config.host}:{config.port} (data in {config.data_dir})", err=True)
    # Open live log streams never end by themselves: past this, shutdown cancels them (their
    # clients reconnect with Last-Event-ID) and goes on to commit and close the store.
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=STREAM_DRAIN_S)


@cli.command()
@_setting_option("data_dir")
@_setting_option("store")
@_config_option
def migrate(data_dir, store, config_file) -> None:
    """Bring the store's schema to this build's version; safe to run again.

    On chDB the server must be stopped (one process per data directory). On a cluster,
    run it once before starting (or upgrading) the API replicas: on an empty store it
    also creates the default workspace and its keys (DATA_DIR/credentials.json), so
    replicas starting together do not each create one.

    \b
    Example:
      sonde migrate --store clickhouse://user:pass@ch:8123/sonde
    """
    from .._exceptions import SondeError
    from ..store import Store, migrations, open_executor
    from ..store.accounts import Accounts, bootstrap

    config = _config(config_file=config_file, data_dir=data_dir, store=store)
    try:
        ex, db = open_executor(config.store, config.data_dir)
        try:
            before, after = migrations.migrate(ex, db or "sonde", config.retention_days)
            s = Store(ex, db or "sonde", migrate=False)
            try:
                creds = bootstrap(Accounts(s), config.data_dir)
            finally:
                s.close(executor=False)
        finally:
            ex.close()
    except SondeError as exc:
        raise click.ClickException(str(exc)) from None
    if before == after:
        click.echo(f"schema is at version {after}; nothing to do")
    else:
        click.echo(f"schema migrated from version {before} to {after}")
    if creds:
        click.echo(f"first start: keys written to {config.data_dir}/credentials.json")


from ..agent.cli import agent  # noqa: E402
from .alerts import alerts  # noqa: E402
from .commands import ALL as _client_commands  # noqa: E402
from .demo import demo  # noqa: E402
from .groups import ALL as _entity_groups  # noqa: E402
from .requests import ALL as _request_commands  # noqa: E402

for _command in [demo, agent, *_client_commands, *_request_commands, *_entity_groups, alerts]:
    cli.add_command(_command)


def main() -> None:
    cli()
