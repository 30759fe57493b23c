"""`keel limits`: set, list and delete the limits of customers, pipelines, models and the
project through a running Keel's API, and read a budget's spend."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from keel.cli.client import KeelClient
from keel.cli.keys import describe_limits, limit_fields, limit_options

__all__ = ["limits_group"]

_SCOPES = click.Choice(["project", "customer", "pipeline", "model"])


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _path(scope: str, subject: str | None) -> str:
    if subject is None:
        if scope != "project":
            raise click.UsageError(f"name the {scope}: keel limits ... {scope} NAME")
        subject = "default"
    return f"/limits/{scope}/{quote(subject, safe='')}"


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [["SCOPE", "SUBJECT", "LIMITS", "SOURCE"]]
    cells += [[r["scope"], r["subject"], describe_limits(r), r["source"]] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


@click.group("limits")
def limits_group() -> None:
    """Rate limits and budgets of customers, pipelines, models and the project (admin key)."""


@limits_group.command("set")
@click.argument("scope", type=_SCOPES)
@click.argument("subject", required=False)
@limit_options
@click.pass_context
def set_(
    ctx: click.Context,
    scope: str,
    subject: str | None,
    rpm: Any,
    tpm: Any,
    budget_usd: Any,
    budget_period: str | None,
) -> None:
    """Set the limits of SCOPE SUBJECT (the project needs no SUBJECT), replacing the config's.

    Limits not given are none: the subject's whole policy is replaced."""
    body = limit_fields(rpm=rpm, tpm=tpm, budget_usd=budget_usd, budget_period=budget_period)
    if (body.get("budget_usd") is None) != (body.get("budget_period") is None):
        raise click.UsageError("--budget-usd and --budget-period go together: give both or neither")
    policy = _client(ctx).request("PUT", _path(scope, subject), json=body)
    click.echo(f"Limits of {policy['scope']} {policy['subject']}: {describe_limits(policy)}.")


@limits_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the policies as JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the limits in force, from the config file and the API."""
    rows = _client(ctx).request("GET", "/limits")["data"]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        click.echo("No limits. Set one with: keel limits set customer NAME --rpm 60")
    else:
        click.echo(_table(rows))


@limits_group.command("delete")
@click.argument("scope", type=_SCOPES)
@click.argument("subject", required=False)
@click.pass_context
def delete(ctx: click.Context, scope: str, subject: str | None) -> None:
    """Delete the limits set through the API for SCOPE SUBJECT (the config's apply again)."""
    policy = _client(ctx).request("DELETE", _path(scope, subject))
    click.echo(f"Deleted the limits of {policy['scope']} {policy['subject']}.")


@limits_group.command("spend")
@click.argument("scope", type=click.Choice(["project", "key", "customer", "pipeline"]))
@click.argument("subject", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def spend(ctx: click.Context, scope: str, subject: str | None, as_json: bool) -> None:
    """Spend of a budget in its current period (a key is named by its id)."""
    data = _client(ctx).request("GET", _path(scope, subject) + "/spend")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(
        f"{data['scope']} {data['subject']}: {data['spent_usd']:.2f} USD spent, "
        f"{data['reserved_usd']:.2f} reserved, {data['remaining_usd']:.2f} left of "
        f"{data['budget_usd']:.2f} per {data['budget_period']}"
    )
