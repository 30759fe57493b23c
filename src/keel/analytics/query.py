"""Dashboard and alert queries over counted calls: totals, time series and breakdowns.

Counted calls are gateway requests (source "gateway") and spans of kind llm/embedding with
`counted` set (source "otlp"). An error is a request with status >= 400 or an error message,
or a span with status "error"; latency is `latency_ms` (requests) or `duration_ms` (spans).

Where the answer comes from (the rollups rule). A range [since, until) is cut into
- whole hours, read from the hourly rollups, when the query has no filter or one filter on a
  dimension, and (breakdowns) has no filter or one on the dimension it groups by (not "tag":
  a call has several), and (series) its step is a multiple of an hour;
- whole minutes at the edges, read from the minute rollups, when the query has no filter (the
  minute grain holds totals only) and (series) its step is a multiple of a minute;
- the rest (sub-minute or sub-hour edges, or everything when the rollups cannot answer) from
  the raw `requests` and `spans` tables, aggregated in SQL through time indexes.
So every answer is exact, whichever tables served it; only percentiles are estimates: they
come from the latency histograms (buckets 1.3x wide), interpolated linearly within a bucket.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.analytics.rollups import (
    CACHE_HITS,
    HISTOGRAM_BOUNDS,
    SCALAR_COLUMNS,
    VALUE_COLUMNS,
    dimension_value,
    prompt_value,
)
from keel.storage.database import Database
from keel.storage.tables import HISTOGRAM_BASE, HISTOGRAM_BUCKETS, requests, rollups, scores, spans

__all__ = [
    "DIMENSIONS",
    "MAX_POINTS",
    "METRICS",
    "Filters",
    "breakdown",
    "score_summary",
    "series",
    "summary",
    "window_value",
]

METRICS: tuple[str, ...] = (
    "requests",
    "errors",
    "error_rate",
    "latency_avg",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "ttft_avg",
    "ttft_p50",
    "ttft_p95",
    "input_tokens",
    "output_tokens",
    "tokens",
    "cost_usd",
    "cost_saved_usd",
    "cache_hit_rate",
)
DIMENSIONS: tuple[str, ...] = (
    "model",
    "provider",
    "pipeline",
    "customer",
    "key_id",
    "prompt",
    "tag",
    "source",
)
SOURCES = ("gateway", "otlp")
MAX_POINTS = 10_000  # steps of one series
MAX_LIMIT = 1000  # rows of one breakdown
_PERCENTILES = frozenset(m for m in METRICS if m[-3:] in ("p50", "p95", "p99"))

_LAT0 = len(SCALAR_COLUMNS)
_TTFT0 = _LAT0 + HISTOGRAM_BUCKETS
_WIDTH = len(VALUE_COLUMNS)


@dataclass(frozen=True)
class Filters:
    """Which counted calls a query covers; None means any. `prompt` is "name" or "name@version"."""

    model: str | None = None
    provider: str | None = None
    pipeline: str | None = None
    customer: str | None = None
    key_id: str | None = None
    prompt: str | None = None
    tag: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"source must be 'gateway' or 'otlp', got {self.source!r}")

    def active(self) -> list[tuple[str, str]]:
        """The (dimension, value) pairs set, in DIMENSIONS order."""
        return [(f.name, v) for f in fields(self) if (v := getattr(self, f.name)) is not None]


# -- public queries ---------------------------------------------------------------------------


async def summary(
    db: Database, since: float, until: float, filters: Filters
) -> dict[str, float | None]:
    """Every metric over [since, until)."""
    _check_range(since, until)
    sums = await _collect(db, since, until, filters, _Group("total"))
    return _metrics(sums.get(0) or _empty())


async def series(
    db: Database, since: float, until: float, step_s: int, filters: Filters
) -> list[dict[str, Any]]:
    """One point per step: {"t": step start (unix seconds), <every metric>}, empty steps too.

    Steps are aligned to multiples of `step_s` since the epoch; each point counts the calls of
    its step that fall within [since, until), so the points add up to `summary`.
    """
    _check_range(since, until)
    if not isinstance(step_s, int) or step_s < 1:
        raise ValueError(f"step must be a whole number of seconds >= 1, got {step_s!r}")
    origin = math.floor(since / step_s) * step_s
    count = max(0, math.ceil((until - origin) / step_s)) if until > since else 0
    if count > MAX_POINTS:
        raise ValueError(
            f"{count} steps of {step_s}s: at most {MAX_POINTS} per series; use a larger step"
        )
    sums = await _collect(db, since, until, filters, _Group("time", origin, step_s))
    empty = _empty()
    return [{"t": origin + i * step_s, **_metrics(sums.get(i, empty))} for i in range(count)]


async def breakdown(
    db: Database,
    since: float,
    until: float,
    dimension: str,
    filters: Filters,
    *,
    limit: int = 20,
    order_by: str = "cost_usd",
) -> list[dict[str, Any]]:
    """The metrics per value of `dimension`, largest `order_by` first: [{"value", <metrics>}].

    Calls without a value (no customer, say) are one row with value None; a call with several
    tags counts under each.
    """
    _check_range(since, until)
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; one of: {', '.join(DIMENSIONS)}")
    if order_by not in METRICS:
        raise ValueError(f"unknown metric {order_by!r}; one of: {', '.join(METRICS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    group = _Group("dimension", dimension=dimension)
    # Percentiles need the histograms of every value to rank them; other metrics do not.
    top = None if order_by in _PERCENTILES else (order_by, limit)
    sums = await _collect(db, since, until, filters, group, top=top)
    rows = [{"value": key or None, **_metrics(v)} for key, v in sums.items() if v[0]]
    rows.sort(key=lambda r: _rank(r[order_by], r["value"]))
    return rows[:limit]


async def window_value(
    db: Database, metric: str, since: float, until: float, filters: Filters
) -> float | None:
    """One metric over [since, until); None when there is no data (a rate of zero calls)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of: {', '.join(METRICS)}")
    return (await summary(db, since, until, filters))[metric]


