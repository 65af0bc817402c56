"""``sonde``: serve, and HTTP clients of a running server."""

from __future__ import annotations

import logging

import click

from ..settings import Config


@click.group()
@click.version_option(package_name="sonde")
def cli() -> None:
    """Sonde: observability for ML model serving and training."""


@cli.command()
@click.option("--data-dir", default=None, help="Store and credentials directory [default: ./sonde-data].")
@click.option("--host", default=None, help="Listen address [default: 127.0.0.1].")
@click.option("--port", default=None, type=int, help="Listen port [default: 8080].")
@click.option("--store", default=None, help="Store URL [default: chdb, embedded].")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(data_dir, host, port, store, log_level) -> None:
    """Run the API server on the embedded store (or the one --store names)."""
    import uvicorn

    from ..api.app import create_app

    config = Config.load(data_dir=data_dir, host=host, port=port, store=store)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    click.echo(f"sonde: serving on http://{config.host}:{config.port} (data in {config.data_dir})", err=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)


from ..agent.cli import agent  # noqa: E402
from .commands import ALL as _client_commands  # noqa: E402
from .demo import demo  # noqa: E402

for _command in [demo, agent, *_client_commands]:
    cli.add_command(_command)


def main() -> None:
    cli()
