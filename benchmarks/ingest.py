"""`make bench-ingest`: sustained OTLP/HTTP span ingest into SQLite, and that nothing is lost.

Starts `keel serve` pinned to CPU 0 (SQLite in a temporary data dir, the record pipeline on as
always, default settings) and pins this process, the load generator, to CPU 1. Each of C
keep-alive connections posts OTLP protobuf exports (512 spans each: traces of 8 spans mixing
LLM spans in the GenAI old and new conventions and OpenInference's, embedding, retrieval, tool
and chain spans, about 15 attributes each, with prompt and completion text) back to back for
D seconds. Every export is the same serialized template with its ids and times rewritten in
place, so making load costs the generator next to nothing: random trace and span ids, as
OpenTelemetry SDKs make them (the spans table's key then grows at random places, as in
production), and times moved to the moment the export is sent.

Then it waits for the record pipeline to drain and counts the rows of the spans table, which
must equal the spans sent. Reported: accepted spans/s (answered 200 during the run), stored
spans/s (all spans in the database, from the first request to the last row written), the
backlog at the end of the load, Keel's CPU time per span and its peak memory.

    .venv/bin/python benchmarks/ingest.py [--write] [--runs 3] [--duration 20] [--connections 4]

With --write, the results replace the section between the ingest markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import (  # noqa: E402
    BENCHMARKS_MD,
    cpus,
    free_port,
    git_revision,
    keel_command,
    keel_env,
    machine,
    proc_status_kb,
    spawn,
    stop,
)

START, END = "<!-- ingest:start -->", "<!-- ingest:end -->"
INTRO = """\
## Trace ingest

OTLP/HTTP protobuf exports into `POST /v1/traces`, stored in SQLite (`benchmarks/ingest.py`).
Keel runs with default settings (the record pipeline's write-ahead log, one batch writer, the
span writer process for SQLite); the load generator runs on CPU 1. Each export has random
trace and span ids and current times, as OpenTelemetry SDKs send them. Target (issue 3): a
sustained ≥ 20,000 spans/s into SQLite with nothing lost.

