"""Runs a demo plan against a running Keel: setup, paced steps with bounded concurrency, scores.

The steps start on a schedule spread over the duration (so charts show traffic over time, not
one burst), at most `concurrency` at a time; none starts after the duration. Each agent turn's
scores are sent when it ends; at the end the spans are flushed. `Tally` counts what happened,
for the progress line and the summary; a failure the plan did not expect is counted and its
first messages kept.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.demo.agent import SupportAgent, TurnResult
from keel.demo.client import (
    Answer,
    ApiFailure,
    DemoClient,
    DemoError,
    KeelUnreachable,
    error_message,
)
from keel.demo.scenario import (
    ECHO_MODEL,
    EMBED_MODEL,
    FAIL_MODEL,
    PROMPT_NAME,
    PROMPT_VERSIONS,
    Call,
    Plan,
    ScoreSpec,
    Turn,
    plan,
)
from keel.demo.telemetry import DemoTracing

__all__ = ["DemoOptions", "Tally", "run_demo"]

_KEPT_MESSAGES = 5
# The mock provider's own models: the price-book stand-ins the demo also calls come with them.
_REQUIRED_MODELS = (ECHO_MODEL, EMBED_MODEL, FAIL_MODEL)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    url: str
    api_key: str | None = field(repr=False)
    duration_s: float = 45.0
    requests: int = 300
    seed: int = 0
    concurrency: int = 8


@dataclass(slots=True)
class Tally:
    """What the demo did so far."""

    planned_calls: int = 0
    calls: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    streams: int = 0
    planned_errors: int = 0
    unexpected_errors: int = 0
    messages: list[str] = field(default_factory=list)  # the first unexpected failures
    traces: int = 0
    error_traces: int = 0  # with a failed span
    unanswered: int = 0  # of those, the turns that gave no answer
    sessions: set[str] = field(default_factory=set)
    spans_exported: int = 0
    spans_failed: int = 0
    scores: int = 0
    scores_failed: int = 0
    skipped_steps: int = 0
    prompt_versions: tuple[int, ...] = ()
    alert_rule: str | None = None
    cost_usd: float = 0.0  # what Keel priced the plain (not streamed) calls at
    trace_ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.planned_errors + self.unexpected_errors

    def count(self, kind: str, answer: Answer, planned: bool) -> None:
        self.calls += 1
        self.by_kind[kind] += 1
        self.streams += answer.streamed
        self.cost_usd += answer.cost_usd or 0.0
        if answer.ok:
            if planned:  # planned to fail, yet it answered
                self.unexpected(f"{kind} call answered although it should have failed")
            return
        if planned:
            self.planned_errors += 1
        else:
            self.unexpected(f"{kind} call: {answer.error or f'HTTP {answer.status}'}")

    def unexpected(self, message: str) -> None:
        self.unexpected_errors += 1
        if len(self.messages) < _KEPT_MESSAGES:
            self.messages.append(message)


Report = Callable[[Tally], None]


async def _check(client: DemoClient) -> None:
    """Keel answers, takes the key, and serves the mock models the demo calls."""
    health = await client.get("/healthz")
    if health.status_code != 200:
        raise DemoError(f"Keel at {client.url} is not healthy (GET /healthz: {health.status_code})")
    models = await client.get("/v1/models")
    if models.status_code != 200:
        message = error_message(models.content, models.status_code)
        raise DemoError(f"Keel refused GET /v1/models: {message} (see --api-key, KEEL_API_KEY)")
    try:
        served = {m.get("id") for m in models.json().get("data", [])}
    except (ValueError, AttributeError):
        message = f"{client.url} answered GET /v1/models with no model list: not Keel?"
        raise DemoError(message) from None
    missing = [m for m in _REQUIRED_MODELS if m not in served]
    if missing:
        raise DemoError(
            f"Keel at {client.url} serves no {', '.join(missing)}: `keel demo` only calls the "
            "offline mock provider, so it never spends money on a real one"
        )


async def _push_prompt(client: DemoClient) -> tuple[int, ...]:
    """The demo prompt's two versions, with `production` on the second (unchanged if so)."""
    versions = []
    for content in PROMPT_VERSIONS:
        body = {**content, "message": "pushed by keel demo"}
        pushed = await client.api("POST", "/prompts", body)
        versions.append(pushed["version"])
    latest = versions[-1]
    if "production" not in latest.get("labels", []):
        path = f"/prompts/{PROMPT_NAME}/labels/production"
        await client.api("PUT", path, {"version": latest["version"]})
    return tuple(int(v["version"]) for v in versions)


ALERT_RULE = {
    "name": "demo-error-rate",
    "metric": "error_rate",
    "window_s": 300,
    "comparator": ">",
    "threshold": 0.05,
    "for_s": 0,
    "channels": [],
}


async def _ensure_alert_rule(client: DemoClient) -> str | None:
    """An alert rule the demo's errors make fire; None when this Keel has no alerts API."""
    try:
        await client.api("POST", "/alerts/rules", ALERT_RULE)
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        if exc.status != 409:  # 409: it exists from an earlier run
            raise
    return f"{ALERT_RULE['name']} (error_rate > 5% over 5 minutes)"


