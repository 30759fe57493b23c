"""`keel traces list` and `keel traces show` against the trace routes on a real loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI

from keel.cli.main import cli
from keel.keys.auth import Authenticator
from keel.scores import store as scores
from keel.storage.batch import write_batch
from keel.storage.database import Database
from tests.analytics.helpers import build_app
from tests.cli.conftest import _serve
from tests.traces.test_store_reads import TRACE, _agent_trace

pytestmark = pytest.mark.timeout(60)

ADMIN_KEY = "admin-key-for-trace-cli-0123"


async def _seed(database_url: str) -> None:
    db = await Database.open(database_url)
    try:
        await write_batch(db, _agent_trace())  # type: ignore[arg-type]
        failed = _agent_trace("cd" * 16, 1_700_000_100.0)
        failed[0].status, failed[0].error = "error", "tool timed out"  # type: ignore[attr-defined]
        await write_batch(db, failed)  # type: ignore[arg-type]
        await scores.add_score(db, trace_id=TRACE, name="tone", data_type="categorical", label="ok")
    finally:
        await db.close()


def _app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await Database.open(database_url)
        authenticator = Authenticator(db.engine, ADMIN_KEY)
        await authenticator.start()
        app.mount("/", build_app(db, authenticator))
        yield
        await db.close()

    return FastAPI(lifespan=lifespan)


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    asyncio.run(_seed(database_url))
    with _serve(_app(database_url)) as served:
        yield served


def _run(url: str, *args: str) -> Result:
    return CliRunner(env={"KEEL_URL": url, "KEEL_API_KEY": ADMIN_KEY}).invoke(cli, list(args))


def test_list_prints_a_table_and_pages(url: str) -> None:
    result = _run(url, "traces", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "TRACE", "START", "(UTC)", "NAME", "SPANS", "DURATION", "TOKENS", "COST", "STATUS"
    ]  # fmt: skip
    assert lines[1].split()[:1] == ["cd" * 16] and lines[1].endswith("error")
    assert lines[2].split() == [
        TRACE, "2023-11-14", "22:13:20", "agent", "run", "3", "2.00", "s", "46", "$0.000123", "ok"
    ]  # fmt: skip
    paged = _run(url, "traces", "list", "--limit", "1", "--json")
    page = json.loads(paged.output)
    assert [t["trace_id"] for t in page["data"]] == ["cd" * 16]
    rest = _run(url, "traces", "list", "--limit", "1", "--cursor", page["next_cursor"])
    assert TRACE in rest.output
    assert _run(url, "traces", "list", "--status", "error").output.count("\n") == 2
    bad = _run(url, "traces", "list", "--cursor", "nope")
    assert bad.exit_code == 1 and "invalid cursor" in bad.output


def test_show_prints_the_span_tree_and_scores(url: str) -> None:
    result = _run(url, "traces", "show", TRACE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Trace {TRACE}: 3 spans",
        "agent run  [agent, otlp]  2.00 s",
        "  openai.chat  [llm, otlp]  1.40 s  gpt-4o-mini  46 tokens  $0.000123",
        "    chat.completions gpt-4o-mini  [llm, gateway]  120.5 ms  gpt-4o-mini  46 tokens"
        "  $0.000123",
        "Scores:",
        "  tone = ok [human]",
    ]
    failed = _run(url, "traces", "show", "cd" * 16)
    assert "agent run  [agent, otlp]  2.00 s  ERROR: tool timed out" in failed.output
    missing = _run(url, "traces", "show", "0" * 32)
    assert missing.exit_code == 1 and "no trace" in missing.output
