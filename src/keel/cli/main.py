"""The `keel` command: `keel serve` runs Keel; the other groups manage a running Keel."""

from __future__ import annotations

import click

from keel import __version__
from keel.cli.alerts import alerts_group
from keel.cli.client import DEFAULT_URL, KeelClient
from keel.cli.demo import demo
from keel.cli.keys import keys_group
from keel.cli.limits import limits_group
from keel.cli.prompts import prompts_group
from keel.cli.traces import traces_group
from keel.config import ConfigError, load_settings

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="KEEL_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Keel to manage (env KEEL_URL).",
)
@click.option(
    "--api-key",
    envvar="KEEL_API_KEY",
    default=None,
    help="Admin key for the management API (env KEEL_API_KEY).",
)
@click.version_option(__version__, prog_name="keel")
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Keel: a self-hosted LLMOps gateway."""
    ctx.obj = KeelClient(url=url, api_key=api_key or None)


@cli.command()
@click.option("--host", help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on.  [default: 4000]")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="YAML config file (env KEEL_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Folder for the SQLite database and the write-ahead log.  [default: .keel]",
)
def serve(host: str | None, port: int | None, config: str | None, data_dir: str | None) -> None:
    """Run Keel: gateway, management API and web UI in one process."""
    overrides = {"host": host, "port": port, "config": config, "data_dir": data_dir}
    try:
        settings = load_settings(overrides=overrides)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    from keel.server import run  # imported here: the management commands need no server stack

    run(settings)


cli.add_command(keys_group)
cli.add_command(prompts_group)
cli.add_command(limits_group)
cli.add_command(demo)
cli.add_command(alerts_group)
cli.add_command(traces_group)


def main() -> None:
    """Entry point of the `keel` script."""
    cli(prog_name="keel")
