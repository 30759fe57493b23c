"""`make bench`: what Keel adds on top of calling the upstream directly, on one core.

Starts benchmarks/fast_upstream.py pinned to CPU 1 and `keel serve` pinned to CPU 0 (one core
for Keel, SQLite in a temporary data dir, the record pipeline on as always), pins this process
(the load generator) to CPU 1, then measures, interleaving direct and via-Keel runs over a few
rounds and keeping the median round:

- time from spawning Keel to its first successful chat answer;
- non-streaming latency at c=1 (p50, p99) and what Keel adds to it;
- streaming time to first body byte at c=1 and what Keel adds to it;
- non-streaming throughput at c=50, and Keel's peak resident memory (VmHWM) meanwhile;
- that the records reached the database (GET /api/v1/requests) and the pipeline drained.

    .venv/bin/python benchmarks/gateway.py [--write] [--quick]

With --write, the results replace the section between the gateway markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from loadgen import Result, build_request, chat_body, run_load  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START, END = "<!-- gateway:start -->", "<!-- gateway:end -->"
KEEL_CPU, LOAD_CPU = 0, 1

CONFIG = """\
providers:
  up: {{type: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: "sk-bench"}}
models:
  - {{name: fast, targets: [{{provider: up, model: gpt-4o-mini}}]}}
"""

HEADER = """\
# Benchmarks

Scripts in `benchmarks/` measure; their latest results are written here. Run them with
`make bench` (`.venv/bin/python benchmarks/gateway.py --write` rewrites the section below).

## Gateway overhead

What Keel adds to a call, against calling the upstream directly. The upstream is
`benchmarks/fast_upstream.py`, a fake OpenAI server that answers from pre-built bytes, so that
what is measured is Keel. Keel runs on one core (CPU 0) with SQLite and the record pipeline
(write-ahead log, batch writer) on, as always; the upstream and the load generator
(`benchmarks/loadgen.py`, closed loop, HTTP/1.1 keep-alive) share CPU 1.

The comparison point is the LiteLLM proxy 1.108, which on this kind of machine serves about
130 requests/s on one core and adds about 7 ms per request. Targets: added latency at c=1
p50 ≤ 1 ms; throughput ≥ 20 times LiteLLM (≥ 2,600 requests/s on one core); streaming adds
≤ 2 ms to the time to first byte; resident memory under load ≤ 150 MB; ≤ 2 s from start to
the first answer.

"""


@dataclass
class Settings:
    rounds: int = 3
    requests: int = 3000  # c=1 non-streaming, per round and side
    stream_requests: int = 2000  # c=1 streaming
    connections: int = 50
    duration: float = 10.0  # seconds of the c=50 throughput run
    warmup: float = 1.5  # seconds of warm-up per side


@dataclass
class Side:
    """Per-round figures of one target (direct or Keel)."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    ttfb_p50: list[float] = field(default_factory=list)
    ttfb_p99: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    errors: int = 0
    requests: int = 0


@dataclass
class Report:
    settings: Settings
    direct: Side = field(default_factory=Side)
    keel: Side = field(default_factory=Side)
    startup_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    idle_rss_mb: float = float("nan")
    start_rss_mb: float = float("nan")
    pending_after_load: list[int] = field(default_factory=list)
    drain_after_load: list[float] = field(default_factory=list)
    drain_s: float = float("nan")
    api_ok: bool = False
    api_sample: str = ""
    notes: list[str] = field(default_factory=list)


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The CPUs this process may use when it starts: a run pins it to the load generator's CPU, and
# a second run in the same process must not take that for all there is (it once put Keel, its
# span writer and the load generator on one CPU for every run of `ingest.py` after the first).
_CPUS_AT_START = sorted(os.sched_getaffinity(0))


def cpus() -> tuple[int, int]:
    """CPU for Keel, CPU for the upstream and the load generator."""
    available = _CPUS_AT_START
    if len(available) < 2:
        return available[0], available[0]
    return available[KEEL_CPU], available[LOAD_CPU]