async def score_summary(
    db: Database, since: float, until: float, *, name: str | None = None
) -> list[dict[str, Any]]:
    """Scores created in [since, until) per name and type: count, average, label counts."""
    _check_range(since, until)
    conditions = [scores.c.created_at >= since, scores.c.created_at < until]
    if name is not None:
        conditions.append(scores.c.name == name)
    keys = (scores.c.name, scores.c.data_type)
    totals = (
        select(*keys, func.count(), func.avg(scores.c.value))
        .where(*conditions)
        .group_by(*keys)
        .order_by(*keys)
    )
    labels = (
        select(*keys, scores.c.label, func.count())
        .where(*conditions, scores.c.label.is_not(None))
        .group_by(*keys, scores.c.label)
    )
    async with db.engine.connect() as conn:
        rows = (await conn.execute(totals)).all()
        label_rows = (await conn.execute(labels)).all()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for score_name, data_type, count, avg in rows:
        out[(score_name, data_type)] = {
            "name": score_name,
            "data_type": data_type,
            "count": int(count),
            "avg": None if avg is None else float(avg),
            "labels": {},
        }
    for score_name, data_type, label, count in label_rows:
        out[(score_name, data_type)]["labels"][label] = int(count)
    return list(out.values())


# -- metrics from summed vectors --------------------------------------------------------------


def _empty() -> list[float]:
    return [0.0] * _WIDTH


def _metrics(v: Sequence[float]) -> dict[str, float | None]:
    n, errors = v[0], v[1]
    return {
        "requests": int(n),
        "errors": int(errors),
        "error_rate": errors / n if n else None,
        "latency_avg": v[10] / v[9] if v[9] else None,
        "latency_p50": _percentile(v, _LAT0, 0.50),
        "latency_p95": _percentile(v, _LAT0, 0.95),
        "latency_p99": _percentile(v, _LAT0, 0.99),
        "ttft_avg": v[12] / v[11] if v[11] else None,
        "ttft_p50": _percentile(v, _TTFT0, 0.50),
        "ttft_p95": _percentile(v, _TTFT0, 0.95),
        "input_tokens": int(v[2]),
        "output_tokens": int(v[3]),
        "tokens": int(v[2] + v[3]),
        "cost_usd": float(v[6]),
        "cost_saved_usd": float(v[7]),
        "cache_hit_rate": v[8] / n if n else None,
    }


