"""Analytics and trace reads over a million spans in SQLite: the overview's queries, a 5,000-span
trace, and what the rollups cost the batch writer.

    python benchmarks/analytics.py [--spans 1000000] [--runs 7] [--db PATH] [--write]

Seeds a SQLite database (direct executemany, then the rollups built by keel.analytics.rollups
over every counted call): traces of ten spans over the last 7 days (an agent root, tools,
retrievals, chains, four llm calls and an embedding), one trace of 5,000 spans, gateway request
records and scores. Then times, as medians of --runs runs after a warm-up:
- one overview load: the queries the overview page runs together (summary, series, top models,
  customers and pipelines by cost, score summary), for 24 hours (5-minute steps) and 7 days
  (hourly steps); target < 300 ms;
- the trace view: keel.traces.store.get_trace of the 5,000-span trace (target < 1 s), and over
  HTTP from a real `keel serve` on that database: the UI page GET /traces/{id} and the API;
- the first page of the trace list;
- the batch writer: write_batch of 1,000-span batches (40% counted llm spans) against the span
  insert alone, both into a fresh database.
With --write, the results replace the section between the analytics markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import (  # noqa: E402
    BENCHMARKS_MD,
    free_port,
    git_revision,
    keel_command,
    keel_env,
    machine,
    stop,
)
from keel.analytics import query  # noqa: E402
from keel.analytics.rollups import Rollup, add_rows  # noqa: E402
from keel.records.model import RequestRecord  # noqa: E402
from keel.records.span import SpanRecord  # noqa: E402
from keel.storage.batch import write_batch  # noqa: E402
from keel.storage.database import Database  # noqa: E402
from keel.storage.spans_repo import insert_spans  # noqa: E402
from keel.storage.tables import requests, spans  # noqa: E402
from keel.traces import store  # noqa: E402

START, END = "<!-- analytics:start -->", "<!-- analytics:end -->"
INTRO = """## Analytics and trace reads

The dashboards' queries and the trace view over a million spans in SQLite
(`benchmarks/analytics.py`). Targets (issue 3): one overview load < 300 ms; a 5,000-span trace
opens in < 1 s.