def spawn(cmd: list[str], cpu: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    # Threads the child starts later (thread pools, the SQLite driver's) inherit this mask.
    os.sched_setaffinity(proc.pid, {cpu})
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def keel_env() -> dict[str, str]:
    # Defaults only: open mode, SQLite in the data dir, whatever KEEL_* the caller has set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_LOG_LEVEL"] = "warning"
    return env


def keel_command() -> list[str]:
    script = Path(sys.executable).with_name("keel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "keel.cli.main"]


def http_json(url: str, timeout: float = 5) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return json.loads(resp.read())


# -- measurements -------------------------------------------------------------------------------


async def wait_for_answer(
    url: str, request: bytes, proc: subprocess.Popen[bytes], t0: float, give_up_s: float = 30
) -> float:
    """Seconds from `t0` to the first 200 answer to `request`."""
    while perf_counter() - t0 < give_up_s:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering")
        try:
            result = await run_load(url, request, requests=1)
        except OSError:
            await asyncio.sleep(0.005)
            continue
        if result.latencies:
            return perf_counter() - t0
        await asyncio.sleep(0.02)
    raise RuntimeError(f"no answer from {url} within {give_up_s}s")


@dataclass
class Target:
    name: str
    url: str
    plain: bytes
    stream: bytes
    side: Side
    pid: int | None = None  # Keel's, to read its memory


async def warm_up(target: Target, s: Settings) -> None:
    await run_load(target.url, target.plain, 1, duration=s.warmup / 3)
    await run_load(target.url, target.stream, 1, duration=s.warmup / 3)
    await run_load(target.url, target.plain, s.connections, duration=s.warmup / 3)


def note(result: Result, side: Side) -> dict[str, float]:
    side.errors += result.errors
    side.requests += result.completed
    return result.summary()


async def one_round(targets: list[Target], s: Settings, report: Report) -> None:
    for t in targets:
        r = note(await run_load(t.url, t.plain, 1, requests=s.requests), t.side)
        t.side.p50.append(r["p50_ms"])
        t.side.p99.append(r["p99_ms"])
    for t in targets:
        r = note(await run_load(t.url, t.stream, 1, requests=s.stream_requests, ttfb=True), t.side)
        t.side.ttfb_p50.append(r["ttfb_p50_ms"])
        t.side.ttfb_p99.append(r["ttfb_p99_ms"])
    for t in targets:
        r = note(await run_load(t.url, t.plain, s.connections, duration=s.duration), t.side)
        t.side.rps.append(r["rps"])
        if t.pid is not None:
            report.peak_rss_mb = proc_status_kb(t.pid, "VmHWM") / 1024
            report.pending_after_load.append(pending_records(t.url))
            # Let the writer catch up, so its backlog does not land on the next measurement.
            drained = await asyncio.to_thread(wait_drained, t.url, 30)
            report.drain_after_load.append(drained)


def pending_records(chat_url: str) -> int:
    base = chat_url.split("/v1/", 1)[0]
    body = http_json(base + "/healthz")
    assert isinstance(body, dict)
    return int(body.get("records_pending") or 0)


async def measure(
    upstream_url: str, keel_url: str, keel: subprocess.Popen[bytes], s: Settings, report: Report
) -> None:
    def target(name: str, url: str, side: Side, pid: int | None) -> Target:
        return Target(
            name,
            url,
            build_request(url, chat_body("fast")),
            build_request(url, chat_body("fast", stream=True)),
            side,
            pid,
        )

    direct = target("direct", upstream_url, report.direct, None)
    via = target("keel", keel_url, report.keel, keel.pid)
    for t in (direct, via):
        await warm_up(t, s)
    for i in range(s.rounds):
        # Alternate who goes first, so that drift in the machine's speed hits both sides.
        order = [direct, via] if i % 2 == 0 else [via, direct]
        started = perf_counter()
        await one_round(order, s, report)
        print(f"  round {i + 1}/{s.rounds}: {perf_counter() - started:.1f}s", file=sys.stderr)


def wait_drained(chat_url: str, timeout: float) -> float:
    """Seconds until /healthz reports no pending records (NaN if it never does)."""
    t0 = perf_counter()
    while perf_counter() - t0 < timeout:
        if pending_records(chat_url) == 0:
            return perf_counter() - t0
        time.sleep(0.02)
    return float("nan")


def check_records(keel_base: str, report: Report) -> None:
    report.drain_s = wait_drained(keel_base + "/v1/", 60)
    body = http_json(keel_base + "/api/v1/requests?limit=1")
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and data:
        report.api_ok = True
        row = data[0]
        report.api_sample = (
            f"id {row.get('id')}, model {row.get('model')}, status "
            f"{row.get('status_code')}, {row.get('input_tokens')}+"
            f"{row.get('output_tokens')} tokens"
        )


# -- the whole run ------------------------------------------------------------------------------


@dataclass
class Running:
    upstream_port: int
    keel_port: int
    keel: subprocess.Popen[bytes]
    spawned_at: float  # perf_counter() just before Keel was spawned


@contextlib.contextmanager
def processes(tmp: Path, report: Report) -> Iterator[Running]:
    """Start the upstream, then Keel; stop both on the way out."""
    keel_cpu, load_cpu = cpus()
    if keel_cpu == load_cpu:
        report.notes.append("only one CPU available: Keel shares it with the load generator")
    os.sched_setaffinity(0, {load_cpu})
    up_port, keel_port = free_port(), free_port()
    (tmp / "keel.yaml").write_text(CONFIG.format(port=up_port))
    upstream = spawn(
        [sys.executable, str(HERE / "fast_upstream.py"), "--port", str(up_port)],
        load_cpu,
        tmp / "upstream.log",
        dict(os.environ),
    )
    keel: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(up_port, upstream)
        t0 = perf_counter()
        keel = spawn(
            [
                *keel_command(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(keel_port),
                "--config",
                str(tmp / "keel.yaml"),
                "--data-dir",
                str(tmp / "data"),
            ],
            keel_cpu,
            tmp / "keel.log",
            keel_env(),
        )
        yield Running(up_port, keel_port, keel, t0)
    finally:
        if keel is not None:
            stop(keel)
        stop(upstream, signal.SIGTERM)


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(500):
        if proc.poll() is not None:
            raise RuntimeError("fast_upstream exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return
        time.sleep(0.01)
    raise RuntimeError("fast_upstream did not start")


def run(s: Settings) -> Report:
    report = Report(s)
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as name:
        tmp = Path(name)
        try:
            with processes(tmp, report) as procs:
                keel = procs.keel
                upstream_url = f"http://127.0.0.1:{procs.upstream_port}/v1/chat/completions"
                keel_url = f"http://127.0.0.1:{procs.keel_port}/v1/chat/completions"
                first = build_request(keel_url, chat_body("fast"))
                loop = _new_loop()
                try:
                    report.startup_s = loop.run_until_complete(
                        wait_for_answer(keel_url, first, keel, procs.spawned_at)
                    )
                    print(f"  Keel answered {report.startup_s:.2f}s after spawn", file=sys.stderr)
                    report.start_rss_mb = proc_status_kb(keel.pid, "VmRSS") / 1024
                    loop.run_until_complete(measure(upstream_url, keel_url, keel, s, report))
                finally:
                    loop.close()
                check_records(f"http://127.0.0.1:{procs.keel_port}", report)
                report.idle_rss_mb = proc_status_kb(keel.pid, "VmRSS") / 1024
        except Exception:
            log = tmp / "keel.log"
            if log.exists():
                sys.stderr.write("--- keel.log (tail) ---\n")
                sys.stderr.write("\n".join(log.read_text().splitlines()[-30:]) + "\n")
            raise
    return report


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


# -- the report ---------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def added(keel: list[float], direct: list[float]) -> float:
    # Per round, then the median: each round's pair ran back to back on the same machine state.
    return med([k - d for k, d in zip(keel, direct, strict=True)])


def verdict(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def table(r: Report) -> str:
    d, k = r.direct, r.keel
    add50, add99 = added(k.p50, d.p50), added(k.p99, d.p99)
    tadd50, tadd99 = added(k.ttfb_p50, d.ttfb_p50), added(k.ttfb_p99, d.ttfb_p99)
    rps = med(k.rps)
    rows = [
        (
            "Added latency, c=1, p50",
            f"{med(d.p50):.3f} ms",
            f"{med(k.p50):.3f} ms",
            f"**{add50:.3f} ms**",
            "≤ 1 ms",
            verdict(add50 <= 1.0),
        ),
        (
            "Added latency, c=1, p99",
            f"{med(d.p99):.3f} ms",
            f"{med(k.p99):.3f} ms",
            f"{add99:.3f} ms",
            "—",
            "",
        ),
        (
            "Added time to first byte, streaming, c=1, p50",
            f"{med(d.ttfb_p50):.3f} ms",
            f"{med(k.ttfb_p50):.3f} ms",
            f"**{tadd50:.3f} ms**",
            "≤ 2 ms",
            verdict(tadd50 <= 2.0),
        ),
        (
            "Added time to first byte, streaming, c=1, p99",
            f"{med(d.ttfb_p99):.3f} ms",
            f"{med(k.ttfb_p99):.3f} ms",
            f"{tadd99:.3f} ms",
            "—",
            "",
        ),
        (
            f"Throughput, c={r.settings.connections}, non-streaming",
            f"{med(d.rps):,.0f} req/s",
            f"**{rps:,.0f} req/s**",
            f"{rps / 130:.0f} x LiteLLM",
            "≥ 2,600 req/s",
            verdict(rps >= 2600),
        ),
        (
            "Keel peak RSS under load (VmHWM)",
            "",
            f"**{r.peak_rss_mb:.1f} MB**",
            "",
            "≤ 150 MB",
            verdict(r.peak_rss_mb <= 150),
        ),
        (
            "Spawn to first chat answer",
            "",
            f"**{r.startup_s:.2f} s**",
            "",
            "≤ 2 s",
            verdict(r.startup_s <= 2.0),
        ),
    ]
    lines = [
        "| Measure | Direct | Via Keel | Keel adds | Target | Result |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rounds_table(r: Report) -> str:
    lines = [
        "| Round | p50 direct / Keel (ms) | TTFB p50 direct / Keel (ms) | req/s direct / Keel |",
        "|---:|---:|---:|---:|",
    ]
    d, k = r.direct, r.keel
    for i in range(len(k.p50)):
        lines.append(
            f"| {i + 1} | {d.p50[i]:.3f} / {k.p50[i]:.3f} | "
            f"{d.ttfb_p50[i]:.3f} / {k.ttfb_p50[i]:.3f} | "
            f"{d.rps[i]:,.0f} / {k.rps[i]:,.0f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB memory, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def section(r: Report) -> str:
    s = r.settings
    d, k = r.direct, r.keel
    pairs = zip(r.pending_after_load, r.drain_after_load, strict=True)
    drains = ", ".join(f"{p:,} (0 after {d:.2f} s)" for p, d in pairs) or "n/a"
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Measured {date} on {machine()}; Keel at `{git_revision()}`; command `make bench`.",
        "",
        table(r),
        "",
        f"Median of {s.rounds} interleaved rounds; each round runs {s.requests:,} non-streaming "
        f"and {s.stream_requests:,} streaming requests at c=1 and {s.duration:g} s at "
        f'c={s.connections}, direct then via Keel (the order alternates). "Keel adds" is the '
        "median of the per-round differences.",
        "",
        rounds_table(r),
        "",
        f"- Errors (non-200 or broken connections): direct {d.errors} of {d.requests:,}, "
        f"via Keel {k.errors} of {k.requests:,}.",
        "- Records: `GET /api/v1/requests?limit=1` "
        + (f"answered ({r.api_sample})" if r.api_ok else "**did not return a record**")
        + "; `records_pending` right after each throughput run: "
        + drains
        + (
            f"; 0 again {r.drain_s:.2f} s after the last run."
            if r.drain_s == r.drain_s
            else "; **still not 0 60 s after the last run**."
        ),
        f"- Keel's resident memory: {r.start_rss_mb:.0f} MB after its first answer, "
        f"{r.idle_rss_mb:.0f} MB once idle after the run (VmHWM is the peak since start).",
    ]
    parts += [f"- {n}" for n in r.notes]
    return "\n".join(parts)


def write_markdown(body: str) -> None:
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER + f"{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS_MD.write_text(f"{head}{START}\n{body}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds of each throughput run")
    args = parser.parse_args()
    s = Settings()
    if args.quick:
        s = Settings(rounds=1, requests=500, stream_requests=300, duration=2.0, warmup=0.6)
    if args.rounds:
        s.rounds = args.rounds
    if args.duration:
        s.duration = args.duration
    started = perf_counter()
    report = run(s)
    body = section(report)
    print(body)
    print(f"\n(benchmark took {perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.write:
        write_markdown(body)
        print(f"wrote {BENCHMARKS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