"""
TARGET = 20_000
SPANS_PER_EXPORT = 512
SPANS_PER_TRACE = 8


@dataclass
class Settings:
    runs: int = 3
    duration: float = 20.0
    connections: int = 4
    one_core: bool = False  # pin Keel to CPU 0 alone (by default it may use both CPUs)
    env: dict[str, str] = field(default_factory=dict)  # KEEL_* settings other than defaults


@dataclass
class Run:
    exports: int = 0
    spans_sent: int = 0  # in exports answered 200
    errors: int = 0  # non-200 answers (a 503 counts: its spans were not accepted)
    load_s: float = float("nan")
    stored_s: float = float("nan")  # first request to last span in the database
    stored: int = -1
    backlog_at_end: int = 0
    cpu_s: float = float("nan")  # Keel's user + system CPU time during the run
    peak_rss_mb: float = float("nan")
    helper_rss_mb: float = 0.0  # the span writer process's peak
    load_average: str = ""  # the machine's 1-minute load average at the end of the load
    steal: float = float("nan")  # share of the machine's CPU time the hypervisor took meanwhile
    latencies: list[float] = field(default_factory=list)

    @property
    def accepted_rate(self) -> float:
        return self.spans_sent / self.load_s

    @property
    def stored_rate(self) -> float:
        return self.stored / self.stored_s


# -- the export template ----------------------------------------------------------------------


def _value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(_value(x) for x in v)
        return out
    return AnyValue(string_value=str(v))


PROMPT = (
    "You are a support assistant for an online bookshop. Answer using only the context. "
    "Context: orders ship within two working days; returns are free within 30 days. "
    "Question: my order 81723 has not arrived after five days, what can I do?"
)
ANSWER = (
    "I'm sorry your order is late. Orders usually ship within two working days, so I've "
    "opened a trace request for order 81723 and you'll get an update by email within 24 hours."
)


def _span_attributes(position: int, trace_no: int) -> tuple[str, int, dict[str, object]]:
    """(name, OTLP kind, attributes) of the span at `position` in a trace."""
    common = {"session.id": f"session-{trace_no % 97}", "user.id": f"customer-{trace_no % 13}"}
    if position == 0:
        return (
            "support-agent run",
            1,
            {
                **common,
                "openinference.span.kind": "AGENT",
                "keel.pipeline": "support",
                "keel.tags": ["bench", "support"],
                "input.value": "my order 81723 has not arrived after five days",
                "output.value": ANSWER,
                "app.version": "2.4.1",
                "app.region": "eu-west-1",
                "deployment.environment": "bench",
                "retry.count": 0,
            },
        )
    if position == 1:
        return (
            "retrieve context",
            1,
            {
                **common,
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.id": "faq-shipping",
                "retrieval.documents.0.document.score": 0.83,
                "retrieval.documents.1.document.id": "faq-returns",
                "retrieval.documents.1.document.score": 0.71,
                "input.value": "order has not arrived",
                "db.system": "pgvector",
                "db.operation": "similarity_search",
                "retrieval.top_k": 4,
            },
        )
    if position == 2:
        return (
            "embeddings text-embedding-3-small",
            3,
            {
                **common,
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 12,
                "server.address": "api.openai.com",
                "server.port": 443,
                "gen_ai.request.encoding_formats": ["float"],
                "http.response.status_code": 200,
            },
        )
    if position == 3:
        return (
            "lookup_order",
            1,
            {
                **common,
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call_81723",
                "input.value": '{"order_id": 81723}',
                "output.value": '{"status": "in transit", "carrier": "DHL"}',
                "tool.latency_ms": 41.5,
            },
        )
    if position in (4, 6):  # GenAI, new names
        return (
            "chat gpt-4o-mini",
            3,
            {
                **common,
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.max_tokens": 256,
                "gen_ai.usage.input_tokens": 412 + position,
                "gen_ai.usage.output_tokens": 57,
                "gen_ai.usage.cache_read.input_tokens": 128,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.response.id": f"chatcmpl-{trace_no}-{position}",
                "server.address": "api.openai.com",
                "input.value": PROMPT,
                "output.value": ANSWER,
            },
        )
    if position == 5:  # GenAI, old names
        return (
            "chat claude-3-5-haiku",
            3,
            {
                **common,
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-3-5-haiku-20241022",
                "gen_ai.usage.prompt_tokens": 380,
                "gen_ai.usage.completion_tokens": 64,
                "gen_ai.request.temperature": 0.0,
                "gen_ai.request.max_tokens": 512,
                "gen_ai.prompt": PROMPT,
                "gen_ai.completion": ANSWER,
                "server.address": "api.anthropic.com",
                "http.response.status_code": 200,
                "gen_ai.response.finish_reasons": ["end_turn"],
            },
        )
    return (  # OpenInference
        "ChatOpenAI",
        1,
        {
            **common,
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 520,
            "llm.token_count.completion": 48,
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "You are a support assistant.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": PROMPT,
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": ANSWER,
            "llm.invocation_parameters": '{"temperature": 0.2}',
        },
    )


@dataclass
class Template:
    """A serialized export and where its ids sit, so each copy gets fresh ones cheaply."""

    data: bytes
    trace_offsets: list[list[int]]  # per trace: offsets of its 16-byte trace id
    span_offsets: list[list[int]]  # per span: offsets of its 8-byte id (own and as a parent)
    times: list[tuple[int, int]]  # (offset, value) of each span's start and end time
    base_ns: int  # the time the template's spans start from


def build_template(spans: int = SPANS_PER_EXPORT) -> Template:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {
        "service.name": "support-bot",
        "service.version": "2.4.1",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
    }.items():
        rs.resource.attributes.append(KeyValue(key=key, value=_value(value)))
    scope = rs.scope_spans.add()
    scope.scope.name = "bench.support"
    scope.scope.version = "1.0"
    trace_markers = [os.urandom(16) for _ in range(spans // SPANS_PER_TRACE)]
    span_markers = [os.urandom(8) for _ in range(spans)]
    base = time.time_ns() - 60 * 10**9
    for i in range(spans):
        trace_no, position = divmod(i, SPANS_PER_TRACE)
        name, kind, attributes = _span_attributes(position, trace_no)
        span = scope.spans.add()
        span.trace_id = trace_markers[trace_no]
        span.span_id = span_markers[i]
        if position:
            parent = 0 if position < 4 else 3 if position == 7 else 0
            span.parent_span_id = span_markers[trace_no * SPANS_PER_TRACE + parent]
        span.name = name
        span.kind = Span.SpanKind.ValueType(kind)
        span.start_time_unix_nano = base + i * 1_000_000
        span.end_time_unix_nano = base + i * 1_000_000 + (50 + 100 * position) * 1_000_000
        span.status.code = 1
        for key, value in attributes.items():
            span.attributes.append(KeyValue(key=key, value=_value(value)))
    data = request.SerializeToString()

    def offsets(marker: bytes) -> list[int]:
        found, at = [], data.find(marker)
        while at >= 0:
            found.append(at)
            at = data.find(marker, at + 1)
        return found

    times = {
        at: value
        for span in scope.spans
        for value in (span.start_time_unix_nano, span.end_time_unix_nano)
        for at in offsets(struct.pack("<Q", value))
    }
    return Template(
        data,
        [offsets(m) for m in trace_markers],
        [offsets(m) for m in span_markers],
        sorted(times.items()),
        base,
    )


def export_body(template: Template, at_ns: int | None = None) -> bytes:
    """A copy of the template with random ids (as OpenTelemetry SDKs make them: no two exports
    share one) and its spans moved to start at `at_ns` (default: now)."""
    body = bytearray(template.data)
    trace_ids = os.urandom(16 * len(template.trace_offsets))
    for t, places in enumerate(template.trace_offsets):
        trace_id = trace_ids[16 * t : 16 * t + 16]
        for at in places:
            body[at : at + 16] = trace_id
    span_ids = os.urandom(8 * len(template.span_offsets)).replace(b"\0", b"\1")
    for s, places in enumerate(template.span_offsets):
        span_id = span_ids[8 * s : 8 * s + 8]
        for at in places:
            body[at : at + 8] = span_id
    shift = (time.time_ns() if at_ns is None else at_ns) - template.base_ns
    pack = _TIME.pack_into
    for at, value in template.times:
        pack(body, at, value + shift)
    return bytes(body)


_TIME = struct.Struct("<Q")


# -- the load ---------------------------------------------------------------------------------


class Load:
    def __init__(self, port: int, template: Template, duration: float) -> None:
        self.port = port
        self.template = template
        self.duration = duration
        self.run = Run()

    async def connection(self, deadline: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"POST /v1/traces HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
            "content-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n"
        )
        try:
            while perf_counter() < deadline:
                body = export_body(self.template)
                started = perf_counter()
                writer.write(head.format(len(body)).encode() + body)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.run.exports += 1
                if status_line.split(b" ", 2)[1] == b"200":
                    self.run.spans_sent += SPANS_PER_EXPORT
                    self.run.latencies.append(perf_counter() - started)
                else:
                    self.run.errors += 1
        finally:
            writer.close()

    async def go(self, connections: int) -> None:
        started = perf_counter()
        deadline = started + self.duration
        await asyncio.gather(*(self.connection(deadline) for _ in range(connections)))
        self.run.load_s = perf_counter() - started


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        return str(resp.read().decode())


def pending_spans(base: str) -> int:
    for line in http_text(base + "/metrics").splitlines():
        if line.startswith("keel_spans_pending "):
            return int(float(line.split()[1]))
    raise RuntimeError("/metrics has no keel_spans_pending")


def pending_records(base: str) -> int:
    """Log entries not yet in the database (/healthz): 0 once everything accepted is stored."""
    return int(orjson.loads(http_text(base + "/healthz"))["records_pending"])


def count_spans(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])


def cpu_seconds(pid: int) -> float:
    """CPU time of Keel's process and of any live child process it started."""
    total = 0.0
    for each in (pid, *children(pid)):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_ticks() -> list[int]:
    """The machine's CPU time counters (the `cpu` line of /proc/stat)."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of CPU time the hypervisor gave to other guests between two readings."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return delta[7] / max(sum(delta), 1)  # user nice system idle iowait irq softirq steal ...


def reference_loop_ms() -> float:
    """A fixed pure-Python workload's time (best of 5): how fast this machine's CPU is today,
    which moves every figure here (runs on different days compare through it)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        sum(i * i for i in range(3_000_000))
        best = min(best, time.process_time() - t0)
    return best * 1000


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def wait_healthy(base: str, proc: object, give_up_s: float = 30) -> None:
    t0 = perf_counter()
    while perf_counter() - t0 < give_up_s:
        try:
            http_text(base + "/healthz")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"Keel did not answer /healthz within {give_up_s}s")


