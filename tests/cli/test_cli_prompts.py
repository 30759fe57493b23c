"""`keel prompts …` against a real HTTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.prompts import files
from tests.api.app import serve_prompts
from tests.cli.conftest import ADMIN_KEY

SUMMARIZE = """\
name: summarize
description: Summaries for the support inbox
messages:
  - {role: system, content: "You write summaries for {{ audience }}."}
  - {role: user, content: "{{ text }}"}
variables: [audience, text]
config: {model: fast, temperature: 0.2, max_tokens: 300}
"""
GREET = """\
name: greet
template: "Hello {{ who }}"
variables: [who]
"""


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    with serve_prompts(database_url, ADMIN_KEY) as running:
        yield running


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "prompts"
    path.mkdir()
    (path / "summarize.yaml").write_text(SUMMARIZE)
    (path / "greet.yaml").write_text(GREET)
    return path


def _run(url: str, *args: str) -> Result:
    result = CliRunner(env={"KEEL_URL": url, "KEEL_API_KEY": ADMIN_KEY}).invoke(cli, list(args))
    assert ADMIN_KEY not in result.output
    return result


def _ok(url: str, *args: str) -> str:
    result = _run(url, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_push_is_idempotent(url: str, folder: Path) -> None:
    assert _ok(url, "prompts", "push", str(folder)) == (
        "greet: version 1 (new)\nsummarize: version 1 (new)\n"
    )
    assert _ok(url, "prompts", "push", str(folder)) == (
        "greet: version 1 (unchanged)\nsummarize: version 1 (unchanged)\n"
    )
    (folder / "greet.yaml").write_text(GREET.replace("Hello", "Hi"))
    assert _ok(url, "prompts", "push", str(folder), "-m", "friendlier") == (
        "greet: version 2 (new)\nsummarize: version 1 (unchanged)\n"
    )
    listed = json.loads(_ok(url, "prompts", "list", "--json"))
    assert [(p["name"], p["latest_version"]) for p in listed] == [("greet", 2), ("summarize", 1)]
    shown = json.loads(_ok(url, "prompts", "history", "greet", "--json"))
    assert shown == []


def test_a_bad_file_stops_the_push_before_anything_is_sent(url: str, folder: Path) -> None:
    (folder / "broken.yaml").write_text("name: broken\ntemplate: [unclosed\n")
    result = _run(url, "prompts", "push", str(folder))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "broken.yaml" in result.stderr
    assert result.stdout == ""
    (folder / "broken.yaml").write_text("name: broken\ntemplate: \"{{ ''.__class__ }}\"\n")
    unsafe = _run(url, "prompts", "push", str(folder))
    assert unsafe.exit_code == 1 and unsafe.stderr.startswith(f"error: {folder / 'broken.yaml'}: ")
    assert _ok(url, "prompts", "list") == (
        "No prompts. Push a folder of prompt files with: keel prompts push DIR\n"
    )


def test_promote_rollback_history_diff_pull(url: str, folder: Path, tmp_path: Path) -> None:
    _ok(url, "prompts", "push", str(folder))
    (folder / "summarize.yaml").write_text(
        SUMMARIZE.replace("temperature: 0.2", "temperature: 0.7")
    )
    _ok(url, "prompts", "push", str(folder))

    assert _ok(url, "prompts", "promote", "summarize", "1", "--label", "production") == (
        "summarize: production -> version 1\n"
    )
    assert _ok(url, "prompts", "promote", "summarize", "2", "--label", "production") == (
        "summarize: production -> version 2 (was 1)\n"
    )
    assert _ok(url, "prompts", "list") == (
        "NAME       LATEST  LABELS\ngreet      1       -\nsummarize  2       production=2\n"
    )
    diff = _ok(url, "prompts", "diff", "summarize", "1", "production")
    assert diff.splitlines()[0] == "summarize: version 1 -> version 2"
    assert "config.temperature: 0.2 -> 0.7" in diff
    as_json = json.loads(_ok(url, "prompts", "diff", "summarize", "1", "2", "--json"))
    assert as_json["config"] == [{"key": "temperature", "from": 0.2, "to": 0.7}]
    missing = _run(url, "prompts", "diff", "summarize", "1", "staging")
    assert (missing.exit_code, missing.stderr) == (
        1,
        "error: summarize has no label 'staging' (labels: production=2)\n",
    )

    assert _ok(url, "prompts", "rollback", "summarize", "--label", "production") == (
        "summarize: production -> version 1 (was 2)\n"
    )
    history = _ok(url, "prompts", "history", "summarize").splitlines()
    assert history[0].split() == ["AT", "LABEL", "ACTION", "FROM", "TO", "ACTOR"]
    assert [line.split()[1:] for line in history[1:]] == [
        ["production", "rollback", "2", "1", "admin"],
        ["production", "promote", "1", "2", "admin"],
        ["production", "promote", "-", "1", "admin"],
    ]

    out = tmp_path / "pulled"
    pulled = _run(url, "prompts", "pull", str(out))
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout == f"summarize: version 1 -> {out / 'summarize.yaml'}\n"
    assert pulled.stderr == "greet: skipped (no label 'production')\n"
    name, content = files.load_file(out / "summarize.yaml")
    assert name == "summarize" and content.config["temperature"] == 0.2
    assert [p.name for p in out.iterdir()] == ["summarize.yaml"]

    latest = tmp_path / "latest"
    _ok(url, "prompts", "pull", str(latest), "--latest", "--name", "summarize")
    assert files.load_file(latest / "summarize.yaml")[1].config["temperature"] == 0.7
    # pushing what was pulled changes nothing
    assert _ok(url, "prompts", "push", str(latest)) == "summarize: version 2 (unchanged)\n"


def test_errors_of_the_api_are_shown(url: str) -> None:
    unknown = _run(url, "prompts", "history", "nothing")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: ")
    rollback = _run(url, "prompts", "rollback", "nothing", "--label", "production")
    assert rollback.exit_code == 1 and rollback.stderr.startswith("error: ")
    usage = _run(url, "prompts", "promote", "summarize", "1")
    assert usage.exit_code == 2 and "--label" in usage.output
