"""Analytics rollups: each counted call of a batch, added once to the `rollups` table.

Counted calls are gateway request records (final ones, and the stubs of interrupted calls) and
spans of kind llm/embedding with `counted` set. `BatchCounter` runs inside the record
pipeline's transaction (storage/batch.py): it adds only the rows that transaction actually
stored, so a replayed log or an exporter's re-sent batch adds nothing, and a stream's stub that
its final record replaces is taken out again (sign -1) as the final goes in.

How "actually stored" is known:
- SQLite: the batch runs under `BEGIN IMMEDIATE` (the writer holds the lock from its first
  statement), and `stored_spans` / `stored_requests` read which keys were there before the
  insert.
- PostgreSQL: several replicas may write the same span at once, so after the insert we ask
  which rows carry this transaction's id (`xmin`): only those were inserted (or, for a stub
  replaced by its final record, updated) by us.

The aggregation is done in Python per batch (`Rollup`): each call adds to its minute total and
to one hourly row per dimension value; the upsert then adds the batch's rows to the stored ones
(`col = col + excluded.col`), rows sorted by key so that concurrent writers never deadlock.
"""

from __future__ import annotations

import bisect
import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Insert, bindparam, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.storage.tables import HISTOGRAM_BASE, HISTOGRAM_BUCKETS, requests, rollups, spans

__all__ = [
    "COUNTED_KINDS",
    "HISTOGRAM_BOUNDS",
    "LATENCY_COLUMNS",
    "SCALAR_COLUMNS",
    "TTFT_COLUMNS",
    "VALUE_COLUMNS",
    "VALUE_MAX",
    "BatchCounter",
    "CountedSpan",
    "Rollup",
    "add_rows",
    "dimension_value",
    "histogram_bucket",
    "is_counted_span",
    "prompt_value",
    "sqlite_key_lookups",
    "sqlite_upsert_sql",
]

COUNTED_KINDS = ("llm", "embedding")
CACHE_HITS = ("hit", "semantic-hit")
SCALAR_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_saved_usd",
    "cache_hits",
    "latency_count",
    "latency_sum_ms",
    "ttft_count",
    "ttft_sum_ms",
)
LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(HISTOGRAM_BUCKETS))
TTFT_COLUMNS = tuple(f"ttft_{i:02d}" for i in range(HISTOGRAM_BUCKETS))
VALUE_COLUMNS = SCALAR_COLUMNS + LATENCY_COLUMNS + TTFT_COLUMNS
_LAT0 = len(SCALAR_COLUMNS)  # index of lat_00 in a value vector
_TTFT0 = _LAT0 + HISTOGRAM_BUCKETS
_WIDTH = len(VALUE_COLUMNS)
_FLOAT_COLUMNS = frozenset({"cost_usd", "cost_saved_usd", "latency_sum_ms", "ttft_sum_ms"})
# Upper bounds of buckets 0..n-2 (the last bucket is open): bucket i holds
# [BASE**(i-1), BASE**i) ms. Bisecting these exact floats, here and in SQL (query.py), puts a
# value in the same bucket whichever side computes it.
HISTOGRAM_BOUNDS = tuple(HISTOGRAM_BASE**i for i in range(HISTOGRAM_BUCKETS - 1))
VALUE_MAX = 256  # rollups.value is a String(256)
_DIMENSIONS = ("model", "provider", "pipeline", "customer", "key_id", "prompt", "source")
_CHUNK = 500  # keys per IN (...) lookup
# keys per SQLite look-up: each query is a round trip to the driver's thread, which waits for the
# event loop; SQLite binds at most 32,766 values (999 before 3.32)
_SQLITE_KEY_CHUNK = 8000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 450
_KEYS_JOIN = (
    "WITH k(t, s) AS (VALUES {}) SELECT spans.trace_id, spans.span_id FROM k CROSS JOIN spans"
    " ON spans.trace_id = k.t AND spans.span_id = k.s"
)
_T = TypeVar("_T")