"""
DAY = 86400.0
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash", "text-embedding-3")
PROVIDERS = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-sonnet-4": "anthropic"}
PIPELINES = ("support", "rag", "summarize", "classify", "agent", "search")
TAGS = ("beta", "prod", "eu", "us", "vip", "batch", "web", "mobile")
KINDS = ("agent", "tool", "retrieval", "chain", "llm", "llm", "llm", "llm", "embedding", "chain")
BIG_TRACE = "b1" * 16
SPAN_COLUMNS = tuple(c.name for c in spans.columns)
REQUEST_COLUMNS = tuple(c.name for c in requests.columns)
JSON_SPAN = frozenset({"tags", "attributes", "events"})


# -- seeding ------------------------------------------------------------------------------------


def _span(rng: random.Random, trace: str, n: int, at: float, kind: str, session: str) -> SpanRecord:
    model = rng.choice(MODELS) if kind in ("llm", "embedding") else None
    duration = rng.lognormvariate(5.5, 1.0) / 1000 if model else rng.uniform(0.001, 0.2)
    llm = model is not None
    return SpanRecord(
        trace_id=trace,
        span_id=f"{n:016x}",
        parent_span_id=None if kind == "agent" else f"{n - (n % 10):016x}",
        name=f"{kind} {model or n % 10}",
        start_time=at,
        end_time=at + duration,
        kind=kind,
        service="bench-app",
        status="error" if rng.random() < 0.03 else "ok",
        provider=PROVIDERS.get(model or "", "google") if llm else None,
        model=model,
        input_tokens=rng.randint(50, 2000) if llm else None,
        output_tokens=rng.randint(5, 500) if kind == "llm" else None,
        cost_usd=round(rng.uniform(0.00001, 0.02), 6) if llm else None,
        ttft_ms=rng.lognormvariate(5, 0.8) if kind == "llm" else None,
        customer=f"customer-{rng.randrange(200):03d}",
        session_id=session,
        pipeline=rng.choice(PIPELINES),
        tags=rng.sample(TAGS, rng.randint(0, 2)),
        prompt_name=rng.choice(("answer", "summarize", None)) if kind == "llm" else None,
        prompt_version=rng.randint(1, 3) if kind == "llm" else None,
        attributes={"bench.n": n},
    )


def _span_rows(batch: list[SpanRecord]) -> list[tuple[Any, ...]]:
    rows = []
    for s in batch:
        values = []
        for name in SPAN_COLUMNS:
            value = s.duration_ms if name == "duration_ms" else getattr(s, name)
            if name in JSON_SPAN:
                value = orjson.dumps(value).decode()
            elif isinstance(value, bool):
                value = int(value)
            values.append(value)
        rows.append(tuple(values))
    return rows


def _request(rng: random.Random, n: int, at: float) -> RequestRecord:
    model = rng.choice(MODELS[:4])
    failed = rng.random() < 0.02
    return RequestRecord(
        id=f"req{n:023d}",
        trace_id=f"{n:032x}"[::-1],
        span_id=f"{n:016x}",
        created_at=at,
        endpoint="chat.completions",
        model=model,
        provider=PROVIDERS.get(model, "google"),
        provider_model=model,
        status_code=500 if failed else 200,
        error="upstream failed" if failed else None,
        latency_ms=rng.lognormvariate(6, 0.9),
        ttft_ms=rng.lognormvariate(5, 0.8),
        input_tokens=rng.randint(50, 2000),
        output_tokens=rng.randint(5, 500),
        cost_usd=round(rng.uniform(0.00001, 0.02), 6),
        customer=f"customer-{rng.randrange(200):03d}",
        pipeline=rng.choice(PIPELINES),
        tags=rng.sample(TAGS, rng.randint(0, 2)),
        key_id=f"key{rng.randrange(20)}",
        cache_status=rng.choice(("miss", "miss", "hit", None)),
    )


def _request_rows(batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
    rows = []
    for r in batch:
        values = []
        for name in REQUEST_COLUMNS:
            value = getattr(r, name)
            if name in ("tags", "fallbacks"):
                value = None if value is None else orjson.dumps(value).decode()
            elif isinstance(value, bool):
                value = int(value)
            values.append(value)
        rows.append(tuple(values))
    return rows


async def seed(path: Path, total_spans: int, now: float) -> dict[str, Any]:
    """Fill an empty database; returns what was made."""
    started = perf_counter()
    db = await Database.open(f"sqlite:///{path}")  # the schema, by the migrations
    await db.close()
    rng = random.Random(42)
    rollup = Rollup()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    span_sql = f"INSERT INTO spans VALUES ({', '.join('?' * len(SPAN_COLUMNS))})"
    request_sql = f"INSERT INTO requests VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
    made = {"spans": 0, "counted_spans": 0, "requests": 0, "traces": 0, "scores": 0}
    big = [
        _span(rng, BIG_TRACE, i, now - 3600 + i * 0.01, KINDS[i % 10], "s-big") for i in range(5000)
    ]
    big[0].kind, big[0].parent_span_id = "agent", None
    for s in big[10::10]:  # a chain under the root for each group of ten
        s.kind, s.parent_span_id = "chain", big[0].span_id
    pending = big
    traces = (total_spans - len(big)) // 10
    for t in range(traces):
        trace = f"{t:032x}"
        at = now - rng.uniform(0, 7 * DAY)
        session = f"session-{t // 5:06d}"
        pending += [
            _span(rng, trace, t * 10 + i, at + i * 0.05, KINDS[i], session) for i in range(10)
        ]
        if len(pending) >= 50_000 or t == traces - 1:
            conn.executemany(span_sql, _span_rows(pending))
            for s in pending:
                if s.counted and s.kind in ("llm", "embedding"):
                    rollup.add_span(s)
                    made["counted_spans"] += 1
            made["spans"] += len(pending)
            pending = []
    made["traces"] = traces + 1
    n_requests = total_spans // 10
    for start in range(0, n_requests, 50_000):
        batch = [
            _request(rng, n, now - rng.uniform(0, 7 * DAY))
            for n in range(start, min(n_requests, start + 50_000))
        ]
        conn.executemany(request_sql, _request_rows(batch))
        for r in batch:
            rollup.add_request(r)
        made["requests"] += len(batch)
    score_rows = []
    for n in range(20_000):
        kind = rng.choice(("numeric", "boolean", "categorical"))
        score_rows.append(
            (
                f"score{n:021d}",
                f"{rng.randrange(traces):032x}",
                None,
                {"numeric": "accuracy", "boolean": "helpful", "categorical": "tone"}[kind],
                kind,
                None
                if kind == "categorical"
                else float(rng.random() < 0.8 if kind == "boolean" else rng.random()),
                rng.choice(("polite", "rude", "neutral")) if kind == "categorical" else None,
                rng.choice(("human", "rule", "model")),
                None,
                "bench",
                now - rng.uniform(0, 7 * DAY),
            )
        )
    conn.executemany(f"INSERT INTO scores VALUES ({', '.join('?' * 11)})", score_rows)
    made["scores"] = len(score_rows)
    conn.commit()
    conn.close()
    db = await Database.open(f"sqlite:///{path}")
    try:
        async with db.engine.begin() as c:
            await add_rows(c, "sqlite", rollup)
        async with db.engine.connect() as c:
            made["rollup_rows"] = (await c.exec_driver_sql("SELECT count(*) FROM rollups")).scalar()
            await c.exec_driver_sql("ANALYZE")
    finally:
        await db.close()
    made["seconds"] = perf_counter() - started
    made["bytes"] = await asyncio.to_thread(os.path.getsize, path)
    return made


# -- timing -------------------------------------------------------------------------------------


CPU: dict[str, float] = {}  # label -> median CPU ms of this process (all its threads)


async def _median_ms(fn: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `fn` over `runs` runs after a warm-up."""
    await fn()
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = perf_counter(), time.process_time()
        await fn()
        wall.append((perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def _overview(db: Database, since: float, until: float, step: int) -> Callable[[], Awaitable[Any]]:
    filters = query.Filters()

    async def load() -> Any:
        return await asyncio.gather(  # as src/keel/ui/overview.py runs them
            query.summary(db, since, until, filters),
            query.series(db, since, until, step, filters),
            query.breakdown(db, since, until, "model", filters, limit=8),
            query.breakdown(db, since, until, "customer", filters, limit=8),
            query.breakdown(db, since, until, "pipeline", filters, limit=8),
            query.score_summary(db, since, until),
        )

    return load


async def time_queries(path: Path, now: float, runs: int) -> dict[str, float]:
    db = await Database.open(f"sqlite:///{path}")
    out: dict[str, float] = {}
    try:
        f = query.Filters()
        for label, span, step in (("24h", DAY, 300), ("7d", 7 * DAY, 3600)):
            since = now - span
            out[f"overview {label}"], CPU[f"overview {label}"] = await _median_ms(
                _overview(db, since, now, step), runs
            )
            out[f"summary {label}"], CPU[f"summary {label}"] = await _median_ms(
                lambda s=since: query.summary(db, s, now, f), runs
            )
            out[f"series {label}"], CPU[f"series {label}"] = await _median_ms(
                lambda s=since, st=step: query.series(db, s, now, st, f), runs
            )
            (
                out[f"breakdown customer {label}"],
                CPU[f"breakdown customer {label}"],
            ) = await _median_ms(lambda s=since: query.breakdown(db, s, now, "customer", f), runs)
        out["summary 24h model filter"], CPU["summary 24h model filter"] = await _median_ms(
            lambda: query.summary(db, now - DAY, now, query.Filters(model="gpt-4o")), runs
        )
        (
            out["series 24h 5-min, model filter (raw)"],
            CPU["series 24h 5-min, model filter (raw)"],
        ) = await _median_ms(
            lambda: query.series(db, now - DAY, now, 300, query.Filters(model="gpt-4o")), runs
        )
        out["get_trace 5,000 spans"], CPU["get_trace 5,000 spans"] = await _median_ms(
            lambda: store.get_trace(db, BIG_TRACE), runs
        )
        out["list_traces first page"], CPU["list_traces first page"] = await _median_ms(
            lambda: store.list_traces(db), runs
        )
        out["list_sessions first page"], CPU["list_sessions first page"] = await _median_ms(
            lambda: store.list_sessions(db), runs
        )
    finally:
        await db.close()
    return out


def time_http(path: Path, runs: int) -> dict[str, float]:
    """GET the trace page and the trace API from a real `keel serve` on the seeded database."""
    port = free_port()
    env = {**keel_env(), "KEEL_DATABASE_URL": f"sqlite:///{path}"}
    with tempfile.TemporaryDirectory(prefix="keel-analytics-") as data:
        cmd = [*keel_command(), "serve", "--port", str(port), "--data-dir", data]
        log = open(Path(data) / "keel.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("keel serve did not start") from None
                    time.sleep(0.1)
            out = {}
            for label, url in (
                ("HTTP GET /traces/{id} (UI page, 5,000 spans)", f"{base}/traces/{BIG_TRACE}"),
                ("HTTP GET /api/v1/traces/{id} (5,000 spans)", f"{base}/api/v1/traces/{BIG_TRACE}"),
                ("HTTP GET / (overview page, 24h)", f"{base}/"),
            ):
                samples = []
                for i in range(runs + 1):
                    t0 = perf_counter()
                    with urllib.request.urlopen(url, timeout=30) as resp:
                        body = resp.read()
                        assert resp.status == 200, (url, resp.status)
                    if i:
                        samples.append((perf_counter() - t0) * 1000)
                out[label] = statistics.median(samples)
                out[f"{label} bytes"] = len(body)
            return out
        finally:
            stop(proc)
            log.close()


async def time_ingest(folder: Path, batches: int = 30, size: int = 1000) -> dict[str, float]:
    """Spans per second through write_batch (with rollups) and through the span insert alone."""
    rng = random.Random(7)
    now = time.time()
    data = [
        [
            _span(rng, f"{b:032x}", b * size + i, now - rng.uniform(0, 3600), KINDS[i % 10], "s")
            for i in range(size)
        ]
        for b in range(batches)
    ]
    for batch in data:  # 40% counted: the four llm spans of ten; the embedding is not counted
        for s in batch:
            if s.kind == "embedding":
                s.counted = False
    out = {}
    for label in ("write_batch (spans + rollups)", "insert_spans alone"):
        path = folder / f"ingest-{label[:5]}.db"
        db = await Database.open(f"sqlite:///{path}")
        try:
            t0 = perf_counter()
            for batch in data:
                if label.startswith("write_batch"):
                    await write_batch(db, batch)
                else:
                    async with db.engine.begin() as conn:
                        await insert_spans(conn, "sqlite", batch)
            out[label] = batches * size / (perf_counter() - t0)
        finally:
            await db.close()
    rollup_only = Rollup()
    t0 = perf_counter()
    for batch in data:
        for s in batch:
            if s.counted and s.kind in ("llm", "embedding"):
                rollup_only.add_span(s)
    rows = rollup_only.rows()
    out["rollup aggregation, µs per counted span"] = (
        (perf_counter() - t0)
        * 1e6
        / sum(1 for b in data for s in b if s.counted and s.kind == "llm")
    )
    out["rollup rows"] = len(rows)
    return out


# -- report -------------------------------------------------------------------------------------


def _row(label: str, value: float, limit: float | None, cpu: float | None = None) -> str:
    shown = f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    spent = "—" if cpu is None else f"{cpu:.1f} ms"
    if limit is None:
        return f"| {label} | {shown} | {spent} | — | |"
    target = f"< {limit:g} ms" if limit < 1000 else f"< {limit / 1000:g} s"
    verdict = "pass" if value < limit else "**FAIL**"
    return f"| {label} | **{shown}** | {spent} | {target} | {verdict} |"


def section(
    made: dict[str, Any],
    q: dict[str, float],
    http: dict[str, float],
    ingest: dict[str, float],
    runs: int,
    command: str,
) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        f"Measured {date} on {machine()} (load average {load:.1f} at the end); Keel at "
        f"`{git_revision()}`; command `{command}`.",
        "",
        f"Database: {made['spans']:,} spans in {made['traces']:,} traces over 7 days "
        f"({made['counted_spans']:,} counted llm/embedding spans), {made['requests']:,} gateway "
        f"request records, {made['scores']:,} scores; {made['rollup_rows']:,} rollup rows; "
        f"{made['bytes'] / 2**20:,.0f} MiB of SQLite, seeded in {made['seconds']:.0f} s.",
        "",
        f"| Measure (median of {runs} runs, warm) | Wall time | CPU of the process | Target | |",
        "|---|---:|---:|---:|:---:|",
        _row(
            "One overview load, 24h (6 queries together)",
            q["overview 24h"],
            300,
            CPU["overview 24h"],
        ),
        _row(
            "One overview load, 7d (6 queries together)", q["overview 7d"], 300, CPU["overview 7d"]
        ),
        _row(
            "get_trace of a 5,000-span trace",
            q["get_trace 5,000 spans"],
            1000,
            CPU["get_trace 5,000 spans"],
        ),
    ]
    for label in (
        "HTTP GET /traces/{id} (UI page, 5,000 spans)",
        "HTTP GET /api/v1/traces/{id} (5,000 spans)",
    ):
        size = http[f"{label} bytes"] / 2**20
        lines.append(_row(f"{label}, {size:.1f} MiB", http[label], 1000))
    overview_page = "HTTP GET / (overview page, 24h)"
    lines += [_row(overview_page, http[overview_page], None), ""]
    lines += ["| Query alone | wall ms | CPU ms |", "|---|---:|---:|"]
    lines += [
        f"| {label} | {value:.1f} | {CPU[label]:.1f} |"
        for label, value in q.items()
        if not label.startswith(("overview", "get_trace"))
    ]
    with_rollups = ingest["write_batch (spans + rollups)"]
    alone = ingest["insert_spans alone"]
    per_span = ingest["rollup aggregation, µs per counted span"]
    lines += [
        "",
        "Batch writer, 30 batches of 1,000 spans (4 counted llm spans in 10) into a fresh "
        "database:",
        "",
        "| Path | spans/s |",
        "|---|---:|",
        f"| write_batch: spans, existence check, rollups (one transaction) | {with_rollups:,.0f} |",
        f"| insert_spans alone | {alone:,.0f} |",
        "",
        f"- Rollup aggregation in Python: {per_span:.1f} µs per counted span "
        f"({ingest['rollup rows']:,.0f} rollup rows for the run).",
        "- Wall times depend on what else runs: the load average above is of this 2-CPU machine, "
        "shared with other work while measuring; the CPU column is this process's CPU time "
        "(its SQLite threads included) for the same runs.",
        "- The overview runs its six queries with asyncio.gather, as the UI does; whole hours "
        "come from hourly rollups, whole minutes from minute rollups, the sub-minute edges "
        "from the raw tables (docs/analytics.md).",
    ]
    return "\n".join(lines)


def write_markdown(body: str) -> None:
    text = BENCHMARKS_MD.read_text()
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{INTRO}{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS_MD.write_text(f"{head}{START}\n{body}\n{END}{tail}")


async def run(args: argparse.Namespace) -> str:
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="keel-analytics-") as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "analytics.db"
        if path.exists():
            raise SystemExit(f"{path} exists; give a new path")
        made = await seed(path, args.spans, now)
        print(f"seeded: {made}", flush=True)
        q = await time_queries(path, now, args.runs)
        print(q, flush=True)
        http = time_http(path, args.runs)
        print(http, flush=True)
        ingest = await time_ingest(Path(tmp))
        print(ingest, flush=True)
    command = "python benchmarks/analytics.py" + (" --write" if args.write else "")
    if args.spans != 1_000_000:
        command += f" --spans {args.spans}"
    return section(made, q, http, ingest, args.runs, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--db", help="where to build the database (default: a temporary file)")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("KEEL_LOG_LEVEL", "warning")
    body = asyncio.run(run(args))
    print(body)
    if args.write:
        write_markdown(body)


if __name__ == "__main__":
    main()
