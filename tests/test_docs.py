"""Every setting, route and CLI command is documented (datasette-style docs test)."""

from __future__ import annotations

from pathlib import Path

import click

from keel.cli.main import cli
from keel.config import SETTINGS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _all_docs() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


def test_every_setting_is_documented() -> None:
    settings_doc = (DOCS / "settings.md").read_text()
    missing = [
        s.name
        for s in SETTINGS
        if f"`{s.name}`" not in settings_doc or f"`{s.env}`" not in settings_doc
    ]
    assert missing == []


def test_every_route_is_documented() -> None:
    api_doc = (DOCS / "api.md").read_text()
    routes = [
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /healthz",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        "GET /api/v1/requests",
        "GET /api/v1/requests/{id}",
        "GET /api/v1/requests/{id}/payload",
        "POST /api/v1/keys",
        "GET /api/v1/keys",
        "GET /api/v1/keys/{id}",
        "POST /api/v1/keys/{id}/revoke",
        "DELETE /api/v1/keys/{id}",
        "PATCH /api/v1/keys/{id}",
        "GET /api/v1/circuits",
        "GET /api/v1/limits",
        "GET /api/v1/limits/{scope}/{subject}",
        "PUT /api/v1/limits/{scope}/{subject}",
        "DELETE /api/v1/limits/{scope}/{subject}",
        "GET /api/v1/limits/{scope}/{subject}/spend",
        "GET /api/v1/prompts",
        "POST /api/v1/prompts",
        "GET /api/v1/prompts/{name}",
        "GET /api/v1/prompts/{name}/versions/{version}",
        "GET /api/v1/prompts/{name}/resolve",
        "GET /api/v1/prompts/{name}/diff",
        "PUT /api/v1/prompts/{name}/labels/{label}",
        "POST /api/v1/prompts/{name}/labels/{label}/rollback",
        "GET /api/v1/prompts/{name}/history",
        "POST /api/v1/prompts/render",
        "GET /api/v1/events",
    ]
    assert [r for r in routes if f"`{r}`" not in api_doc] == []


def _commands(group: click.Group, prefix: str) -> list[str]:
    out = []
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        out.append(full)
        if isinstance(command, click.Group):
            out += _commands(command, full)
    return out


def test_every_cli_command_is_documented() -> None:
    text = _all_docs()
    assert [c for c in _commands(cli, "keel") if f"`{c}" not in text] == []
