"""Every setting, route and CLI command is documented (datasette-style docs test)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from keel.api.app import build_api
from keel.cli.main import cli
from keel.config import SETTINGS, Settings
from keel.runtime import Runtime

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


def _normalised(route: str) -> str:
    """`GET /api/v1/keys/{key_id}` and `GET /api/v1/keys/{id}` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", route)


def _api_routes() -> list[str]:
    paths = build_api(Runtime(Settings())).openapi()["paths"]
    return [
        f"{method.upper()} /api/v1{path}" for path, methods in paths.items() for method in methods
    ]


def test_every_route_is_documented() -> None:
    api_doc = (DOCS / "api.md").read_text()
    documented = {
        _normalised(m) for m in re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`]*)`", api_doc)
    }
    routes = [
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "POST /v1/traces",
        "GET /healthz",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        *_api_routes(),
    ]
    assert len(routes) > 40
    assert [r for r in routes if _normalised(r) not in documented] == []


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