def _metric(v: Sequence[float], name: str) -> float | None:
    """One metric of a vector (`_metrics` computes all of them, percentiles included)."""
    n = v[0]
    simple: dict[str, Any] = {
        "requests": lambda: n,
        "errors": lambda: v[1],
        "error_rate": lambda: v[1] / n if n else None,
        "latency_avg": lambda: v[10] / v[9] if v[9] else None,
        "ttft_avg": lambda: v[12] / v[11] if v[11] else None,
        "input_tokens": lambda: v[2],
        "output_tokens": lambda: v[3],
        "tokens": lambda: v[2] + v[3],
        "cost_usd": lambda: v[6],
        "cost_saved_usd": lambda: v[7],
        "cache_hit_rate": lambda: v[8] / n if n else None,
    }
    compute = simple.get(name)
    return compute() if compute is not None else _metrics(v)[name]


def _percentile(v: Sequence[float], first: int, q: float) -> float | None:
    """The q-quantile of a histogram, interpolated linearly within its bucket."""
    counts = v[first : first + HISTOGRAM_BUCKETS]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            low = 0.0 if i == 0 else HISTOGRAM_BOUNDS[i - 1]
            high = HISTOGRAM_BOUNDS[i] if i < len(HISTOGRAM_BOUNDS) else low * HISTOGRAM_BASE
            return low + (high - low) * (rank - seen) / count
        seen += count
    return None  # pragma: no cover - the loop always reaches the rank


def _check_range(since: float, until: float) -> None:
    if not (math.isfinite(since) and math.isfinite(until)):
        raise ValueError("since and until must be finite unix seconds")
    if until < since:
        raise ValueError("until must not be before since")


# -- planning: which table answers which part of the range ------------------------------------


@dataclass(frozen=True)
class _Group:
    kind: str  # "total" | "time" | "dimension"
    origin: int = 0
    step: int = 0
    dimension: str = ""


def _split(a: float, b: float, grains: Sequence[tuple[str, int]]) -> list[tuple[str, float, float]]:
    """[a, b) as (grain, start, end) pieces: whole buckets of the coarsest grain first."""
    if a >= b:
        return []
    if not grains:
        return [("raw", a, b)]
    grain, size = grains[0]
    low, high = math.ceil(a / size) * size, math.floor(b / size) * size
    if low >= high:
        return _split(a, b, grains[1:])
    return [*_split(a, low, grains[1:]), (grain, low, high), *_split(high, b, grains[1:])]


def _grains(filters: list[tuple[str, str]], group: _Group) -> list[tuple[str, int]]:
    if len(filters) > 1:
        return []
    # Hourly rows hold one dimension each: a filter on another one needs the raw tables, and so
    # does tag by tag (a call with tags a and b belongs in row a under filter b).
    if (
        group.kind == "dimension"
        and filters
        and (filters[0][0] != group.dimension or group.dimension == "tag")
    ):
        return []
    grains = []
    if group.kind != "time" or group.step % 3600 == 0:
        grains.append(("h", 3600))
    if not filters and group.kind != "dimension" and (group.kind != "time" or group.step % 60 == 0):
        grains.append(("m", 60))
    return grains


async def _collect(
    db: Database,
    since: float,
    until: float,
    filters: Filters,
    group: _Group,
    *,
    top: tuple[str, int] | None = None,
) -> dict[Any, list[float]]:
    """The summed value vectors of the calls in [since, until), per group key.

    `top` (metric, n), for breakdowns ordered by a metric the scalar sums decide: rank every
    value on the rollups' scalar columns first (cheap), then read all the columns (histograms
    included) for the n best only; the other keys are left out.
    """
    active = filters.active()
    pieces = _split(since, until, _grains(active, group))
    ranges: dict[str, list[tuple[float, float]]] = {"h": [], "m": [], "raw": []}
    for grain, a, b in pieces:
        ranges[grain].append((a, b))
    grains = [grain for grain in ("h", "m") if ranges[grain]]
    out: dict[Any, list[float]] = {}
    async with db.engine.connect() as conn:

        async def read(
            into: dict[Any, list[float]],
            *,
            scalars_only: bool = False,
            values: list[str] | None = None,
            columns: tuple[int, ...] | None = None,
        ) -> None:
            for grain in grains:
                await _read_rollups(
                    conn,
                    db.dialect,
                    grain,
                    ranges[grain],
                    active,
                    group,
                    into,
                    columns=columns or (_SCALARS if scalars_only else None),
                    values=values,
                )
            # One query per edge: a range condition per query lets every index serve it.
            for source in _SOURCES:
                for edge in ranges["raw"] if _applies(source, filters) else ():
                    await _read_raw(
                        conn,
                        db.dialect,
                        source,
                        edge,
                        filters,
                        group,
                        into,
                        scalars_only=scalars_only,
                        values=values,
                    )

        if top is None:
            await read(out)
            return out
        metric, limit = top
        await read(out, scalars_only=True, columns=_RANKING_COLUMNS.get(metric))
        ranked = sorted(
            (key for key, v in out.items() if v[0]),
            key=lambda k: _rank(_metric(out[k], metric), k),
        )[:limit]
        chosen: dict[Any, list[float]] = {}
        if ranked:
            await read(chosen, values=ranked)
    return {k: chosen[k] for k in ranked if k in chosen}


