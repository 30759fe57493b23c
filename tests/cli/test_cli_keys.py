"""`keel keys …` against a real HTTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner, Result

from keel.cli.main import cli
from keel.keys import tokens
from tests.cli.conftest import ADMIN_KEY, ServeFn


def _run(url: str, *args: str, api_key: str | None = ADMIN_KEY) -> Result:
    env = {"KEEL_URL": url, "KEEL_API_KEY": api_key}
    result = CliRunner(env=env).invoke(cli, list(args))
    assert ADMIN_KEY not in result.output
    return result


def test_create_list_revoke(keel_url: str) -> None:
    created = _run(keel_url, "keys", "create", "--name", "web app", "--customer", "acme")
    assert created.exit_code == 0, created.output
    first, token = created.stdout.splitlines()
    parsed = tokens.parse(token)
    assert parsed is not None
    key_id = parsed[0]
    assert first == f"Created key {key_id} (web app):"
    assert created.stderr == (
        "Store this key now: Keel keeps only its hash and will not show it again.\n"
    )

    listed = _run(keel_url, "keys", "list")
    assert listed.exit_code == 0
    header, line = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "CUSTOMER",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "MODELS",
        "LIMITS",
    ]
    assert line.startswith(f"{key_id}  web app  acme      active  ")
    assert line.endswith("-        all     -")
    assert token not in listed.output

    revoked = _run(keel_url, "keys", "revoke", key_id)
    assert (revoked.exit_code, revoked.stdout) == (0, f"Revoked key {key_id} (web app).\n")
    empty = _run(keel_url, "keys", "list")
    assert empty.stdout == "No keys. Create one with: keel keys create --name NAME\n"
    everything = _run(keel_url, "keys", "list", "--all")
    assert "revoked" in everything.stdout.splitlines()[1]


def test_create_json_with_expiry_and_models(keel_url: str) -> None:
    result = _run(
        keel_url,
        "keys",
        "create",
        "--name",
        "ci",
        "--expires",
        "2099-12-31",
        "--model",
        "mock/echo",
        "--model",
        "gpt-4o",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["expires_at"] == "2099-12-31T00:00:00Z"
    assert data["allowed_models"] == ["mock/echo", "gpt-4o"]
    parsed = tokens.parse(data["key"])
    assert parsed is not None and parsed[0] == data["id"]
    assert "will not show it again" in result.stderr

    listed = json.loads(_run(keel_url, "keys", "list", "--json").stdout)
    assert listed == [{k: v for k, v in data.items() if k != "key"}]
    relative = _run(keel_url, "keys", "create", "--name", "b", "--expires", "30d", "--json")
    assert json.loads(relative.stdout)["expires_at"] is not None


def test_revoke_accepts_a_whole_key(keel_url: str) -> None:
    token = _run(keel_url, "keys", "create", "--name", "x").stdout.splitlines()[1]
    result = _run(keel_url, "keys", "revoke", token)
    assert result.exit_code == 0
    assert token not in result.output


def test_api_errors(keel_url: str) -> None:
    unknown = _run(keel_url, "keys", "revoke", "nosuchkey234")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: no API key with id nosuchkey234\n")
    missing = _run(keel_url, "keys", "list", api_key=None)
    assert missing.exit_code == 1
    assert missing.stderr == "error: missing API key: send Authorization: Bearer <key>\n"
    wrong = _run(keel_url, "keys", "list", api_key="not-the-admin-key")
    assert (wrong.exit_code, wrong.stderr) == (1, "error: invalid API key\n")
    assert "not-the-admin-key" not in wrong.output
    past = _run(keel_url, "keys", "create", "--name", "x", "--expires", "2001-01-01")
    assert (past.exit_code, past.stderr) == (1, "error: expires_at is in the past\n")


@pytest.mark.parametrize("value", ["soon", "0d", "-3d", "2099-13-01"])
def test_bad_expires_is_a_usage_error(keel_url: str, value: str) -> None:
    result = _run(keel_url, "keys", "create", "--name", "x", "--expires", value)
    assert result.exit_code == 2
    assert "--expires" in result.stderr


def test_bad_id_is_a_usage_error(keel_url: str) -> None:
    result = _run(keel_url, "keys", "revoke", "../requests")
    assert result.exit_code == 2 and "not a key id" in result.stderr


def test_url_and_api_key_options(keel_url: str) -> None:
    runner = CliRunner(env={"KEEL_URL": None, "KEEL_API_KEY": None})
    result = runner.invoke(cli, ["--url", keel_url, "--api-key", ADMIN_KEY, "keys", "list"])
    assert result.exit_code == 0, result.output
    assert ADMIN_KEY not in result.output


def test_open_mode(serve_keys: ServeFn) -> None:
    url = serve_keys(None)
    result = _run(url, "keys", "create", "--name", "x", api_key=None)
    assert result.exit_code == 0, result.output


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the CLI connects
    url = f"http://127.0.0.1:{port}"
    result = _run(url, "keys", "list")
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach Keel at {url}: is `keel serve` running?\n"


def test_help_never_shows_the_api_key() -> None:
    result = CliRunner(env={"KEEL_API_KEY": ADMIN_KEY}).invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert ADMIN_KEY not in result.output


def test_create_and_update_limits(keel_url: str) -> None:
    created = _run(
        keel_url,
        "keys",
        "create",
        "--name",
        "backend",
        "--rpm",
        "600",
        "--tpm",
        "200000",
        "--budget-usd",
        "50",
        "--budget-period",
        "month",
        "--json",
    )
    assert created.exit_code == 0, created.output
    info = json.loads(created.stdout)
    key_id = info["id"]
    assert [info[k] for k in ("rpm", "tpm", "budget_usd", "budget_period")] == [
        600,
        200000,
        50.0,
        "month",
    ]
    listed = _run(keel_url, "keys", "list").stdout.splitlines()[1]
    assert listed.endswith("all     600 rpm, 200000 tpm, 50.00 USD/month")

    updated = _run(keel_url, "keys", "update", key_id, "--rpm", "none", "--budget-usd", "10")
    assert (updated.exit_code, updated.stdout) == (
        0,
        f"Updated key {key_id} (backend): 200000 tpm, 10.00 USD/month.\n",
    )
    nothing = _run(keel_url, "keys", "update", key_id)
    assert nothing.exit_code == 2 and "give at least one of --rpm" in nothing.output
    bad = _run(keel_url, "keys", "update", key_id, "--budget-usd", "none")
    assert bad.exit_code == 1
    assert bad.stderr == "error: budget_usd and budget_period go together: give both or neither\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpm", "0"], "must be above 0, got 0"),
        (["--rpm", "1.5"], "'1.5' is not a whole number"),
        (["--budget-usd", "-2", "--budget-period", "day"], "must be above 0"),
        (["--budget-period", "week"], "'week' is not one of"),
    ],
)
def test_create_rejects_bad_limits(keel_url: str, args: list[str], message: str) -> None:
    result = _run(keel_url, "keys", "create", "--name", "x", *args)
    assert result.exit_code == 2
    assert message in result.output