def histogram_bucket(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds."""
    return bisect.bisect_right(HISTOGRAM_BOUNDS, ms)


def dimension_value(value: str | None) -> str:
    """How a dimension value is stored in `rollups.value` ("" when the call had none)."""
    if value is None:
        return ""
    return value[:VALUE_MAX]


def prompt_value(name: str | None, version: int | None) -> str | None:
    """The prompt dimension: "name@version", or the bare name when the version is unknown."""
    if name is None:
        return None
    return name if version is None else f"{name}@{version}"


def is_counted_span(span: SpanRecord) -> bool:
    return span.counted and span.kind in COUNTED_KINDS


class CountedSpan(Protocol):
    """What the rollups read of a span: a SpanRecord, or the record pipeline's row view
    (keel.storage.spans_repo.SpanRowView), which the writer makes without decoding the row."""

    @property
    def trace_id(self) -> str: ...
    @property
    def span_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def counted(self) -> bool: ...
    @property
    def start_time(self) -> float: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def pipeline(self) -> str | None: ...
    @property
    def customer(self) -> str | None: ...
    @property
    def prompt_name(self) -> str | None: ...
    @property
    def prompt_version(self) -> int | None: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def input_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def cached_tokens(self) -> int | None: ...
    @property
    def reasoning_tokens(self) -> int | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def ttft_ms(self) -> float | None: ...


# A new rollup row's values: counts are ints, sums of money and milliseconds floats.
_ZERO = tuple(0.0 if name in _FLOAT_COLUMNS else 0 for name in VALUE_COLUMNS)
_ZERO_SCALARS = _ZERO[:_LAT0]
_TargetKey = tuple[str, int, str, str]


_Calls = tuple[int, tuple[str | None, ...], tuple[str, ...]]  # (minute, dimensions, tags)


class Rollup:
    """The contributions of a set of calls to their rollup rows; `rows()` lists the rows.

    Calls are first summed per (minute, dimension values, tags): a batch of thousands of calls
    usually holds a few dozen such groups, and each group, not each call, is then added to its
    rows (its minute's total and one hourly row per dimension value and tag; hourly totals are
    summed from the minutes at the end). The adds are written out one by one: this runs for
    every counted call the writer stores, and a loop over (column, value) pairs costs several
    times more.
    """

    def __init__(self) -> None:
        # per group: the scalar columns' sums and the histograms' non-zero buckets
        self._groups: dict[_Calls, tuple[list[float], dict[int, int]]] = {}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def add_request(self, r: RequestRecord, sign: int = 1) -> None:
        self._add(
            sign,
            r.created_at,
            (
                r.model,
                r.provider,
                r.pipeline,
                r.customer,
                r.key_id,
                prompt_value(r.prompt_name, r.prompt_version),
                "gateway",
            ),
            r.tags,
            r.status_code >= 400 or r.error is not None,
            r.input_tokens,
            r.output_tokens,
            r.cached_tokens,
            r.reasoning_tokens,
            r.cost_usd,
            r.cost_saved_usd,
            r.cache_status in CACHE_HITS,
            r.latency_ms,
            r.ttft_ms,
        )

    def add_span(self, s: CountedSpan, sign: int = 1) -> None:
        self._add(
            sign,
            s.start_time,
            (
                s.model,
                s.provider,
                s.pipeline,
                s.customer,
                None,
                prompt_value(s.prompt_name, s.prompt_version),
                "otlp",
            ),
            s.tags,
            s.status == "error",
            s.input_tokens,
            s.output_tokens,
            s.cached_tokens,
            s.reasoning_tokens,
            s.cost_usd,
            None,
            False,
            s.duration_ms,
            s.ttft_ms,
        )

    def _add(
        self,
        sign: int,
        at: float,
        dimensions: tuple[str | None, ...],
        tags: list[str],
        failed: bool,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None,
        reasoning_tokens: int | None,
        cost: float | None,
        saved: float | None,
        hit: bool,
        latency: float | None,
        ttft: float | None,
    ) -> None:
        key = (int(at // 60) * 60, dimensions, tuple(tags) if tags else ())
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = (list(_ZERO_SCALARS), {})
        sums, buckets = group
        sums[0] += sign
        if failed:
            sums[1] += sign
        if input_tokens:
            sums[2] += sign * input_tokens
        if output_tokens:
            sums[3] += sign * output_tokens
        if cached_tokens:
            sums[4] += sign * cached_tokens
        if reasoning_tokens:
            sums[5] += sign * reasoning_tokens
        if cost:
            sums[6] += sign * cost
        if saved:
            sums[7] += sign * saved
        if hit:
            sums[8] += sign
        if latency is not None and latency == latency:  # not None, not NaN
            sums[9] += sign
            sums[10] += sign * latency
            i = _LAT0 + bisect.bisect_right(HISTOGRAM_BOUNDS, latency)
            buckets[i] = buckets.get(i, 0) + sign
        if ttft is not None and ttft == ttft:
            sums[11] += sign
            sums[12] += sign * ttft
            i = _TTFT0 + bisect.bisect_right(HISTOGRAM_BOUNDS, ttft)
            buckets[i] = buckets.get(i, 0) + sign

    def rows(self) -> list[tuple[Any, ...]]:
        """(grain, bucket, dimension, value, *VALUE_COLUMNS) per rollup row, sorted by key.

        Sorted so that concurrent writers lock the rows in one order (no deadlock).
        """
        out: dict[_TargetKey, list[float]] = {}
        for (minute, dimensions, tags), (sums, buckets) in self._groups.items():
            hour = minute - minute % 3600
            keys: list[_TargetKey] = [("m", minute, "", ""), ("h", hour, "", "")]
            for name, value in zip(_DIMENSIONS, dimensions, strict=True):
                keys.append(("h", hour, name, value[:VALUE_MAX] if value else ""))
            if tags:
                keys += [("h", hour, "tag", t) for t in {str(t)[:VALUE_MAX] for t in tags}]
            for key in keys:
                row = out.get(key)
                if row is None:
                    row = out[key] = list(_ZERO)
                for i, total in enumerate(sums):
                    row[i] += total
                for i, count in buckets.items():
                    row[i] += count
        return [(*key, *values) for key, values in sorted(out.items())]


# -- the batch --------------------------------------------------------------------------------


async def stored_requests(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, RequestRecord]:
    """The stored records among `ids` (with the fields the rollups read), by id."""
    names = ("id", *_REQUEST_FIELDS)
    found: dict[str, RequestRecord] = {}
    for chunk in _chunks(ids):
        query = select(*(requests.c[n] for n in names)).where(requests.c.id.in_(chunk))
        for row in await conn.execute(query):
            found[row.id] = _stored_request(row._mapping)
    return found


_REQUEST_FIELDS = (
    "trace_id",
    "span_id",
    "created_at",
    "endpoint",
    "model",
    "provider",
    "pipeline",
    "customer",
    "key_id",
    "prompt_name",
    "prompt_version",
    "tags",
    "status_code",
    "error",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_saved_usd",
    "cache_status",
    "latency_ms",
    "ttft_ms",
    "final",
)


def _stored_request(row: Any) -> RequestRecord:
    values = {n: row[n] for n in ("id", *_REQUEST_FIELDS)}
    values["final"] = bool(values["final"])
    values["tags"] = list(values["tags"] or [])
    return RequestRecord(**values)


async def stored_spans(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """SQLite: which of the (trace_id, span_id) keys are stored (primary-key lookups)."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    found: set[tuple[str, str]] = set()
    for sql, params in sqlite_key_lookups(keys):
        try:
            rows = await driver.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        found.update((t, s) for t, s in rows)
    return found


async def written_by_us_spans(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """PostgreSQL: the keys whose row this transaction inserted."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(keys):
        query = select(spans.c.trace_id, spans.c.span_id).where(
            tuple_(spans.c.trace_id, spans.c.span_id).in_(chunk), _ours()
        )
        found.update((t, s) for t, s in await conn.execute(query))
    return found


async def written_by_us_requests(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    """PostgreSQL: the ids whose row this transaction inserted or updated."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        query = select(requests.c.id).where(requests.c.id.in_(chunk), _ours())
        found.update(i for (i,) in await conn.execute(query))
    return found


def _ours() -> Any:
    return text("xmin = pg_current_xact_id()::xid")


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterable[list[_T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


async def add_rows(conn: AsyncConnection, dialect: str, rollup: Rollup) -> None:
    """Upsert the rollup's rows, adding to what is stored (within the caller's transaction)."""
    rows = rollup.rows()
    if not rows:
        return
    if dialect == "sqlite":
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        sql = sqlite_upsert_sql()
        try:
            await driver.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        return
    names = ("grain", "bucket", "dimension", "value", *VALUE_COLUMNS)
    await conn.execute(_upsert("postgresql"), [dict(zip(names, row, strict=True)) for row in rows])


@functools.lru_cache(maxsize=2)
def _upsert(dialect: str) -> Insert:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(rollups)
    return stmt.on_conflict_do_update(
        index_elements=["grain", "bucket", "dimension", "value"],
        set_={c: rollups.c[c] + stmt.excluded[c] for c in VALUE_COLUMNS},
    )


def sqlite_key_lookups(keys: Sequence[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """SQLite: the (statement, parameters) that find which of the (trace_id, span_id) keys are
    stored, a chunk of keys each (primary-key look-ups).

    Straight to the driver, like the inserts: SQLAlchemy's expanding IN costs more to compile
    than SQLite spends on the look-ups. A join from the keys, not `(trace_id, span_id) IN
    (VALUES ...)`: SQLite scans the whole table for that one.
    """
    for chunk in _chunks(keys, _SQLITE_KEY_CHUNK):
        placeholders = ", ".join(["(?, ?)"] * len(chunk))  # the values are bound
        yield _KEYS_JOIN.format(placeholders), [part for key in chunk for part in key]


@functools.lru_cache(maxsize=1)
def sqlite_upsert_sql() -> str:
    """SQLite: add one rollup row (positional, as Rollup.rows() lists them) to the stored one."""
    names = ("grain", "bucket", "dimension", "value", *VALUE_COLUMNS)
    stmt = _upsert("sqlite").values({n: bindparam(n) for n in names})
    compiled = stmt.compile(dialect=sqlite.dialect())
    assert compiled.positiontup is not None
    assert tuple(compiled.positiontup) == names
    return str(compiled)


class BatchCounter:
    """The counted calls of one batch that its transaction really stores; see the docstring.

    Use: `await counter.before_write(conn)`, write the rows, `await counter.after_write(conn)`.
    """

    def __init__(
        self, dialect: str, records: Sequence[RequestRecord], span_records: Sequence[CountedSpan]
    ) -> None:
        self._dialect = dialect
        # The same merge as requests_repo.write_requests: within a batch a final record wins
        # over a stub of the same id, and the first of equals wins.
        chosen: dict[str, RequestRecord] = {}
        for record in records:
            seen = chosen.get(record.id)
            if seen is None or (record.final and not seen.final):
                chosen[record.id] = record
        self._requests = chosen
        counted: dict[tuple[str, str], CountedSpan] = {}
        for span in span_records:
            if span.counted and span.kind in COUNTED_KINDS:
                counted.setdefault((span.trace_id, span.span_id), span)
        self._spans = counted
        self._replaced: dict[str, RequestRecord] = {}  # stored stubs a final record replaces

    async def before_write(self, conn: AsyncConnection) -> None:
        if self._requests:
            stored = await stored_requests(conn, list(self._requests))
            for record_id, old in stored.items():
                new = self._requests[record_id]
                if old.final or not new.final:
                    del self._requests[record_id]  # the stored row stays as it is
                else:
                    self._replaced[record_id] = old
        if self._spans and self._dialect == "sqlite":
            for key in await stored_spans(conn, list(self._spans)):
                del self._spans[key]

    async def after_write(self, conn: AsyncConnection) -> None:
        if self._dialect == "postgresql":
            if self._requests:
                ours = await written_by_us_requests(conn, list(self._requests))
                self._requests = {k: v for k, v in self._requests.items() if k in ours}
            if self._spans:
                mine = await written_by_us_spans(conn, list(self._spans))
                self._spans = {k: v for k, v in self._spans.items() if k in mine}
        rollup = Rollup()
        for record in self._requests.values():
            rollup.add_request(record)
            old = self._replaced.get(record.id)
            if old is not None:
                rollup.add_request(old, -1)
        for span in self._spans.values():
            rollup.add_span(span)
        await add_rows(conn, self._dialect, rollup)