def _rank(value: float | None, key: Any) -> tuple[bool, float, str]:
    """Largest first, None last, then by key: the order of breakdown rows."""
    return (value is None, -(value or 0), key or "")


def _add(out: dict[Any, list[float]], key: Any, values: Iterable[float]) -> None:
    target = out.get(key)
    if target is None:
        out[key] = [float(x or 0) for x in values]
        return
    for i, x in enumerate(values):
        if x:
            target[i] += float(x)


# -- rollups ----------------------------------------------------------------------------------


async def _read_rollups(
    conn: AsyncConnection,
    dialect: str,
    grain: str,
    ranges: list[tuple[float, float]],
    active: list[tuple[str, str]],
    group: _Group,
    out: dict[Any, list[float]],
    *,
    columns: tuple[int, ...] | None = None,
    values: list[str] | None = None,
) -> None:
    """Sum the rollup rows into `out`: every column, or only `columns` (indexes in
    VALUE_COLUMNS; the others stay 0)."""
    r = rollups.c
    conditions: list[ColumnElement[bool]] = [
        r.grain == grain,
        or_(*(and_(r.bucket >= int(a), r.bucket < int(b)) for a, b in ranges)),
    ]
    if active:
        dimension, value = active[0]
        conditions += [r.dimension == dimension, _rollup_value(dialect, dimension, value)]
    elif group.kind == "dimension":
        conditions.append(r.dimension == group.dimension)
    else:
        conditions.append(r.dimension == "")
    keys: list[ColumnElement[Any]] = []
    if group.kind == "time":
        keys.append(literal_column(f"(bucket - {group.origin}) / {group.step}"))
    elif group.kind == "dimension":
        keys.append(r.value)
    if values is not None:
        conditions.append(r.value.in_(values))
    chosen = range(_WIDTH) if columns is None else columns
    query = select(*keys, *(_SUMS[i] for i in chosen)).where(*conditions)
    # SQLite: by time for a range of buckets, by value for a few values (a planner without
    # statistics may pick the value index for a range, and read every hour ever stored).
    index = "ix_rollups_value" if values is not None else "ix_rollups_dimension"
    query = query.with_hint(rollups, f"INDEXED BY {index}", "sqlite")
    if keys:
        query = query.group_by(*keys)
    for row in await conn.execute(query):
        key = row[0] if keys else 0
        if group.kind == "time":
            key = int(key)
        if columns is None:
            _add(out, key, row[len(keys) :])
            continue
        v = out.get(key)
        if v is None:
            v = out[key] = _empty()
        for i, x in zip(columns, row[len(keys) :], strict=True):
            if x:
                v[i] += float(x)


# The expensive part of a rollup read is summing 93 columns over thousands of rows (one per
# hour and value): ranking on the 13 scalar columns first keeps breakdowns cheap.
_SUMS = tuple(func.sum(rollups.c[c]) for c in VALUE_COLUMNS)
_SCALARS = tuple(range(len(SCALAR_COLUMNS)))
# The columns (indexes in VALUE_COLUMNS) that rank a breakdown by each metric: requests first.
_RANKING_COLUMNS: dict[str, tuple[int, ...]] = {
    "requests": (0,),
    "errors": (0, 1),
    "error_rate": (0, 1),
    "latency_avg": (0, 9, 10),
    "ttft_avg": (0, 11, 12),
    "input_tokens": (0, 2),
    "output_tokens": (0, 3),
    "tokens": (0, 2, 3),
    "cost_usd": (0, 6),
    "cost_saved_usd": (0, 7),
    "cache_hit_rate": (0, 8),
}


