"""`keel demo` against a real `keel serve`: what it planned lands as records, spans, sessions,
scores and an alert rule; its progress and summary are shown; an unreachable Keel is one line."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from keel.cli.demo import _costs
from keel.cli.main import cli
from keel.costs.pricing import mock_model_kind
from keel.demo.progress import Progress
from keel.demo.runner import Tally
from keel.demo.scenario import (
    AGENT_CHAT_MODEL,
    AGENT_EMBED_MODEL,
    CHAT_MODELS,
    ECHO_MODEL,
    EMBED_MODEL,
    KNOB_SPACING_S,
    MODELS,
    PROMPT_NAME,
    Call,
    Plan,
    Turn,
    plan,
)
from keel.providers.mock import LISTED_MODELS
from tests.servers import KEEL_BIN, KeelProcess, free_port

pytestmark = pytest.mark.timeout(120)

ADMIN_KEY = "admin-key-for-demo-tests-0123"
SEED, CALLS, DURATION = 5, 60, 5.0


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    server = KeelProcess(tmp_path_factory.mktemp("demo"), env={"KEEL_ADMIN_KEY": ADMIN_KEY})
    server.start(timeout=60)  # a loaded CI machine can take a while
    try:
        yield server
    finally:
        server.stop()


def _demo(url: str, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_URL"] = url
    if key is not None:
        env["KEEL_API_KEY"] = key
    return subprocess.run(
        [KEEL_BIN, "demo", *args], env=env, capture_output=True, text=True, timeout=90
    )


@pytest.fixture(scope="module")
def run(keel: KeelProcess) -> subprocess.CompletedProcess[str]:
    args = ("--duration", str(DURATION), "--requests", str(CALLS), "--seed", str(SEED))
    return _demo(keel.url, ADMIN_KEY, *args)


@pytest.fixture(scope="module")
def expected() -> Plan:
    return plan(SEED, CALLS, DURATION)


def _api(keel: KeelProcess, path: str, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = httpx.get(f"{keel.url}/api/v1{path}", params=params, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def _api_open(keel: KeelProcess, path: str) -> Any:
    return httpx.get(f"{keel.url}/api/v1{path}", timeout=10).json()


def _records(keel: KeelProcess) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:  # the record writer stores batches in the background
        records: list[dict[str, Any]] = _api(keel, "/requests", limit=1000)["data"]
        if len(records) >= CALLS or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _turns(demo: Plan) -> list[Turn]:
    return [s for s in demo.steps if isinstance(s, Turn)]


def _calls(demo: Plan) -> list[Call]:
    return [s for s in demo.steps if isinstance(s, Call)]


def test_summary_and_progress(run: subprocess.CompletedProcess[str], expected: Plan) -> None:
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"keel demo sent {CALLS} gateway calls to http://127.0.0.1:")
    planned = sum(c.expect_error for c in _calls(expected))
    planned += sum(t.llm_fails for t in _turns(expected))
    assert f"errors:  {planned} planned, 0 unexpected" in run.stdout
    turns = _turns(expected)
    failing = sum(t.tool_fails or t.llm_fails for t in turns)
    unanswered = sum(t.tool_fails for t in turns)
    assert (
        f"{len(turns)} agent turns in {expected.sessions} sessions, "
        f"{failing} with a failed span ({unanswered} unanswered)"
    ) in run.stdout
    assert "/traces/" in run.stdout and f"/prompts/{PROMPT_NAME}" in run.stdout
    costs = run.stdout.split("  costs:   $", 1)[1].split("\n")
    assert float(costs[0].split()[0]) > 0, costs
    assert costs[0].endswith(" for the plain calls; streamed ones are priced too (see /costs)")
    assert (
        costs[1]
        == "           at the models' list prices (the price book, or this Keel's `prices:`)"
    )
    # progress on standard error, a line per tenth when it is not a terminal
    lines = [line for line in run.stderr.splitlines() if line.startswith("keel demo: ")]
    assert lines[0] == f"keel demo: {CALLS} gateway calls to send"
    assert lines[-1].startswith(f"keel demo: {CALLS}/{CALLS} calls")
    assert len(lines) == 11
    assert "Traceback" not in run.stderr
    assert ADMIN_KEY not in run.stdout + run.stderr


def test_records_are_what_was_planned(
    run: subprocess.CompletedProcess[str], keel: KeelProcess, expected: Plan
) -> None:
    records = _records(keel)
    calls, turns = _calls(expected), _turns(expected)
    models = Counter(c.model for c in calls)
    for t in turns:
        models[AGENT_EMBED_MODEL] += 1
        models[AGENT_CHAT_MODEL] += t.calls - 1
    assert Counter(r["model"] for r in records) == models
    failed = [r for r in records if r["status_code"] >= 400 or r["error"]]
    assert len(failed) == sum(c.expect_error for c in calls) + sum(t.llm_fails for t in turns)
    assert {r["customer"] for r in records} == {c.customer for c in calls} | {
        t.customer for t in turns
    }
    assert {r["pipeline"] for r in records} == {c.pipeline for c in calls} | {"support-agent"}
    tags = {tag for r in records for tag in r["tags"]}
    assert tags == {tag for step in expected.steps for tag in step.tags}
    prompted = Counter(r["prompt_version"] for r in records if r["prompt_name"] == PROMPT_NAME)
    assert prompted == Counter(
        c.prompt.version or 2 for c in calls if c.prompt is not None and not c.expect_error
    )
    streamed = sum(c.stream for c in calls) + sum(t.stream or t.llm_fails for t in turns)
    assert sum(r["stream"] for r in records) == streamed
    # the agent's calls are children of its spans; the others start their own traces
    joined = [r for r in records if r["parent_span_id"] is not None]
    assert len(joined) == sum(t.calls for t in turns)


def test_priced_models_cost_and_free_ones_do_not(
    run: subprocess.CompletedProcess[str], keel: KeelProcess
) -> None:
    """The costs page has spend to show: every priced stand-in the demo called cost something."""
    answered = [r for r in _records(keel) if r["status_code"] == 200 and r["input_tokens"]]
    spend: dict[str, float] = {}
    for r in answered:
        spend[r["model"]] = spend.get(r["model"], 0.0) + r["cost_usd"]
    priced = {m for m in MODELS if mock_model_kind(m.removeprefix("mock/"))}
    assert priced == set(MODELS) - {ECHO_MODEL, EMBED_MODEL}
    assert len(priced) >= 4 and priced <= set(spend)
    assert all(spend[m] > 0 for m in priced), spend
    assert spend[ECHO_MODEL] == 0.0 and spend[EMBED_MODEL] == 0.0
    assert sum(spend.values()) > 0.001  # cents, not dust: a newcomer sees real numbers


def test_traces_sessions_and_scores(
    run: subprocess.CompletedProcess[str], keel: KeelProcess, expected: Plan
) -> None:
    turns = _turns(expected)

    deadline = time.monotonic() + 15
    while True:  # spans are stored in the background after Keel accepted them
        traces = _api(keel, "/traces", name="support-agent", limit=1000)["data"]
        if len(traces) >= len(turns) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    sessions = _api(keel, "/sessions", limit=1000)["data"]
    scores = _api(keel, "/scores", limit=1000)["data"]
    assert len(traces) == len(turns)
    # a failed tool fails the turn; a broken stream fails a span of a turn that then answers
    assert sum(t["error"] for t in traces) == sum(t.tool_fails or t.llm_fails for t in turns)
    assert len(sessions) == expected.sessions
    assert sum(s["trace_count"] for s in sessions) == len(turns)
    assert all(s["session_id"].startswith("demo-") for s in sessions)

    one = _api(keel, f"/traces/{traces[0]['trace_id']}")
    spans = {s["span_id"]: s for s in one["spans"]}
    names = Counter(s["name"] for s in spans.values() if s["source"] == "otlp")
    assert names["support-agent"] == names["retrieve"] == names["embed-query"] == 1
    assert names["generate-answer"] in (0, 1, 2)  # none after a failed tool, two after a retry
    gateway = [s for s in spans.values() if s["source"] == "gateway"]
    assert gateway, "the gateway's spans join the agent's trace"
    assert {spans[s["parent_span_id"]]["name"] for s in gateway} <= {
        "embed-query",
        "generate-answer",
    }

    ok_turns = [t for t in turns if not t.tool_fails]
    assert len(scores) == sum(len(t.scores) + 1 for t in ok_turns)  # + the rule's
    assert {s["source"] for s in scores} == {"human", "rule", "model"}
    assert {s["data_type"] for s in scores} == {"numeric", "boolean", "categorical"}
    assert {s["trace_id"] for s in scores} <= {t["trace_id"] for t in traces}


def test_alert_rule_and_prompt(run: subprocess.CompletedProcess[str], keel: KeelProcess) -> None:
    rules = _api(keel, "/alerts/rules")["data"]
    assert [r["name"] for r in rules] == ["demo-error-rate"]
    prompt = _api(keel, f"/prompts/{PROMPT_NAME}")
    assert prompt["latest_version"] == 2
    assert prompt["labels"] == {"production": 2}


def test_again_reuses_prompt_and_rule(
    run: subprocess.CompletedProcess[str], keel: KeelProcess
) -> None:
    again = _demo(keel.url, ADMIN_KEY, "--duration", "1", "--requests", "3", "--seed", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"prompt:  {PROMPT_NAME} v1 and v2, production -> v2" in again.stdout
    assert len(_api(keel, "/alerts/rules")["data"]) == 1
    assert len(_api(keel, f"/prompts/{PROMPT_NAME}/history")["data"]) == 1


def test_wrong_key_is_one_line(keel: KeelProcess) -> None:
    result = _demo(keel.url, "not-the-key-0123", "--requests", "5")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "not-the-key-0123" not in result.stderr
    assert "Traceback" not in result.stderr


def test_keel_gone_midway_is_one_line(tmp_path: Path) -> None:
    server = KeelProcess(tmp_path / "keel").start(timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    args = [KEEL_BIN, "--url", server.url, "demo", "--duration", "30", "--requests", "300"]
    demo = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not _api_open(server, "/requests")["data"]:  # the demo is sending
            assert time.monotonic() < deadline, "the demo sent nothing"
            time.sleep(0.1)
    finally:
        server.kill()
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert out == ""
    assert err.splitlines()[-1] == (
        f"error: cannot reach Keel at {server.url}: is `keel serve` running?"
    )
    assert "Traceback" not in err


def test_unreachable_keel_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--url", url, "demo", "--duration", "1"])
    assert result.exit_code == 1
    assert result.output == f"error: cannot reach Keel at {url}: is `keel serve` running?\n"


def test_url_option_of_the_command_wins(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:1", "demo", "--url", url])
    assert result.exit_code == 1
    assert f"cannot reach Keel at {url}:" in result.output


# -- the plan and the progress line, without a server -----------------------------------------


def test_plan_is_seeded_and_bounded() -> None:
    assert plan(1, 300, 45) == plan(1, 300, 45)
    assert plan(1, 300, 45) != plan(2, 300, 45)
    for calls in (1, 2, 3, 17, 300, 1000):
        assert plan(3, calls, 45).calls == calls
    demo = plan(3, 300, 45)
    assert demo.interval_s * len(demo.steps) == pytest.approx(45 * 0.85)


def test_models_are_the_listed_mock_models() -> None:
    """What the demo calls is what GET /v1/models lists for the mock, the shares add up."""
    listed = {f"mock/{m}" for m in LISTED_MODELS}
    assert set(MODELS) <= listed
    assert sum(share for _, share in CHAT_MODELS) == 100
    demo = plan(3, 2000, 45)
    chat = Counter(s.model for s in demo.steps if isinstance(s, Call) and s.kind == "chat")
    assert set(chat) == {m for m, _ in CHAT_MODELS}
    assert chat.most_common(1)[0][0] == CHAT_MODELS[0][0]


def test_echo_failures_are_rationed() -> None:
    """mock/echo's breaker opens at 5 failures in 30 s: knob failures (2 attempts each) are
    at least KNOB_SPACING_S apart on the schedule."""
    for duration in (5.0, 45.0, 60.0, 300.0):
        demo = plan(11, 2000, duration)
        knobbed = [
            (i, s)
            for i, s in enumerate(demo.steps)
            if isinstance(s, Call) and s.fail in ("429", "500", "timeout")
        ]
        assert {s.model for _, s in knobbed} == {ECHO_MODEL}  # the breaker these are rationed for
        starts = [i * demo.interval_s for i, _ in knobbed]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(gap >= KNOB_SPACING_S for gap in gaps), gaps


def test_progress_redraws_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True)
    tally = Tally(planned_calls=4, calls=1)
    progress(tally)
    tally.calls = 4
    progress(tally)
    progress.finish()
    text = out.getvalue()
    assert text.startswith("\rkeel demo [#######---------------------] 1/4 calls, 0 errors")
    assert "\rkeel demo [############################] 4/4 calls" in text
    assert text.endswith("\n")


def test_costs_line_names_the_prices_used() -> None:
    assert _costs(Tally(cost_usd=0.0012)) == (
        "$0.001200 for the plain calls; streamed ones are priced too (see /costs)\n"
        "           at the models' list prices (the price book, or this Keel's `prices:`)"
    )
    assert _costs(Tally()) == "$0: no priced model answered (mock/echo and mock/embed are free)"
