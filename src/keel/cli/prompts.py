"""`keel prompts`: prompts as code. Push a folder of prompt files, pull, diff, promote, roll back.

Files are read and written here (keel.prompts.files); everything else is a call to the running
Keel's `/api/v1/prompts` routes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from keel.cli.client import CliError, KeelClient
from keel.cli.output import print_json, table
from keel.prompts import files, render
from keel.prompts.model import PromptError

__all__ = ["prompts_group"]

_CONTENT = ("kind", "description", "messages", "template", "variables", "config")


def _client(ctx: click.Context) -> KeelClient:
    client = ctx.find_object(KeelClient)
    return client if client is not None else KeelClient()


def _path(name: str, *rest: str) -> str:
    return "/".join(["/prompts", quote(name, safe=""), *(quote(p, safe="") for p in rest)])


def _labels(labels: dict[str, int]) -> str:
    return ",".join(f"{label}={version}" for label, version in sorted(labels.items())) or "-"


@click.group("prompts")
def prompts_group() -> None:
    """Versioned prompts: push a folder of prompt files, label versions, diff, roll back."""


@prompts_group.command("push")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--message", "-m", help="What changed, kept with every new version.")
@click.pass_context
def push(ctx: click.Context, directory: Path, message: str | None) -> None:
    """Push every prompt file in DIR; unchanged prompts create no version."""
    try:
        loaded = files.load_dir(directory)
    except PromptError as exc:
        raise CliError(exc.message) from None
    for _name, content, source in loaded:
        try:
            render.validate(content)  # the server checks too; this names the file
        except PromptError as exc:
            raise CliError(f"{source}: {exc.message}") from None
    if not loaded:
        raise CliError(f"{directory}: no prompt files (*.yaml, *.yml)")
    client = _client(ctx)
    for name, content, _source in loaded:
        body = {"name": name, **content.to_json(), "message": message}
        answer = client.request("POST", "/prompts", json=body)
        state = "new" if answer["created"] else "unchanged"
        click.echo(f"{name}: version {answer['version']['version']} ({state})")


def _pull_one(client: KeelClient, summary: dict[str, Any], label: str | None) -> dict[str, Any]:
    if label is None:
        version = summary["latest_version"]
    elif label in summary["labels"]:
        version = summary["labels"][label]
    else:
        return {}
    found: dict[str, Any] = client.request("GET", _path(summary["name"], "versions", str(version)))
    return found


@prompts_group.command("pull")
@click.argument(
    "directory",
    metavar="[DIR]",
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--label", default="production", show_default=True, help="Pull this label.")
@click.option("--latest", is_flag=True, help="Pull the latest version instead of a label.")
@click.option("--name", "names", multiple=True, help="Only this prompt (repeat for more).")
@click.pass_context
def pull(
    ctx: click.Context, directory: Path, label: str, latest: bool, names: tuple[str, ...]
) -> None:
    """Write one prompt file (NAME.yaml) per prompt into DIR, at a label or the latest version."""
    client = _client(ctx)
    if names:
        summaries = [client.request("GET", _path(n)) for n in names]
    else:
        summaries = client.request("GET", "/prompts")["data"]
    directory.mkdir(parents=True, exist_ok=True)
    for summary in summaries:
        found = _pull_one(client, summary, None if latest else label)
        if not found:
            click.echo(f"{summary['name']}: skipped (no label {label!r})", err=True)
            continue
        target = directory / f"{summary['name']}.yaml"
        content = files.content_from_json({k: found[k] for k in _CONTENT if found[k] is not None})
        target.write_text(files.dump(summary["name"], content))
        click.echo(f"{summary['name']}: version {found['version']} -> {target}")


def _version_of(client: KeelClient, name: str, ref: str) -> int:
    """A version number given as such, or the version a label points at."""
    if ref.isdigit():
        return int(ref)
    labels: dict[str, int] = client.request("GET", _path(name))["labels"]
    if ref not in labels:
        raise CliError(f"{name} has no label {ref!r} (labels: {_labels(labels)})")
    return labels[ref]


def _show_diff(diff: dict[str, Any]) -> None:
    click.echo(f"{diff['prompt']}: version {diff['from']} -> version {diff['to']}")
    click.echo(diff["template"].rstrip("\n") if diff["template"] else "template: unchanged")
    for change in diff["config"]:
        before, after = (json.dumps(change[k]) for k in ("from", "to"))
        click.echo(f"config.{change['key']}: {before} -> {after}")
    if diff.get("variables"):
        click.echo(f"variables: {json.dumps(diff['variables'], ensure_ascii=False)}")


@prompts_group.command("diff")
@click.argument("name")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.pass_context
def diff(ctx: click.Context, name: str, a: str, b: str, as_json: bool) -> None:
    """Diff version A against version B (version numbers or label names)."""
    client = _client(ctx)
    params = {"from": _version_of(client, name, a), "to": _version_of(client, name, b)}
    answer = client.request("GET", _path(name, "diff"), params=params)
    if as_json:
        print_json(answer)
    else:
        _show_diff(answer)


def _describe(move: dict[str, Any]) -> str:
    was = f" (was {move['from_version']})" if move["from_version"] is not None else ""
    return f"{move['prompt']}: {move['label']} -> version {move['to_version']}{was}"


@prompts_group.command("promote")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--label", required=True, help="The label to move, e.g. production.")
@click.option(
    "--protect/--unprotect",
    default=None,
    help="Protect the label so only the admin key moves it (or lift that).",
)
@click.pass_context
def promote(ctx: click.Context, name: str, version: int, label: str, protect: bool | None) -> None:
    """Point LABEL of prompt NAME at VERSION (recorded in the label's history)."""
    body: dict[str, Any] = {"version": version, "protected": protect}
    move = _client(ctx).request("PUT", _path(name, "labels", label), json=body)
    click.echo(_describe(move))


@prompts_group.command("rollback")
@click.argument("name")
@click.option("--label", required=True, help="The label to move back, e.g. production.")
@click.pass_context
def rollback(ctx: click.Context, name: str, label: str) -> None:
    """Move LABEL of prompt NAME back to where it pointed before its last move."""
    move = _client(ctx).request("POST", _path(name, "labels", label, "rollback"))
    click.echo(_describe(move))


@prompts_group.command("history")
@click.argument("name")
@click.option("--label", help="Only this label's moves.")
@click.option("--json", "as_json", is_flag=True, help="Print the moves as JSON.")
@click.pass_context
def history(ctx: click.Context, name: str, label: str | None, as_json: bool) -> None:
    """Every label move of prompt NAME, newest first: when, who, from and to."""
    params = {"label": label} if label else None
    moves = _client(ctx).request("GET", _path(name, "history"), params=params)["data"]
    if as_json:
        print_json(moves)
    elif not moves:
        click.echo(f"No label moves for {name}.")
    else:
        rows = [
            [
                m["at"],
                m["label"],
                m["action"],
                "-" if m["from_version"] is None else str(m["from_version"]),
                str(m["to_version"]),
                m["actor"],
            ]
            for m in moves
        ]
        click.echo(table(["AT", "LABEL", "ACTION", "FROM", "TO", "ACTOR"], rows))


@prompts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the prompts as JSON.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every prompt with its latest version and its labels."""
    rows = _client(ctx).request("GET", "/prompts")["data"]
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("No prompts. Push a folder of prompt files with: keel prompts push DIR")
    else:
        listed = [[r["name"], str(r["latest_version"]), _labels(r["labels"])] for r in rows]
        click.echo(table(["NAME", "LATEST", "LABELS"], listed))
