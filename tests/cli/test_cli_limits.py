"""`keel limits …` against a real HTTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from keel.cli.main import cli
from tests.cli.conftest import ADMIN_KEY


def _run(url: str, *args: str) -> Result:
    result = CliRunner(env={"KEEL_URL": url, "KEEL_API_KEY": ADMIN_KEY}).invoke(cli, list(args))
    assert ADMIN_KEY not in result.output
    return result


def test_set_list_delete(keel_url: str) -> None:
    assert _run(keel_url, "limits", "list").stdout == (
        "No limits. Set one with: keel limits set customer NAME --rpm 60\n"
    )
    acme = _run(
        keel_url,
        "limits",
        "set",
        "customer",
        "acme",
        "--rpm",
        "60",
        "--budget-usd",
        "20",
        "--budget-period",
        "month",
    )
    assert (acme.exit_code, acme.stdout) == (
        0,
        "Limits of customer acme: 60 rpm, 20.00 USD/month.\n",
    )
    project = _run(
        keel_url, "limits", "set", "project", "--budget-usd", "500", "--budget-period", "month"
    )
    assert project.stdout == "Limits of project default: 500.00 USD/month.\n"
    listed = _run(keel_url, "limits", "list")
    assert listed.stdout.splitlines() == [
        "SCOPE     SUBJECT  LIMITS                   SOURCE",
        "project   default  500.00 USD/month         api",
        "customer  acme     60 rpm, 20.00 USD/month  api",
    ]
    rows = json.loads(_run(keel_url, "limits", "list", "--json").stdout)
    assert [(r["scope"], r["subject"], r["rpm"]) for r in rows] == [
        ("project", "default", None),
        ("customer", "acme", 60),
    ]
    spend = _run(keel_url, "limits", "spend", "customer", "acme")
    assert spend.stdout == (
        "customer acme: 0.00 USD spent, 0.00 reserved, 20.00 left of 20.00 per month\n"
    )
    deleted = _run(keel_url, "limits", "delete", "customer", "acme")
    assert deleted.stdout == "Deleted the limits of customer acme.\n"
    gone = _run(keel_url, "limits", "delete", "customer", "acme")
    assert (gone.exit_code, gone.stderr) == (1, "error: no limits for customer 'acme'\n")


def test_bad_input(keel_url: str) -> None:
    no_subject = _run(keel_url, "limits", "set", "customer", "--rpm", "1")
    assert no_subject.exit_code == 2 and "name the customer" in no_subject.output
    bad_scope = _run(keel_url, "limits", "set", "team", "a", "--rpm", "1")
    assert bad_scope.exit_code == 2
    no_period = _run(keel_url, "limits", "set", "customer", "a", "--budget-usd", "1")
    assert no_period.exit_code == 2
    assert "--budget-usd and --budget-period go together" in no_period.output
