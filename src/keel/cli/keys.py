"""`keel keys`: create, list, update (limits) and revoke virtual keys through Keel's API."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import click

from keel.cli.client import KeelClient
from keel.cli.output import print_json
from keel.keys import tokens

__all__ = ["describe_limits", "keys_group", "limit_options", "parse_expires"]

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


class _Limit(click.ParamType[Any, Any]):
    """A positive number, or `none` (lifts the limit: sent as null)."""

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind
        self.name = "N|none" if kind is int else "USD|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if text == "none":
            return "none"
        try:
            number = self.kind(text)
        except ValueError:
            self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}")
        if not number > 0:
            self.fail(f"must be above 0, got {value}")
        return number


_PERIODS = click.Choice(["day", "month", "total", "none"])


def limit_options(func: Any) -> Any:
    """--rpm, --tpm, --budget-usd and --budget-period, as used by keys and limits commands."""
    for option in reversed(
        [
            click.option("--rpm", type=_Limit(int), help="Requests per minute (none: no limit)."),
            click.option("--tpm", type=_Limit(int), help="Tokens per minute (none: no limit)."),
            click.option(
                "--budget-usd", type=_Limit(float), help="Budget in USD per --budget-period."
            ),
            click.option(
                "--budget-period", type=_PERIODS, help="day, month (UTC calendar) or total."
            ),
        ]
    ):
        func = option(func)
    return func


def limit_fields(**given: Any) -> dict[str, Any]:
    """The request fields for the limit options given (`none` becomes null)."""
    out = {}
    for name, value in given.items():
        if value is None:
            continue
        out[name] = None if value == "none" else value
    return out


def describe_limits(row: dict[str, Any]) -> str:
    """`60 rpm, 100000 tpm, 20.00 USD/month`, or `-`."""
    parts = []
    if row.get("rpm") is not None:
        parts.append(f"{row['rpm']} rpm")
    if row.get("tpm") is not None:
        parts.append(f"{row['tpm']} tpm")
    if row.get("budget_usd") is not None:
        parts.append(f"{row['budget_usd']:.2f} USD/{row.get('budget_period')}")
    return ", ".join(parts) or "-"


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [
        "id",
        "name",
        "customer",
        "status",
        "created_at",
        "expires_at",
        "allowed_models",
        "limits",
    ]
    headers = ["ID", "NAME", "CUSTOMER", "STATUS", "CREATED", "EXPIRES", "MODELS", "LIMITS"]
    cells = [headers]
    for row in rows:
        models = row.get("allowed_models")
        values = {
            **row,
            "allowed_models": ",".join(models) if models else "all",
            "limits": describe_limits(row),
        }
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
@limit_options
@click.option("--json", "as_json", is_flag=True, help="Print the key and its details as JSON.")
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    customer: str | None,
    expires: str | None,
    models: tuple[str, ...],
    as_json: bool,
    rpm: Any,
    tpm: Any,
    budget_usd: Any,
    budget_period: str | None,
) -> None:
    """Create a key and print it, once."""
    body: dict[str, Any] = {
        "name": name,
        "customer": customer,
        **limit_fields(rpm=rpm, tpm=tpm, budget_usd=budget_usd, budget_period=budget_period),
    }
    if expires:
        body.update(parse_expires(expires))
    if models:
        body["allowed_models"] = list(models)
    created = _client(ctx).request("POST", "/keys", json=body)
    if as_json:
        print_json(created)
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
        print_json(rows)
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


@keys_group.command("update")
@click.argument("key", metavar="ID")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="Print the key's details as JSON.")
@click.pass_context
def update(
    ctx: click.Context,
    key: str,
    as_json: bool,
    rpm: Any,
    tpm: Any,
    budget_usd: Any,
    budget_period: str | None,
) -> None:
    """Change a key's limits; the options not given keep their value (`none` lifts one)."""
    body = limit_fields(rpm=rpm, tpm=tpm, budget_usd=budget_usd, budget_period=budget_period)
    if not body:
        raise click.UsageError("give at least one of --rpm, --tpm, --budget-usd, --budget-period")
    info = _client(ctx).request("PATCH", f"/keys/{_key_id(key)}", json=body)
    if as_json:
        print_json(info)
    else:
        click.echo(f"Updated key {info['id']} ({info['name']}): {describe_limits(info)}.")
