"""`keel traces`: list traces and show one as an indented tree, through a running Keel's
`/api/v1/traces` routes (admin key)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import click

from keel.cli.client import KeelClient
from keel.cli.output import print_json, table

__all__ = ["span_tree", "traces_group"]


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _when(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ")[:19]


def span_tree(spans: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Spans in tree order with their depth: children under their parent, by start time.

    A span whose parent is not in the trace is shown at the top level.
    """
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        key = parent if parent in ids and parent != span["span_id"] else None
        children.setdefault(key, []).append(span)
    ordered: list[tuple[dict[str, Any], int]] = []
    seen: set[str] = set()
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        if span["span_id"] in seen:
            continue
        seen.add(span["span_id"])
        ordered.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(span["span_id"], [])))
    ordered += [(s, 0) for s in spans if s["span_id"] not in seen]  # cycles, if any
    return ordered


def _span_line(span: dict[str, Any], depth: int) -> str:
    parts = [f"{'  ' * depth}{span['name']}", f"[{span['kind']}, {span['source']}]"]
    parts.append(_ms(span.get("duration_ms")))
    if span.get("model"):
        parts.append(str(span["model"]))
    if span.get("tokens") is not None:
        parts.append(f"{span['tokens']} tokens")
    if span.get("cost_usd") is not None:
        parts.append(_cost(span["cost_usd"]))
    if span.get("status") == "error":
        parts.append(f"ERROR: {span.get('error') or 'failed'}")
    return "  ".join(parts)


@click.group("traces")
def traces_group() -> None:
    """Read traces: spans ingested over OTLP and the gateway's calls, joined by trace id."""


@traces_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--since", help="Unix seconds or ISO 8601.")
@click.option("--until", help="Unix seconds or ISO 8601.")
@click.option("--session", "session_id", help="Only traces of this session.")
@click.option("--customer", help="Only traces whose root span is for this customer.")
@click.option("--name", help="Only traces whose root span has this name.")
@click.option("--status", type=click.Choice(["ok", "error"]), help="error: any span failed.")
@click.option("--cursor", help="Continue after the previous page (printed at its end).")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@click.pass_context
def list_(ctx: click.Context, /, as_json: bool, **options: Any) -> None:
    """Traces, newest first."""
    params = {k: v for k, v in options.items() if v is not None}
    page = _client(ctx).request("GET", "/traces", params=params)
    if as_json:
        print_json(page)
        return
    rows = page["data"]
    if not rows:
        click.echo("No traces.")
        return
    click.echo(
        table(
            ["TRACE", "START (UTC)", "NAME", "SPANS", "DURATION", "TOKENS", "COST", "STATUS"],
            [
                [
                    r["trace_id"],
                    _when(r["start_time"]),
                    str(r["name"] or "-"),
                    str(r["span_count"]),
                    _ms(r["duration_ms"]),
                    str(r["tokens"]),
                    _cost(r["cost_usd"]),
                    "error" if r["error"] else "ok",
                ]
                for r in rows
            ],
        )
    )
    if page.get("next_cursor"):
        click.echo(f"More: keel traces list --cursor {page['next_cursor']}", err=True)


@traces_group.command("show")
@click.argument("trace_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.pass_context
def show(ctx: click.Context, trace_id: str, as_json: bool) -> None:
    """One trace as an indented tree of its spans, and its scores."""
    trace = _client(ctx).request("GET", f"/traces/{quote(trace_id, safe='')}")
    if as_json:
        print_json(trace)
        return
    spans = trace["spans"]
    click.echo(f"Trace {trace['trace_id']}: {len(spans)} spans")
    for span, depth in span_tree(spans):
        click.echo(_span_line(span, depth))
    if trace["scores"]:
        click.echo("Scores:")
        for score in trace["scores"]:
            value = score["label"] if score["data_type"] == "categorical" else score["value"]
            where = f" (span {score['span_id']})" if score["span_id"] else ""
            click.echo(f"  {score['name']} = {value} [{score['source']}]{where}")
