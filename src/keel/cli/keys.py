"""`keel keys`: create, list and revoke virtual keys through a running Keel's API."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

import click

from keel.cli.client import KeelClient
from keel.keys import tokens

__all__ = ["keys_group", "parse_expires"]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([dh])")


def parse_expires(value: str) -> dict[str, Any]:
    """`30d`, `12h`, a date (`2026-12-31`, from 00:00 UTC) or an ISO datetime, as request fields."""
    text = value.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        amount = float(match.group(1))
        days = amount if match.group(2) == "d" else amount / 24
        if days <= 0:
            raise click.BadParameter("must be in the future", param_hint="--expires")
        return {"expires_in_days": days}
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return {"expires_at": date.fromisoformat(text).isoformat() + "T00:00:00Z"}
        return {"expires_at": datetime.fromisoformat(text).isoformat()}
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a duration (30d, 12h) or a date (2026-12-31)",
            param_hint="--expires",
        ) from None


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ["id", "name", "customer", "status", "created_at", "expires_at", "allowed_models"]
    headers = ["ID", "NAME", "CUSTOMER", "STATUS", "CREATED", "EXPIRES", "MODELS"]
    cells = [headers]
    for row in rows:
        models = row.get("allowed_models")
        values = {**row, "allowed_models": ",".join(models) if models else "all"}
        cells.append(["-" if values.get(c) is None else str(values[c]) for c in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


@click.group("keys")
def keys_group() -> None:
    """Manage virtual API keys (needs the admin key unless Keel runs in open mode)."""


@keys_group.command("create")
@click.option("--name", required=True, help="A name people recognise, e.g. the app or team.")
@click.option("--customer", help="Customer that requests with this key are billed to.")
@click.option("--expires", help="30d, 12h, a date (2026-12-31, UTC) or an ISO datetime.")
@click.option(
    "--model", "models", multiple=True, help="A model this key may call (repeat for more)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the key and its details as JSON.")
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    customer: str | None,
    expires: str | None,
    models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key and print it, once."""
    body: dict[str, Any] = {"name": name, "customer": customer}
    if expires:
        body.update(parse_expires(expires))
    if models:
        body["allowed_models"] = list(models)
    created = _client(ctx).request("POST", "/keys", json=body)
    if as_json:
        _print_json(created)
    else:
        click.echo(f"Created key {created['id']} ({created['name']}):")
        click.echo(created["key"])
    click.echo("Store this key now: Keel keeps only its hash and will not show it again.", err=True)


@keys_group.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_context
def list_(ctx: click.Context, include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    params = {"include_revoked": "true"} if include_revoked else None
    rows = _client(ctx).request("GET", "/keys", params=params)["data"]
    if as_json:
        _print_json(rows)
    elif not rows:
        click.echo("No keys. Create one with: keel keys create --name NAME")
    else:
        click.echo(_table(rows))


def _key_id(value: str) -> str:
    """The id in ID, which may also be a whole key (its secret then never leaves this process)."""
    parsed = tokens.parse(value.strip())
    key_id = parsed[0] if parsed else value.strip()
    if not tokens.is_key_id(key_id):
        raise click.BadParameter(
            "not a key id (12 characters, as shown by `keel keys list`)", param_hint="ID"
        )
    return key_id


@keys_group.command("revoke")
@click.argument("key", metavar="ID")
@click.pass_context
def revoke(ctx: click.Context, key: str) -> None:
    """Revoke the key with this ID (or this whole key); it stops working at once."""
    info = _client(ctx).request("POST", f"/keys/{_key_id(key)}/revoke")
    click.echo(f"Revoked key {info['id']} ({info['name']}).")