def one_run(s: Settings, template: Template) -> Run:
    keel_cpu, load_cpu = cpus()
    os.sched_setaffinity(0, {load_cpu})
    with tempfile.TemporaryDirectory(prefix="keel-bench-ingest-") as name:
        tmp = Path(name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [*keel_command(), "serve", "--port", str(port), "--data-dir", str(tmp / "data")]
        keel = spawn(cmd, keel_cpu, tmp / "keel.log", {**keel_env(), **s.env})
        if not s.one_core:  # the writer's SQLite work and fsyncs run on threads: both CPUs
            os.sched_setaffinity(keel.pid, {keel_cpu, load_cpu})
        try:
            wait_healthy(base, keel)
            load = Load(port, template, s.duration)
            cpu0, stat0 = cpu_seconds(keel.pid), cpu_ticks()
            t0 = perf_counter()
            asyncio.run(load.go(s.connections))
            run = load.run
            run.steal = steal_share(stat0, cpu_ticks())
            run.backlog_at_end = pending_spans(base)
            run.load_average = Path("/proc/loadavg").read_text().split()[0]
            while pending_records(base) > 0:
                if perf_counter() - t0 > s.duration * 20 + 60:
                    raise RuntimeError("the record pipeline did not drain")
                time.sleep(0.01)
            run.stored_s = perf_counter() - t0
            run.cpu_s = cpu_seconds(keel.pid) - cpu0
            run.peak_rss_mb = proc_status_kb(keel.pid, "VmHWM") / 1024
            run.helper_rss_mb = sum(proc_status_kb(c, "VmHWM") for c in children(keel.pid)) / 1024
            run.stored = count_spans(tmp / "data" / "keel.db")
        except Exception:
            log = tmp / "keel.log"
            if log.exists():
                sys.stderr.write("\n".join(log.read_text().splitlines()[-30:]) + "\n")
            raise
        finally:
            stop(keel)
    return run


# -- the report -------------------------------------------------------------------------------


def section(s: Settings, runs: list[Run], reference_ms: float) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    accepted = statistics.median(r.accepted_rate for r in runs)
    stored = statistics.median(r.stored_rate for r in runs)
    lost = sum(r.spans_sent - r.stored for r in runs)
    ok = stored >= TARGET and lost == 0

    def verdict(passed: bool) -> str:
        return "pass" if passed else "**FAIL**"

    lines = [
        f"Measured {date} on {machine()}; Keel at `{git_revision()}`; command `make bench-ingest`.",
        "",
        "| Measure | Result | Target | |",
        "|---|---:|---:|:---:|",
        f"| Accepted (answered 200), median of {len(runs)} runs | **{accepted:,.0f} spans/s** "
        f"| ≥ {TARGET:,} | {verdict(accepted >= TARGET)} |",
        f"| Stored in SQLite, end to end, median | **{stored:,.0f} spans/s** | ≥ {TARGET:,} "
        f"| {verdict(ok)} |",
        f"| Spans lost (sent and answered 200, not in the spans table) | **{lost}** | 0 "
        f"| {verdict(lost == 0)} |",
        "",
        f"Each run: {s.connections} keep-alive connections post protobuf exports of "
        f"{SPANS_PER_EXPORT} spans (~15 attributes each, LLM/embedding/tool/retrieval/agent "
        f"spans in traces of {SPANS_PER_TRACE}) back to back for {s.duration:g} s. Stored "
        "spans/s: all spans in the database over the time from the first request to the last "
        "row written, checked by counting the table's rows. "
        + (
            "Keel is pinned to CPU 0."
            if s.one_core
            else "Keel may use both CPUs (request handling, decoding and mapping in its process; "
            "the SQLite writes of spans in its span writer process, `sqlite_writer_process`); "
            "the load generator is pinned to CPU 1. Keel CPU per span counts both processes."
        )
        + (f" Settings: {', '.join(f'`{k}={v}`' for k, v in s.env.items())}." if s.env else "")
        + " Load average: the machine's, other processes included; steal: the share of the"
        " machine's CPU time its hypervisor gave elsewhere during the load.",
        "",
        f"Machine speed today: a reference pure-Python loop (`sum(i * i for i in "
        f"range(3_000_000))`, best of 5) takes **{reference_ms:.0f} ms** on it.",
        "",
        "| Run | Exports (non-200) | Spans accepted | Accepted spans/s | Stored spans/s "
        "| Backlog at end of load | Export p50 / p99 | Keel CPU per span "
        "| Keel peak RSS (+ helper) | Load average | Steal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        lat = sorted(r.latencies)
        p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
        lines.append(
            f"| {i} | {r.exports:,} ({r.errors}) | {r.spans_sent:,} | {r.accepted_rate:,.0f} "
            f"| {r.stored_rate:,.0f} | {r.backlog_at_end:,} | {p50:.0f} / {p99:.0f} ms "
            f"| {r.cpu_s / max(r.stored, 1) * 1e6:.0f} µs "
            f"| {r.peak_rss_mb:.0f} (+ {r.helper_rss_mb:.0f}) MB "
            f"| {r.load_average} | {r.steal:.0%} |"
        )
    return "\n".join(lines)


def write_markdown(body: str) -> None:
    text = BENCHMARKS_MD.read_text()
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{INTRO}{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS_MD.write_text(f"{head}{START}\n{body}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--one-core", action="store_true", help="pin Keel to one CPU")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="KEEL_NAME=VALUE", help="for Keel"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.setting)
    s = Settings(args.runs, args.duration, args.connections, args.one_core, env)
    template = build_template()
    reference_ms = reference_loop_ms()
    print(
        f"export template: {len(template.data):,} bytes, {SPANS_PER_EXPORT} spans; "
        f"reference loop {reference_ms:.0f} ms",
        file=sys.stderr,
    )
    runs = []
    for i in range(s.runs):
        # Each run writes hundreds of MB; let the previous run's writeback finish so that one
        # run's disk flushing does not land in the next one.
        os.sync()
        time.sleep(3)
        run = one_run(s, template)
        runs.append(run)
        print(
            f"  run {i + 1}/{s.runs}: accepted {run.accepted_rate:,.0f} spans/s, stored "
            f"{run.stored_rate:,.0f} spans/s, {run.stored:,} of {run.spans_sent:,} stored, "
            f"{run.errors} errors",
            file=sys.stderr,
        )
    body = section(s, runs, reference_ms)
    print(body)
    if args.write:
        write_markdown(body)
        print(f"wrote {BENCHMARKS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
