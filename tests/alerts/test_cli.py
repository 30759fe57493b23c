"""`keel alerts …` against a real HTTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from keel.alerts import store
from keel.cli.main import cli
from keel.storage.database import Database
from tests.alerts.app import serve_alerts
from tests.servers import LoopThread

ADMIN_KEY = "admin-key-for-alert-cli-0123"
SLACK = "https://hooks.slack.com/services/T0/B0/SECRETTOKEN"


@pytest.fixture
def keel_url(database_url: str) -> Iterator[str]:
    with serve_alerts(database_url, ADMIN_KEY) as url:
        yield url


def _run(url: str, *args: str) -> Result:
    result = CliRunner(env={"KEEL_URL": url, "KEEL_API_KEY": ADMIN_KEY}).invoke(cli, list(args))
    assert ADMIN_KEY not in result.output
    assert "SECRETTOKEN" not in result.output
    return result


def test_create_list_show_update_enable_disable_delete(keel_url: str) -> None:
    assert _run(keel_url, "alerts", "list").stdout.startswith("No alert rules. Create one with:")
    created = _run(
        keel_url,
        "alerts",
        "create",
        "errors",
        "--metric",
        "error_rate",
        "--comparator",
        ">",
        "--threshold",
        "0.05",
        "--window",
        "5m",
        "--for",
        "1m",
        "--slack",
        SLACK,
        "--webhook",
        "http://127.0.0.1:9/hook",
        "--filter",
        "model=gpt-4o",
    )
    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("Created alert rule errors (")
    assert created.stdout.endswith("): error_rate > 0.05 over 300s for 60s [model=gpt-4o].\n")
    assert _run(keel_url, "alerts", "list").stdout.splitlines() == [
        "NAME    STATE  VALUE  CONDITION                                           CHANNELS",
        "errors  ok     -      error_rate > 0.05 over 300s for 60s [model=gpt-4o]  2",
    ]
    shown = _run(keel_url, "alerts", "show", "errors").stdout.splitlines()
    assert shown[1:] == [
        "  condition:  error_rate > 0.05 over 300s for 60s [model=gpt-4o]",
        "  channels:   webhook http://127.0.0.1:9/…, slack https://hooks.slack.com/…",
        "  enabled:    yes",
        "  state:      ok since -",
        "  last value: - at -",
    ]
    rule = json.loads(_run(keel_url, "alerts", "show", "errors", "--json").stdout)
    assert rule["window_s"] == 300 and rule["for_s"] == 60
    updated = _run(keel_url, "alerts", "update", "errors", "--threshold", "0.1", "--name", "errs")
    assert (
        updated.stdout
        == "Updated alert rule errs: error_rate > 0.1 over 300s for 60s [model=gpt-4o].\n"
    )
    assert _run(keel_url, "alerts", "disable", "errs").stdout == "Disabled alert rule errs.\n"
    listed = json.loads(_run(keel_url, "alerts", "list", "--json").stdout)
    assert [(r["name"], r["enabled"]) for r in listed] == [("errs", False)]
    assert _run(keel_url, "alerts", "enable", rule["id"]).stdout == "Enabled alert rule errs.\n"
    assert _run(keel_url, "alerts", "delete", "errs").stdout == "Deleted alert rule errs.\n"
    gone = _run(keel_url, "alerts", "delete", "errs")
    assert (gone.exit_code, gone.stderr) == (1, "error: no alert rule 'errs'\n")


def test_bad_input(keel_url: str) -> None:
    missing = _run(keel_url, "alerts", "create", "x", "--metric", "error_rate")
    assert missing.exit_code == 2 and "Missing option" in missing.output
    duration = _run(
        keel_url,
        "alerts",
        "create",
        "x",
        "--metric",
        "error_rate",
        "--comparator",
        ">",
        "--threshold",
        "1",
        "--window",
        "soon",
    )
    assert duration.exit_code == 2 and "'soon' is not a duration" in duration.output
    bad_metric = _run(
        keel_url,
        "alerts",
        "create",
        "x",
        "--metric",
        "nope",
        "--comparator",
        ">",
        "--threshold",
        "1",
        "--window",
        "60",
    )
    assert bad_metric.exit_code == 1
    assert bad_metric.stderr.startswith("error: unknown metric 'nope': use one of requests")
    bad_url = _run(
        keel_url,
        "alerts",
        "create",
        "x",
        "--metric",
        "errors",
        "--comparator",
        ">",
        "--threshold",
        "1",
        "--window",
        "60",
        "--slack",
        "ftp://hooks/SECRETTOKEN",
    )
    assert bad_url.stderr == (
        "error: channels[0].url must be an http:// or https:// URL with a host\n"
    )
    nothing = _run(keel_url, "alerts", "update", "x")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output


def test_history_and_test(keel_url: str, database_url: str) -> None:
    assert _run(keel_url, "alerts", "history").stdout == "No alert events.\n"
    _run(
        keel_url,
        "alerts",
        "create",
        "spend",
        "--metric",
        "cost_usd",
        "--comparator",
        ">=",
        "--threshold",
        "10",
        "--window",
        "1h",
        "--webhook",
        "http://127.0.0.1:9/refused",
    )

    async def add() -> None:
        db = await Database.open(database_url)
        rule = await store.get_rule(db, "spend")
        assert rule is not None
        delivery = {
            "channel": "http://127.0.0.1:9/…",
            "type": "webhook",
            "status": "failed",
            "attempts": 1,
            "error": "HTTP 500",
        }
        await store.add_event(
            db,
            rule_id=rule.id,
            rule_name="spend",
            kind="firing",
            at=1_790_000_000.0,
            value=12.5,
            threshold=10.0,
            message="m",
            deliveries=[delivery],
        )
        await db.close()

    loop = LoopThread()
    try:
        loop.run(add())
    finally:
        loop.close()
    assert _run(keel_url, "alerts", "history", "--rule", "spend").stdout.splitlines() == [
        "AT (UTC)             RULE   KIND    VALUE  SENT",
        "2026-09-21 14:13:20  spend  firing  12.5   0/1",
    ]
    events = json.loads(_run(keel_url, "alerts", "history", "--json").stdout)
    assert [e["kind"] for e in events] == ["firing"]
    tested = _run(keel_url, "alerts", "test", "spend")
    assert tested.exit_code == 1
    assert tested.stdout == (
        "webhook http://127.0.0.1:9/…: FAILED (connection failed (ConnectError)) "
        "after 1 attempt(s)\n"
    )