def _rollup_value(dialect: str, dimension: str, value: str) -> ColumnElement[bool]:
    column = rollups.c.value
    if dimension != "prompt" or _split_prompt(value)[1] is not None:
        return column == dimension_value(value)
    # A bare prompt name covers each of its versions ("name@3") and calls of no known version.
    if dialect == "sqlite":  # GLOB: case-sensitive, like the name
        escaped = "".join(f"[{c}]" if c in "[*?" else c for c in value)
        return or_(column == value, column.op("GLOB")(f"{escaped}@*"))
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(column == value, column.like(f"{escaped}@%", escape="\\"))


def _split_prompt(value: str) -> tuple[str, int | None]:
    name, at, version = value.rpartition("@")
    if at and name and version.isdigit():
        return name, int(version)
    return value, None


# -- raw tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str  # "gateway" | "otlp"
    table: Table
    time: str
    latency: str
    error: ColumnElement[Any]
    saved: ColumnElement[Any]
    hit: ColumnElement[Any]
    base: dict[str, str]  # dialect -> the SQL condition every row of this source meets
    dimensions: dict[str, str | None]  # dimension -> column (None: never set on this source)


_SOURCES = (
    _Source(
        name="gateway",
        table=requests,
        time="created_at",
        latency="latency_ms",
        error=case((or_(requests.c.status_code >= 400, requests.c.error.is_not(None)), 1), else_=0),
        saved=func.coalesce(requests.c.cost_saved_usd, 0.0),
        hit=case((requests.c.cache_status.in_(CACHE_HITS), 1), else_=0),
        base={},
        dimensions={
            "model": "model",
            "provider": "provider",
            "pipeline": "pipeline",
            "customer": "customer",
            "key_id": "key_id",
        },
    ),
    _Source(
        name="otlp",
        table=spans,
        time="start_time",
        latency="duration_ms",
        error=case((spans.c.status == "error", 1), else_=0),
        saved=literal_column("0.0"),
        hit=literal_column("0"),
        # Literally the predicate of the partial index ix_spans_counted_start, so that both
        # planners see they can use it (a bound parameter would hide that).
        base={
            "sqlite": "spans.counted = 1 AND spans.kind IN ('llm', 'embedding')",
            "postgresql": "spans.counted AND spans.kind IN ('llm', 'embedding')",
        },
        dimensions={
            "model": "model",
            "provider": "provider",
            "pipeline": "pipeline",
            "customer": "customer",
            "key_id": None,
        },
    ),
)


def _applies(source: _Source, filters: Filters) -> bool:
    if filters.source is not None and filters.source != source.name:
        return False
    return not (filters.key_id is not None and source.dimensions["key_id"] is None)


@functools.lru_cache(maxsize=8)
def _bucket(table: Table, column: str) -> ColumnElement[Any]:
    """The histogram bucket of a column in SQL: the same bounds as rollups.histogram_bucket."""
    c = table.c[column]
    # Literals, not parameters: PostgreSQL matches GROUP BY expressions by their text.
    whens: list[tuple[ColumnElement[bool], Any]] = [
        (c < literal_column(repr(bound)), literal_column(str(i)))
        for i, bound in enumerate(HISTOGRAM_BOUNDS)
    ]
    return case(*whens, (c.is_not(None), literal_column(str(HISTOGRAM_BUCKETS - 1))))


def _tags(dialect: str, table: Table) -> Any:
    function = func.json_each if dialect == "sqlite" else func.json_array_elements_text
    return function(table.c.tags).table_valued("value")


def _filter_conditions(
    dialect: str, source: _Source, filters: Filters
) -> list[ColumnElement[bool]]:
    t = source.table
    conditions: list[ColumnElement[bool]] = []
    for dimension, value in filters.active():
        if dimension == "source":
            continue  # decided by _applies
        if dimension == "prompt":
            name, version = _split_prompt(value)
            conditions.append(t.c.prompt_name == name)
            if version is not None:
                conditions.append(t.c.prompt_version == version)
        elif dimension == "tag":
            tags = _tags(dialect, t)
            conditions.append(select(1).select_from(tags).where(tags.c.value == value).exists())
        else:
            column = source.dimensions[dimension]
            conditions.append(t.c[column] == value if column is not None else false())
    return conditions


