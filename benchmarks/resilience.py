"""What the resilience features cost on the request path, on one core for Keel.

Starts benchmarks/fast_upstream.py and three `keel serve` processes, all Keel processes pinned
to CPU 0 and the upstream and this load generator to CPU 1 (as benchmarks/gateway.py does):

- `cache`: the response cache on (memory). Added latency of an exact cache hit at c=1 (p50,
  p99) against calling the upstream directly. Every request after the first is a hit.
- `limits`: rate limits and budgets on, in Redis (`KEEL_REDIS_URL`): requests use a virtual key
  with generous rpm, tpm and a budget, so each one is checked against the limits, reserves its
  worst case and settles its cost. Redis is a `redis-server` of the benchmark's own, pinned to
  CPU 1 with the upstream: in production it runs on another machine, and left unpinned the
  kernel runs it on Keel's CPU right after each write, which charges Redis's own work to Keel.
  Without `redis-server` on the PATH, or with `KEEL_BENCH_REDIS` set, a free database of that
  server (default: the local one) is used instead, flushed afterwards.
- `plain`: the same without Redis, limits or budgets (a virtual key without limits).

Throughput at c=50 of `limits` against `plain`, in interleaved rounds; the median round counts.

    .venv/bin/python benchmarks/resilience.py [--write] [--quick]

With --write, the results replace the section between the resilience markers in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import (  # noqa: E402
    BENCHMARKS_MD,
    _new_loop,
    _wait_port,
    cpus,
    free_port,
    git_revision,
    keel_command,
    keel_env,
    machine,
    med,
    spawn,
    stop,
    verdict,
    wait_drained,
    wait_for_answer,
)
from loadgen import Result, build_request, chat_body, run_load  # noqa: E402

START, END = "<!-- resilience:start -->", "<!-- resilience:end -->"
REDIS_HOST = os.environ.get("KEEL_BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_SERVER = None if "KEEL_BENCH_REDIS" in os.environ else shutil.which("redis-server")
CLAIM = "keelbench:resilience:claim"

PROVIDERS = """\
providers:
  up: {{type: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: "sk-bench"}}
models:
  - {{name: fast, targets: [{{provider: up, model: gpt-4o-mini}}]}}
"""
CACHE = "cache: {enabled: true, ttl_s: 3600}\n"
GENEROUS = {
    "name": "bench",
    "rpm": 1_000_000_000,
    "tpm": 1_000_000_000_000,
    "budget_usd": 1_000_000,
    "budget_period": "total",
}

INTRO = """\
## Resilience: cache hits, limits and budgets

What the response cache, rate limits and budgets cost on the request path
(`benchmarks/resilience.py`). Same machine setup as above: Keel on CPU 0, the fake upstream
and the load generator on CPU 1. Targets (issue 4): an exact cache hit adds ≤ 0.5 ms at c=1
p50 over calling the upstream directly; with limits and budgets on via Redis, throughput stays
≥ 70% of throughput with them off.