def score_body(trace_id: str, span_id: str | None, spec: ScoreSpec) -> dict[str, Any]:
    """A score as `POST /api/v1/scores` takes it: a categorical one has a `label`."""
    body: dict[str, Any] = {
        "trace_id": trace_id,
        "name": spec.name,
        "source": spec.source,
        "data_type": spec.data_type,
    }
    body["label" if spec.data_type == "categorical" else "value"] = spec.value
    if span_id:
        body["span_id"] = span_id
    if spec.comment:
        body["comment"] = spec.comment
    return body


class _Runner:
    def __init__(
        self, client: DemoClient, demo: Plan, options: DemoOptions, tally: Tally, report: Report
    ) -> None:
        self.client = client
        self.plan = demo
        self.options = options
        self.tally = tally
        self.report = report
        self.agent = SupportAgent(client)
        self.run_id = secrets.token_hex(3)  # fresh session ids, so runs never merge
        self.fatal: DemoError | None = None

    async def step(self, step: Call | Turn) -> None:
        try:
            if isinstance(step, Call):
                answer = await self.client.call(step.endpoint, step.body(), step.headers())
                self.tally.count(step.kind, answer, step.expect_error)
            else:
                await self.turn(step)
        except KeelUnreachable as exc:
            self.fatal = self.fatal or exc
        self.report(self.tally)

    async def turn(self, turn: Turn) -> None:
        session_id = f"demo-{self.run_id}-{turn.session:03d}"
        result = await self.agent.handle(turn, session_id)
        for answer, planned in result.calls:
            self.tally.count("agent", answer, planned)
        self.tally.traces += 1
        failed_call = any(not answer.ok for answer, _ in result.calls)
        self.tally.error_traces += result.error is not None or failed_call
        self.tally.sessions.add(session_id)
        if len(self.tally.trace_ids) < 3:
            self.tally.trace_ids.append(result.trace_id)
        if result.error is not None:
            self.tally.unanswered += 1
            if not turn.tool_fails:
                self.tally.unexpected(f"agent turn: {result.error}")
            return
        # Keel takes a score before its trace is stored: no need to wait for the spans
        for body in self._scores(turn, result):
            await self.score(body)

    def _scores(self, turn: Turn, result: TurnResult) -> list[dict[str, Any]]:
        rule = ScoreSpec(
            "cites_source",
            "rule",
            "boolean",
            "[kb-" in (result.answer or ""),
            target="llm",
            comment="the answer names a knowledge-base article",
        )
        bodies = []
        for spec in (*turn.scores, rule):
            span = result.span_ids.get(spec.target) if spec.target != "trace" else None
            bodies.append(score_body(result.trace_id, span, spec))
        return bodies

    async def run(self) -> None:
        started = time.monotonic()
        deadline = started + self.options.duration_s
        slots = asyncio.Semaphore(self.options.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def bounded(step: Call | Turn) -> None:
            try:
                await self.step(step)
            finally:
                slots.release()

        for index, step in enumerate(self.plan.steps):
            wait = started + index * self.plan.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await slots.acquire()
            if self.fatal is not None or time.monotonic() >= deadline:
                slots.release()
                self.tally.skipped_steps = len(self.plan.steps) - index
                break
            task = asyncio.create_task(bounded(step))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        if self.fatal is not None:
            raise self.fatal

    async def score(self, body: dict[str, Any]) -> None:
        try:
            await self.client.api("POST", "/scores", body)
        except KeelUnreachable:
            raise
        except DemoError as exc:  # refused, or no answer in time
            self.tally.scores_failed += 1
            if self.tally.scores_failed == 1:  # the others likely say the same
                self.tally.unexpected(f"score: {exc}")
        else:
            self.tally.scores += 1


async def run_demo(
    options: DemoOptions, report: Report, *, on_start: Callable[[Tally], None] | None = None
) -> Tally:
    """Check Keel, push the demo prompt and alert rule, run the plan, flush the spans."""
    demo = plan(options.seed, options.requests, options.duration_s)
    tally = Tally(planned_calls=demo.calls)
    started = time.monotonic()
    client = DemoClient(options.url, options.api_key)
    try:
        await _check(client)
        tally.prompt_versions = await _push_prompt(client)
        tally.alert_rule = await _ensure_alert_rule(client)
        if on_start is not None:
            on_start(tally)
        telemetry = DemoTracing.start(client.url, options.api_key)
        runner = _Runner(client, demo, options, tally, report)
        try:
            await runner.run()
        except KeelUnreachable:
            telemetry.exporter.abandon()  # nothing to flush to: exit now, not after retries
            raise
        finally:
            # flushing blocks on HTTP exports: off the event loop
            await asyncio.to_thread(telemetry.close)
            tally.spans_exported = telemetry.exporter.exported
            tally.spans_failed = telemetry.exporter.failed
    finally:
        await client.aclose()
        tally.elapsed_s = time.monotonic() - started
    return tally
