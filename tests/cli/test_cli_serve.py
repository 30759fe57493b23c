"""`keel serve`: settings from options, environment and file, handed to keel.server.run."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.cli.main import cli
from keel.config import Settings

CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in ("KEEL_HOST", "KEEL_PORT", "KEEL_DATA_DIR", "KEEL_CONFIG", "KEEL_ADMIN_KEY")
}


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Settings that `keel serve` passed to a stand-in for keel.server.run."""
    calls: list[Settings] = []
    fake = types.ModuleType("keel.server")
    fake.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keel.server", fake)
    return calls


def test_serve_defaults(runs: list[Settings]) -> None:
    result = CliRunner(env=CLEAN_ENV).invoke(cli, ["serve"])
    assert result.exit_code == 0, result.output
    assert [(s.host, s.port, s.data_dir, s.config) for s in runs] == [
        ("127.0.0.1", 4000, ".keel", None)
    ]


def test_serve_options_win(runs: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("port: 5000\nlog_level: debug\n")
    env = {**CLEAN_ENV, "KEEL_HOST": "10.0.0.1"}
    args = ["serve", "--host", "0.0.0.0", "--port", "4100", "--config", str(config)]
    result = CliRunner(env=env).invoke(cli, [*args, "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    (settings,) = runs
    assert (settings.host, settings.port, settings.log_level) == ("0.0.0.0", 4100, "debug")
    assert (settings.data_dir, settings.config) == (str(tmp_path / "d"), str(config))


def test_serve_environment_and_file(runs: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("port: 5000\n")
    env = {**CLEAN_ENV, "KEEL_CONFIG": str(config), "KEEL_HOST": "127.0.0.2"}
    result = CliRunner(env=env).invoke(cli, ["serve"])
    assert result.exit_code == 0, result.output
    assert (runs[0].host, runs[0].port) == ("127.0.0.2", 5000)


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, ["--config", "/nonexistent/keel.yaml"], "error: cannot read config file"),
        ({"KEEL_PORT": "many"}, [], "error: setting port from KEEL_PORT"),
    ],
)
def test_serve_config_errors(
    runs: list[Settings], env: dict[str, str], args: list[str], message: str
) -> None:
    result = CliRunner(env={**CLEAN_ENV, **env}).invoke(cli, ["serve", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert runs == []


def test_bad_config_file(runs: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("nonsense: 1\n")
    result = CliRunner(env=CLEAN_ENV).invoke(cli, ["serve", "--config", str(config)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: unknown setting(s) in {config}: nonsense\n",
    )


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("keel, version ")
