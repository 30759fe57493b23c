"""`keel alerts`: alert rules (create, list, show, update, enable, disable, delete, test) and
their history, through a running Keel's `/api/v1/alerts` routes (admin key)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import click

from keel.cli.client import KeelClient
from keel.cli.output import print_json, table

__all__ = ["alerts_group", "parse_duration"]

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(value: str, hint: str) -> int:
    """`90`, `90s`, `5m`, `1h`, `1d` as whole seconds."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a duration (90, 90s, 5m, 1h, 1d)", param_hint=hint
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _path(ref: str, *rest: str) -> str:
    return "/".join(["/alerts/rules", quote(ref, safe=""), *rest])


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _condition(rule: dict[str, Any]) -> str:
    text = f"{rule['metric']} {rule['comparator']} {rule['threshold']:g} over {rule['window_s']}s"
    if rule["for_s"]:
        text += f" for {rule['for_s']}s"
    filters = ",".join(f"{k}={v}" for k, v in sorted(rule["filters"].items()))
    return f"{text} [{filters}]" if filters else text


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _filters(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--filter")
        out[key.strip()] = value.strip()
    return out


def _rule_options(required: bool) -> Callable[[F], F]:
    """The options that set a rule's fields (required ones only when creating)."""
    options = [
        click.option("--metric", required=required, help="error_rate, latency_p95, cost_usd, …"),
        click.option(
            "--comparator",
            type=click.Choice([">", ">=", "<", "<="]),
            required=required,
            help="How the value compares with the threshold to fire.",
        ),
        click.option("--threshold", type=float, required=required, help="The threshold."),
        click.option(
            "--window",
            "window",
            required=required,
            help="Window the metric is computed over (60, 5m, 1h).",
        ),
        click.option(
            "--for",
            "for_",
            help="How long the condition holds before firing (0, 2m).  [default: 0]",
        ),
        click.option("--webhook", multiple=True, help="JSON webhook URL (repeatable)."),
        click.option("--slack", multiple=True, help="Slack incoming-webhook URL (repeatable)."),
        click.option(
            "--filter",
            "filter_",
            multiple=True,
            help="key=value: model, provider, pipeline, customer, key_id, prompt, tag, source "
            "(repeatable).",
        ),
    ]

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _fields(
    *,
    metric: str | None,
    comparator: str | None,
    threshold: float | None,
    window: str | None,
    for_: str | None,
    webhook: tuple[str, ...],
    slack: tuple[str, ...],
    filter_: tuple[str, ...],
) -> dict[str, Any]:
    body: dict[str, Any] = {"metric": metric, "comparator": comparator, "threshold": threshold}
    body = {k: v for k, v in body.items() if v is not None}
    if window is not None:
        body["window_s"] = parse_duration(window, "--window")
    if for_ is not None:
        body["for_s"] = parse_duration(for_, "--for")
    if webhook or slack:
        body["channels"] = [{"type": "webhook", "url": u} for u in webhook] + [
            {"type": "slack", "url": u} for u in slack
        ]
    if filter_:
        body["filters"] = _filters(filter_)
    return body


def _describe(rule: dict[str, Any]) -> str:
    channels = ", ".join(f"{c['type']} {c['url']}" for c in rule["channels"]) or "none"
    lines = [
        f"Rule {rule['name']} ({rule['id']})",
        f"  condition:  {_condition(rule)}",
        f"  channels:   {channels}",
        f"  enabled:    {'yes' if rule['enabled'] else 'no'}",
        f"  state:      {rule['state']} since {_when(rule['state_since'])}",
        f"  last value: {_value(rule['last_value'])} at {_when(rule['last_evaluated_at'])}",
    ]
    return "\n".join(lines)


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules on error rate, latency, cost… with webhook and Slack notifications."""


@alerts_group.command("create")
@click.argument("name")
@_rule_options(required=True)
@click.option("--disabled", is_flag=True, help="Create the rule disabled.")
@click.pass_context
def create(ctx: click.Context, /, name: str, disabled: bool, **options: Any) -> None:
    """Create the alert rule NAME."""
    body = {"name": name, **_fields(**options), "enabled": not disabled}
    rule = _client(ctx).request("POST", "/alerts/rules", json=body)
    click.echo(f"Created alert rule {rule['name']} ({rule['id']}): {_condition(rule)}.")


@alerts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the alert rules with their state."""
    rules = _client(ctx).request("GET", "/alerts/rules")["data"]
    if as_json:
        print_json(rules)
    elif not rules:
        click.echo(
            "No alert rules. Create one with: keel alerts create NAME --metric error_rate "
            "--comparator '>' --threshold 0.05 --window 5m --webhook URL"
        )
    else:
        rows = [
            [
                r["name"],
                r["state"] if r["enabled"] else "disabled",
                _value(r["last_value"]),
                _condition(r),
                str(len(r["channels"])),
            ]
            for r in rules
        ]
        click.echo(table(["NAME", "STATE", "VALUE", "CONDITION", "CHANNELS"], rows))


@alerts_group.command("show")
@click.argument("rule")
@click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON.")
@click.pass_context
def show(ctx: click.Context, rule: str, as_json: bool) -> None:
    """Show RULE (id or name)."""
    data = _client(ctx).request("GET", _path(rule))
    if as_json:
        print_json(data)
    else:
        click.echo(_describe(data))


@alerts_group.command("update")
@click.argument("rule")
@click.option("--name", "new_name", help="Rename the rule.")
@_rule_options(required=False)
@click.pass_context
def update(ctx: click.Context, /, rule: str, new_name: str | None, **options: Any) -> None:
    """Change fields of RULE; --webhook/--slack replace all its channels."""
    body = _fields(**options)
    if new_name is not None:
        body["name"] = new_name
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    data = _client(ctx).request("PATCH", _path(rule), json=body)
    click.echo(f"Updated alert rule {data['name']}: {_condition(data)}.")


def _set_enabled(ctx: click.Context, rule: str, enabled: bool) -> None:
    data = _client(ctx).request("PATCH", _path(rule), json={"enabled": enabled})
    click.echo(f"{'Enabled' if enabled else 'Disabled'} alert rule {data['name']}.")


@alerts_group.command("enable")
@click.argument("rule")
@click.pass_context
def enable(ctx: click.Context, rule: str) -> None:
    """Enable RULE."""
    _set_enabled(ctx, rule, True)


@alerts_group.command("disable")
@click.argument("rule")
@click.pass_context
def disable(ctx: click.Context, rule: str) -> None:
    """Disable RULE (it goes back to ok without notifying)."""
    _set_enabled(ctx, rule, False)


@alerts_group.command("delete")
@click.argument("rule")
@click.pass_context
def delete(ctx: click.Context, rule: str) -> None:
    """Delete RULE (its history stays)."""
    data = _client(ctx).request("DELETE", _path(rule))
    click.echo(f"Deleted alert rule {data['name']}.")


@alerts_group.command("history")
@click.option("--rule", help="Only this rule's events (id or name).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@click.pass_context
def history(ctx: click.Context, rule: str | None, limit: int, as_json: bool) -> None:
    """Firing, resolved and budget threshold events, latest first."""
    params: dict[str, Any] = {"limit": limit}
    if rule is not None:
        params["rule"] = rule
    events = _client(ctx).request("GET", "/alerts/events", params=params)["data"]
    if as_json:
        print_json(events)
        return
    if not events:
        click.echo("No alert events.")
        return
    rows = []
    for e in events:
        sent = sum(1 for d in e["deliveries"] if d["status"] == "sent")
        rows.append(
            [
                _when(e["at"]),
                e["rule_name"],
                e["kind"],
                _value(e["value"]),
                f"{sent}/{len(e['deliveries'])}",
            ]
        )
    click.echo(table(["AT (UTC)", "RULE", "KIND", "VALUE", "SENT"], rows))


@alerts_group.command("test")
@click.argument("rule")
@click.pass_context
def test(ctx: click.Context, rule: str) -> None:
    """Send a test notification to every channel of RULE."""
    data = _client(ctx).request("POST", _path(rule, "test"))
    if not data["deliveries"]:
        click.echo(f"Alert rule {data['rule']} has no channels.")
    for d in data["deliveries"]:
        outcome = "sent" if d["status"] == "sent" else f"FAILED ({d['error']})"
        click.echo(f"{d['type']} {d['channel']}: {outcome} after {d['attempts']} attempt(s)")
    if any(d["status"] != "sent" for d in data["deliveries"]):
        ctx.exit(1)