async def _read_raw(
    conn: AsyncConnection,
    dialect: str,
    source: _Source,
    edge: tuple[float, float],
    filters: Filters,
    group: _Group,
    out: dict[Any, list[float]],
    *,
    scalars_only: bool = False,
    values: list[str] | None = None,
) -> None:
    t = source.table
    time = t.c[source.time]
    conditions: list[Any] = [
        *([text(source.base[dialect])] if source.base else []),
        time >= edge[0],
        time < edge[1],
        *_filter_conditions(dialect, source, filters),
    ]
    keys: list[ColumnElement[Any]] = []
    joined: Any = t
    if group.kind == "time":
        offset = f"({t.name}.{source.time} - {group.origin}) / {group.step}"
        expression = f"CAST({offset} AS INTEGER)" if dialect == "sqlite" else f"floor({offset})"
        keys.append(literal_column(expression))
    elif group.kind == "dimension":
        dimension = group.dimension
        if dimension == "prompt":
            keys += [t.c.prompt_name, t.c.prompt_version]
        elif dimension == "tag":
            tags = _tags(dialect, t)
            joined = t.join(tags, true())
            keys.append(tags.c.value)
        elif dimension != "source":
            column = source.dimensions[dimension]
            if column is not None:
                keys.append(t.c[column])
    if values is not None and group.kind == "dimension":
        conditions.append(_among(group.dimension, keys, values))
    query = _raw_select(source, keys, scalars_only).select_from(joined).where(*conditions)
    for row in await conn.execute(query):
        key = _raw_key(source, group, row[: len(keys)])
        sums = row[len(keys) :]
        _add_raw(out, key, (None, None, *sums) if scalars_only else sums)


def _among(dimension: str, keys: list[ColumnElement[Any]], values: list[str]) -> Any:
    """Only the rows whose key is one of `values` (as rollups store them; "" for none)."""
    if dimension in ("prompt", "source") or not keys:
        return true()  # few values; the caller keeps the ones it asked for
    column = keys[0]
    named = [v for v in values if v]
    condition = column.in_(named) if named else false()
    return or_(condition, column.is_(None)) if "" in values else condition


def _raw_select(source: _Source, keys: list[ColumnElement[Any]], scalars_only: bool) -> Select[Any]:
    t = source.table
    latency, ttft = t.c[source.latency], t.c.ttft_ms
    buckets = [] if scalars_only else [_bucket(t, source.latency), _bucket(t, "ttft_ms")]
    return select(
        *keys,
        *buckets,
        func.count(),
        func.sum(source.error),
        func.sum(func.coalesce(t.c.input_tokens, 0)),
        func.sum(func.coalesce(t.c.output_tokens, 0)),
        func.sum(func.coalesce(t.c.cached_tokens, 0)),
        func.sum(func.coalesce(t.c.reasoning_tokens, 0)),
        func.sum(func.coalesce(t.c.cost_usd, 0.0)),
        func.sum(source.saved),
        func.sum(source.hit),
        func.count(latency),
        func.sum(latency),
        func.count(ttft),
        func.sum(ttft),
    ).group_by(*keys, *buckets)


def _raw_key(source: _Source, group: _Group, values: Sequence[Any]) -> Any:
    if group.kind == "total":
        return 0
    if group.kind == "time":
        return int(values[0])
    if group.dimension == "source":
        return source.name
    if group.dimension == "prompt":
        return dimension_value(prompt_value(values[0], values[1]))
    return dimension_value(values[0] if values else None)


def _add_raw(out: dict[Any, list[float]], key: Any, row: Sequence[Any]) -> None:
    # Raw reads return a row per (key, latency bucket, ttft bucket): thousands for a
    # breakdown's edges, so each adds its dozen values in place.
    lat_bucket, ttft_bucket, count, *sums = row
    v = out.get(key)
    if v is None:
        v = out[key] = _empty()
    v[0] += count
    for i, x in enumerate(sums, 1):
        if x:
            v[i] += float(x)
    if lat_bucket is not None and sums[8]:
        v[_LAT0 + int(lat_bucket)] += sums[8]
    if ttft_bucket is not None and sums[10]:
        v[_TTFT0 + int(ttft_bucket)] += sums[10]