"""


@dataclass
class Settings:
    rounds: int = 3
    requests: int = 3000  # c=1 requests per round and side
    connections: int = 50
    duration: float = 6.0  # seconds of each c=50 run
    warmup: float = 1.0


@dataclass
class Report:
    settings: Settings
    direct_p50: list[float] = field(default_factory=list)
    direct_p99: list[float] = field(default_factory=list)
    hit_p50: list[float] = field(default_factory=list)
    hit_p99: list[float] = field(default_factory=list)
    plain_rps: list[float] = field(default_factory=list)
    limits_rps: list[float] = field(default_factory=list)
    errors: dict[str, dict[int, int]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    redis: str = ""  # where Redis ran, for the notes
    notes: list[str] = field(default_factory=list)


def tally(report: Report, name: str, result: Result) -> Result:
    report.requests[name] = report.requests.get(name, 0) + result.completed
    errors = report.errors.setdefault(name, {})
    for status, count in result.statuses.items():
        if status != 200:
            errors[status] = errors.get(status, 0) + count
    return result


# -- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def own_redis(tmp: Path, cpu: int, report: Report) -> Iterator[str]:
    """A Redis for the run: a `redis-server` of its own on `cpu` (no persistence), else a free
    database of the shared one."""
    if REDIS_SERVER is None:
        with free_redis_db() as url:
            report.redis = f"the local server, database {url.rsplit('/', 1)[1]}, not pinned"
            yield url
        return
    port = free_port()
    cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    proc = spawn([*cmd, "--appendonly", "no"], cpu, tmp / "redis.log", dict(os.environ))
    try:
        _wait_port(port, proc)
        report.redis = f"a redis-server of its own on CPU {cpu}"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc, signal.SIGTERM)


@contextlib.contextmanager
def free_redis_db() -> Iterator[str]:
    """An empty database of the local Redis, claimed for the run and flushed after it."""
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_HOST}/{db}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM, uuid.uuid4().hex, nx=True, ex=900):
                try:
                    yield f"{REDIS_HOST}/{db}"
                finally:
                    client.flushdb()
                return
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database among 1..15 at {REDIS_HOST}")


@dataclass
class Keel:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat(self) -> str:
        return f"{self.base}/v1/chat/completions"


def start_keel(tmp: Path, name: str, config: str, cpu: int, env: dict[str, str]) -> Keel:
    port = free_port()
    folder = tmp / name
    folder.mkdir()
    (folder / "keel.yaml").write_text(config)
    cmd = [
        *keel_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(folder / "keel.yaml"),
        "--data-dir",
        str(folder / "data"),
    ]
    return Keel(name, port, spawn(cmd, cpu, folder / "keel.log", {**keel_env(), **env}))


def create_key(keel: Keel, fields: dict[str, object]) -> str:
    req = urllib.request.Request(
        f"{keel.base}/api/v1/keys",
        data=json.dumps(fields).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # loopback only
        return str(json.loads(resp.read())["key"])


@contextlib.contextmanager
def processes(tmp: Path, report: Report) -> Iterator[tuple[str, dict[str, Keel]]]:
    keel_cpu, load_cpu = cpus()
    if keel_cpu == load_cpu:
        report.notes.append("only one CPU available: Keel shares it with the load generator")
    os.sched_setaffinity(0, {load_cpu})
    up_port = free_port()
    base = PROVIDERS.format(port=up_port)
    upstream = spawn(
        [sys.executable, str(HERE / "fast_upstream.py"), "--port", str(up_port)],
        load_cpu,
        tmp / "upstream.log",
        dict(os.environ),
    )
    keels: dict[str, Keel] = {}
    try:
        _wait_port(up_port, upstream)
        with own_redis(tmp, load_cpu, report) as redis_url:
            keels["cache"] = start_keel(tmp, "cache", base + CACHE, keel_cpu, {})
            keels["plain"] = start_keel(tmp, "plain", base, keel_cpu, {})
            keels["limits"] = start_keel(
                tmp, "limits", base, keel_cpu, {"KEEL_REDIS_URL": redis_url}
            )
            yield f"http://127.0.0.1:{up_port}/v1/chat/completions", keels
    finally:
        for k in keels.values():
            stop(k.proc)
        stop(upstream, signal.SIGTERM)


# -- measurements -------------------------------------------------------------------------------


async def measure(upstream: str, keels: dict[str, Keel], s: Settings, report: Report) -> None:
    plain_body = chat_body("fast")
    direct = build_request(upstream, plain_body)
    hit = build_request(keels["cache"].chat, plain_body)
    # Both throughput sides use a virtual key, so the only difference is the limits.
    keys = {
        "plain": create_key(keels["plain"], {"name": "bench"}),
        "limits": create_key(keels["limits"], GENEROUS),
    }
    loaded = {
        name: build_request(keels[name].chat, plain_body, {"authorization": f"Bearer {key}"})
        for name, key in keys.items()
    }
    for url, req in [(upstream, direct), (keels["cache"].chat, hit)] + [
        (keels[n].chat, loaded[n]) for n in loaded
    ]:
        await run_load(url, req, 1, duration=s.warmup / 2)
        await run_load(url, req, s.connections, duration=s.warmup / 2)
    for name in loaded:
        await asyncio.to_thread(wait_drained, keels[name].chat, 30)

    for i in range(s.rounds):
        started = perf_counter()
        pairs = [("direct", upstream, direct), ("cache", keels["cache"].chat, hit)]
        for name, url, req in pairs if i % 2 == 0 else pairs[::-1]:
            r = tally(report, name, await run_load(url, req, 1, requests=s.requests)).summary()
            p50, p99 = (
                (report.direct_p50, report.direct_p99)
                if name == "direct"
                else (
                    report.hit_p50,
                    report.hit_p99,
                )
            )
            p50.append(r["p50_ms"])
            p99.append(r["p99_ms"])
        order = ["plain", "limits"] if i % 2 == 0 else ["limits", "plain"]
        for name in order:
            url = keels[name].chat
            r = tally(
                report, name, await run_load(url, loaded[name], s.connections, duration=s.duration)
            )
            (report.plain_rps if name == "plain" else report.limits_rps).append(r.rps)
            # Let the record writer catch up, so its backlog does not land on the other side.
            await asyncio.to_thread(wait_drained, url, 30)
        print(f"  round {i + 1}/{s.rounds}: {perf_counter() - started:.1f}s", file=sys.stderr)


def run(s: Settings) -> Report:
    report = Report(s)
    with tempfile.TemporaryDirectory(prefix="keel-bench-res-") as name:
        tmp = Path(name)
        try:
            with processes(tmp, report) as (upstream, keels):
                loop = _new_loop()
                try:
                    for k in keels.values():
                        first = build_request(k.chat, chat_body("fast"))
                        loop.run_until_complete(
                            wait_for_answer(k.chat, first, k.proc, perf_counter())
                        )
                    loop.run_until_complete(measure(upstream, keels, s, report))
                finally:
                    loop.close()
        except Exception:
            for log in sorted(tmp.glob("*/keel.log")):
                sys.stderr.write(f"--- {log} (tail) ---\n")
                sys.stderr.write("\n".join(log.read_text().splitlines()[-20:]) + "\n")
            raise
    return report


# -- the report ---------------------------------------------------------------------------------


def section(r: Report) -> str:
    s = r.settings
    add50 = med([h - d for h, d in zip(r.hit_p50, r.direct_p50, strict=True)])
    add99 = med([h - d for h, d in zip(r.hit_p99, r.direct_p99, strict=True)])
    plain, limits = med(r.plain_rps), med(r.limits_rps)
    share = med([on / off for on, off in zip(r.limits_rps, r.plain_rps, strict=True)])
    rows = [
        ("Exact cache hit, added latency, c=1, p50", f"{med(r.direct_p50):.3f} ms",
         f"{med(r.hit_p50):.3f} ms", f"**{add50:.3f} ms**", "≤ 0.5 ms", verdict(add50 <= 0.5)),
        ("Exact cache hit, added latency, c=1, p99", f"{med(r.direct_p99):.3f} ms",
         f"{med(r.hit_p99):.3f} ms", f"{add99:.3f} ms", "—", ""),
        (f"Throughput, c={s.connections}, limits and budgets on (Redis) vs off",
         f"{plain:,.0f} req/s", f"{limits:,.0f} req/s", f"**{share:.0%}**", "≥ 70%",
         verdict(share >= 0.70)),
    ]  # fmt: skip
    lines = [
        "| Measure | Baseline | With the feature | Result | Target | |",
        "|---|---:|---:|---:|---:|:---:|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    per_round = [
        "| Round | p50 direct / cache hit (ms) | req/s off / on |",
        "|---:|---:|---:|",
    ]
    for i in range(len(r.hit_p50)):
        per_round.append(
            f"| {i + 1} | {r.direct_p50[i]:.3f} / {r.hit_p50[i]:.3f} | "
            f"{r.plain_rps[i]:,.0f} / {r.limits_rps[i]:,.0f} |"
        )
    errors = ", ".join(
        f"{name} {sum(r.errors.get(name, {}).values())} of {r.requests.get(name, 0):,}"
        + (f" ({r.errors[name]})" if r.errors.get(name) else "")
        for name in ("direct", "cache", "plain", "limits")
    )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Measured {date} on {machine()}; Keel at `{git_revision()}`; command "
        "`.venv/bin/python benchmarks/resilience.py --write`.",
        "",
        *lines,
        "",
        f"Median of {s.rounds} interleaved rounds (the order alternates); each round runs "
        f"{s.requests:,} requests at c=1 directly and as cache hits, then {s.duration:g} s at "
        f"c={s.connections} with limits off and on. Added latency and the throughput share are "
        "medians of the per-round figures. Baseline of the cache rows: the upstream directly; "
        "of the throughput row: Keel with a virtual key and no limits.",
        "",
        *per_round,
        "",
        f"- Errors (non-200): {errors}.",
        f"- Limits on: one virtual key with rpm {GENEROUS['rpm']:,}, tpm {GENEROUS['tpm']:,} and "
        f"a budget of {GENEROUS['budget_usd']:,} USD (total), so every request is checked, "
        f"reserves its worst case and settles its cost in Redis ({r.redis}).",
        "- Cache on: memory backend; every request after the first is an exact hit.",
    ]
    parts += [f"- {n}" for n in r.notes]
    return "\n".join(parts)


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
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    args = parser.parse_args()
    s = Settings(rounds=1, requests=500, duration=2.0, warmup=0.5) if args.quick else Settings()
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
