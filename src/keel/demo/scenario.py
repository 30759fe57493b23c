"""What `keel demo` sends: a seeded plan of gateway calls and traced agent turns. No I/O here.

The plan is a list of steps, each either one gateway `Call` or one agent `Turn` (a trace: agent
→ retrieval → embedding call → tool → LLM call, inside a session). The same seed, call budget
and duration give the same plan, so two runs send the same traffic; the ids of traces and
sessions are drawn fresh by the runner so that two runs never merge.

Chat goes mostly to the mock's stand-ins for price-book models (`mock/gpt-4o-mini`, …): they
answer like `mock/echo` but cost their model's list price, so the cost pages show real spend with
no config. The agent answers with `mock/claude-sonnet-4-5` and embeds with
`mock/openai/text-embedding-3-small`; the free `mock/echo` and `mock/embed` keep a share, as a
self-hosted model would.

Planned failures mostly target `mock/fail`, whose own circuit breaker then opens (its later calls
answer 503 `circuit_open`, as a dead provider would), or fail where no breaker counts them: a
stream broken midstream, an unknown model, a prompt variable the version does not declare.
Failures of the `mock/echo` target itself (the `x-mock-fail` 429, 500 and timeout knobs, each
counted once per attempt) are rationed to one per `KNOB_SPACING_S` of schedule, so its breaker
(5 failures in 30 s by default) stays closed and the rest of the traffic keeps flowing.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AGENT_CHAT_MODEL",
    "AGENT_EMBED_MODEL",
    "CHAT_MODELS",
    "ECHO_MODEL",
    "EMBED_MODEL",
    "FAIL_MODEL",
    "KNOB_SPACING_S",
    "MODELS",
    "PROMPT_NAME",
    "PROMPT_VERSIONS",
    "Call",
    "Plan",
    "PromptRef",
    "ScoreSpec",
    "Turn",
    "plan",
]

ECHO_MODEL = "mock/echo"  # free; the x-mock-fail knobs fail on its target (see above)
EMBED_MODEL = "mock/embed"  # free
FAIL_MODEL = "mock/fail"
UNKNOWN_MODEL = "mock/gpt-4o-minii"  # a typo the mock does not serve: the client's own 404
# Plain chat calls, with their share: priced stand-ins, cheap ones most, and some free echo.
CHAT_MODELS: tuple[tuple[str, int], ...] = (
    ("mock/gpt-4o-mini", 45),
    ("mock/claude-haiku-4-5", 20),
    ("mock/gpt-4o", 15),
    (ECHO_MODEL, 20),
)
AGENT_CHAT_MODEL = "mock/claude-sonnet-4-5"
AGENT_EMBED_MODEL = "mock/openai/text-embedding-3-small"
# Every model the demo expects an answer from.
MODELS = (*(m for m, _ in CHAT_MODELS), EMBED_MODEL, AGENT_CHAT_MODEL, AGENT_EMBED_MODEL)
KNOB_SPACING_S = 18.0  # > 15 s: at most 2 in 30 s, each at most 2 failures

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
PIPELINES = ("support-bot", "search", "summarizer", "triage")
AGENT_PIPELINE = "support-agent"
TAGS = ("beta", "eu", "us", "mobile", "web", "batch")
PRODUCTS = ("Keel Cloud", "Keel Mobile", "Keel Desktop")
QUESTIONS = (
    "How do I reset my password?",
    "Where is my order 4417? It was due on Monday.",
    "Can I change the billing address on my last invoice?",
    "The app crashes when I upload a photo from my phone.",
    "Do you ship to Norway, and how long does it take?",
    "How do I cancel my subscription before it renews?",
    "What is your refund policy for annual plans?",
    "My discount code SPRING20 is refused at checkout.",
    "How do I add a teammate to my workspace?",
    "Is there a rate limit on the free tier of the API?",
    "Why was I charged twice this month?",
    "Can I export all my data as CSV?",
)
SUMMARIES = (
    "Customer reports that exports time out for workspaces with more than 10,000 rows.",
    "Meeting notes: ship the billing page redesign next sprint, keep the old invoices page.",
    "Incident: the EU region answered 5xx for 12 minutes after a bad config push.",
    "Release notes: faster search, dark mode, and a fix for duplicate notifications.",
)
DOCS = (
    ("kb-101", "Passwords are reset from the sign-in page: Forgot password sends a link."),
    ("kb-204", "Orders ship within 2 business days; tracking links arrive by email."),
    ("kb-310", "Invoices can be edited for 30 days from Settings, Billing, Invoices."),
    ("kb-415", "Refunds: monthly plans are not refunded, annual plans pro rata."),
    ("kb-522", "Workspace admins invite teammates from Settings, Members."),
    ("kb-630", "The free tier allows 60 API requests a minute per workspace."),
    ("kb-744", "Exports: Settings, Data, Export writes CSV files of every table."),
    ("kb-851", "Double charges are refunded automatically within 5 business days."),
)
TOOLS = (
    ("lookup_order", {"order_id": "4417"}, {"status": "shipped", "carrier": "DHL"}),
    ("get_invoice", {"month": "2026-10"}, {"total_usd": 49.0, "paid": True}),
    ("check_subscription", {"plan": "pro"}, {"renews": "2026-12-01", "seats": 5}),
)
HUMAN_CATEGORIES = ("billing", "shipping", "account", "bug")
TONES = ("friendly", "neutral", "curt")

PROMPT_NAME = "demo-support-reply"
_PROMPT_MESSAGES = (
    "You answer customers of {{ product }} in two sentences.",
    "You answer customers of {{ product }} briefly and kindly, and link the help center.",
)
# What `keel demo` pushes to the registry: version 1, then version 2 labelled production.
PROMPT_VERSIONS: tuple[dict[str, Any], ...] = tuple(
    {
        "name": PROMPT_NAME,
        "description": "Replies to support questions (sent by `keel demo`)",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "{{ question }}"},
        ],
        "variables": ["product", "question"],
        "config": {"model": CHAT_MODELS[0][0], "temperature": 0.2, "max_tokens": 200},
    }
    for system in _PROMPT_MESSAGES
)

FailKnob = Literal["429", "500", "timeout", "midstream"]
ScoreValue = float | bool | str


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A registry prompt referenced from a chat call: by label, or pinned to a version."""

    label: str | None
    version: int | None
    variables: dict[str, str]

    def body(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": PROMPT_NAME, "variables": self.variables}
        if self.version is not None:
            ref["version"] = self.version
        else:
            ref["label"] = self.label
        return ref


@dataclass(frozen=True, slots=True)
class Call:
    """One gateway call, and whether the plan expects it to fail."""

    kind: str  # what the summary counts it as: chat, stream, prompt, embedding, error, slow
    endpoint: Literal["chat", "embeddings"]
    model: str
    text: str
    customer: str | None
    customer_in_body: bool  # OpenAI's `user` field rather than `x-keel-customer`
    pipeline: str | None
    tags: tuple[str, ...]
    stream: bool = False
    latency_ms: int = 0
    chunk_delay_ms: int = 0
    fail: FailKnob | None = None
    prompt: PromptRef | None = None
    expect_error: bool = False

    @property
    def calls(self) -> int:
        return 1

    def headers(self) -> dict[str, str]:
        """Keel's metadata headers and the mock provider's knobs."""
        headers: dict[str, str] = {}
        if self.customer and not self.customer_in_body:
            headers["x-keel-customer"] = self.customer
        if self.pipeline:
            headers["x-keel-pipeline"] = self.pipeline
        if self.tags:
            headers["x-keel-tags"] = ",".join(self.tags)
        return {**headers, **knob_headers(self.latency_ms, self.chunk_delay_ms, self.fail)}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if self.customer and self.customer_in_body:
            body["user"] = self.customer
        if self.endpoint == "embeddings":
            return {**body, "input": self.text}
        if self.prompt is not None:
            body["messages"] = []
            body["prompt"] = self.prompt.body()
        else:
            body["messages"] = [{"role": "user", "content": self.text}]
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


def knob_headers(latency_ms: int, chunk_delay_ms: int, fail: str | None) -> dict[str, str]:
    headers = {}
    if latency_ms:
        headers["x-mock-latency-ms"] = str(latency_ms)
    if chunk_delay_ms:
        headers["x-mock-chunk-delay-ms"] = str(chunk_delay_ms)
    if fail:
        headers["x-mock-fail"] = fail
    return headers


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """A score the demo gives a turn: on the whole trace or on its LLM or retrieval span."""

    name: str
    source: Literal["human", "rule", "model"]
    data_type: Literal["numeric", "boolean", "categorical"]
    value: ScoreValue
    target: Literal["trace", "llm", "retrieval"] = "trace"
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One question to the traced support agent: one trace, in session `session`."""

    session: int
    turn: int  # 1 for the session's first question
    customer: str
    tags: tuple[str, ...]
    question: str
    history: tuple[str, ...]  # the session's earlier questions
    docs: tuple[str, ...]  # ids of the knowledge-base articles retrieval finds
    tool: int | None  # index in TOOLS
    tool_fails: bool  # the tool raises: the turn ends in an error, with no LLM call
    stream: bool
    embed_latency_ms: int
    llm_latency_ms: int  # until the first token, for a stream
    chunk_delay_ms: int
    llm_fails: bool  # the first LLM call breaks midstream; the agent retries it
    scores: tuple[ScoreSpec, ...] = field(default=())

    @property
    def calls(self) -> int:
        if self.tool_fails:
            return 1  # the retrieval's embedding call only
        return 3 if self.llm_fails else 2


Step = Call | Turn


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    interval_s: float  # between step starts

    @property
    def calls(self) -> int:
        return sum(step.calls for step in self.steps)

    @property
    def sessions(self) -> int:
        return len({s.session for s in self.steps if isinstance(s, Turn)})


def _tags(rng: random.Random) -> tuple[str, ...]:
    return tuple(sorted(rng.sample(TAGS, rng.choice((0, 1, 1, 2)))))


def _chat(rng: random.Random) -> Call:
    stream = rng.random() < 0.4
    names, shares = zip(*CHAT_MODELS, strict=True)
    return Call(
        kind="stream" if stream else "chat",
        endpoint="chat",
        model=rng.choices(names, weights=shares)[0],
        text=rng.choice(QUESTIONS + SUMMARIES),
        customer=rng.choice(CUSTOMERS),
        customer_in_body=rng.random() < 0.3,
        pipeline=rng.choice(PIPELINES),
        tags=_tags(rng),
        stream=stream,
        latency_ms=rng.randrange(20, 250),
        chunk_delay_ms=rng.randrange(5, 40) if stream else 0,
    )


def _slow(rng: random.Random) -> Call:
    call = _chat(rng)
    return dataclasses.replace(call, kind="slow", latency_ms=rng.randrange(1200, 2600))


def _prompted(rng: random.Random) -> Call:
    variables = {"product": rng.choice(PRODUCTS), "question": rng.choice(QUESTIONS)}
    pinned = rng.random() < 0.25
    ref = PromptRef(None if pinned else "production", 1 if pinned else None, variables)
    return dataclasses.replace(_chat(rng), kind="prompt", text="", prompt=ref)


def _embedding(rng: random.Random) -> Call:
    return dataclasses.replace(
        _chat(rng),
        kind="embedding",
        endpoint="embeddings",
        model=EMBED_MODEL,
        text=rng.choice(QUESTIONS + tuple(text for _id, text in DOCS)),
        stream=False,
        chunk_delay_ms=0,
        pipeline="search",
    )


def _failing(rng: random.Random) -> Call:
    """A call the provider or the client gets wrong, none of them counted by mock/echo's breaker."""
    call = _chat(rng)
    pick = rng.random()
    if pick < 0.5:
        return dataclasses.replace(call, kind="error", model=FAIL_MODEL, expect_error=True)
    if pick < 0.7:  # breaks after its first words: the client's stream ends with an error event
        return dataclasses.replace(
            call, kind="error", stream=True, chunk_delay_ms=30, fail="midstream", expect_error=True
        )
    if pick < 0.85:
        return dataclasses.replace(call, kind="error", model=UNKNOWN_MODEL, expect_error=True)
    # a prompt variable the version does not declare: 400 from the gateway's renderer
    ref = PromptRef("production", None, {"product": "Keel Cloud", "questoin": call.text})
    return dataclasses.replace(call, kind="error", text="", prompt=ref, expect_error=True)


def _scores(rng: random.Random, docs: Sequence[str]) -> tuple[ScoreSpec, ...]:
    """Human feedback on some traces, an LLM judge on others (the rule score is the runner's)."""
    scores = []
    if rng.random() < 0.35:
        scores.append(ScoreSpec("helpfulness", "human", "numeric", float(rng.randint(1, 5))))
    if rng.random() < 0.3:
        scores.append(
            ScoreSpec(
                "resolved",
                "human",
                "boolean",
                rng.random() < 0.7,
                comment=rng.choice((None, "customer confirmed", "needed a follow-up")),
            )
        )
    if rng.random() < 0.25:
        scores.append(ScoreSpec("category", "human", "categorical", rng.choice(HUMAN_CATEGORIES)))
    if rng.random() < 0.5:
        grounded = round(rng.uniform(0.55, 1.0) if docs else rng.uniform(0.0, 0.4), 2)
        scores.append(ScoreSpec("groundedness", "model", "numeric", grounded, target="llm"))
    if rng.random() < 0.3:
        scores.append(ScoreSpec("tone", "model", "categorical", rng.choice(TONES), target="llm"))
    if docs and rng.random() < 0.3:
        relevance = round(rng.uniform(0.4, 1.0), 2)
        scores.append(ScoreSpec("relevance", "model", "numeric", relevance, target="retrieval"))
    return tuple(scores)


@dataclass
class _Sessions:
    """Conversations in progress: each gets 2 to 4 turns, up to three run side by side."""

    rng: random.Random
    open: list[tuple[int, str, list[str], int]] = field(default_factory=list)
    count: int = 0

    def next_turn(self) -> tuple[int, str, tuple[str, ...]]:
        if len(self.open) < 3 and (not self.open or self.rng.random() < 0.4):
            self.open.append((self.count, self.rng.choice(CUSTOMERS), [], self.rng.randint(2, 4)))
            self.count += 1
        index = self.rng.randrange(len(self.open))
        session, customer, asked, length = self.open[index]
        asked.append(self.rng.choice(QUESTIONS))
        if len(asked) >= length:
            del self.open[index]
        return session, customer, tuple(asked)


def _turn(rng: random.Random, sessions: _Sessions) -> Turn:
    session, customer, asked = sessions.next_turn()
    docs = tuple(sorted(rng.sample([d for d, _ in DOCS], rng.choice((0, 1, 2, 2, 3)))))
    tool = rng.randrange(len(TOOLS)) if rng.random() < 0.35 else None
    tool_fails = tool is not None and rng.random() < 0.15
    stream = rng.random() < 0.5
    return Turn(
        session=session,
        turn=len(asked),
        customer=customer,
        tags=_tags(rng),
        question=asked[-1],
        history=asked[:-1],
        docs=docs,
        tool=tool,
        tool_fails=tool_fails,
        stream=stream,
        embed_latency_ms=rng.randrange(15, 90),
        llm_latency_ms=rng.randrange(150, 1200),
        chunk_delay_ms=rng.randrange(10, 60) if stream else 0,
        llm_fails=not tool_fails and rng.random() < 0.1,
        scores=() if tool_fails else _scores(rng, docs),
    )


def _knob_failure(rng: random.Random) -> Call:
    """A call that fails at mock/echo's own target, counted by its circuit breaker."""
    knob: FailKnob = rng.choice(("429", "500", "timeout"))
    call = dataclasses.replace(_chat(rng), model=ECHO_MODEL)
    return dataclasses.replace(call, kind="error", fail=knob, stream=False, expect_error=True)


def plan(seed: int, calls: int, duration_s: float) -> Plan:
    """Steps adding up to at most `calls` gateway calls, started over about `duration_s`."""
    rng = random.Random(seed)
    sessions = _Sessions(rng)
    steps: list[Step] = []
    budget = calls
    while budget > 0:
        pick = rng.random()
        step: Step
        if pick < 0.35:
            step = _turn(rng, sessions)
        elif pick < 0.65:
            step = _chat(rng)
        elif pick < 0.77:
            step = _prompted(rng)
        elif pick < 0.86:
            step = _embedding(rng)
        elif pick < 0.92:
            step = _failing(rng)
        else:
            step = _slow(rng)
        if step.calls > budget:
            step = _chat(rng)
        steps.append(step)
        budget -= step.calls
    # Started over 85% of the duration, so the last ones finish within it.
    spread = duration_s * 0.85
    interval = spread / len(steps) if steps else 0.0
    slots = max(1, int(spread // KNOB_SPACING_S))
    gap = math.ceil(KNOB_SPACING_S / interval) if interval else len(steps)
    earliest = 0
    for j in range(slots):
        at = max(int((j + 0.5) * len(steps) / slots), earliest)
        # the first one-call step from there, so the plan keeps its number of calls
        index = next((i for i in range(at, len(steps)) if isinstance(steps[i], Call)), None)
        if index is None:
            break
        steps[index] = _knob_failure(rng)
        earliest = index + gap
    return Plan(tuple(steps), interval)
