"""The record pipeline: `submit` appends to the write-ahead log; one writer task copies it out.

The writer reads the log in order, turns entries into rows, upserts them (idempotent by id),
then moves the log's checkpoint. It never drops a record: database outages are retried
forever (the log holds the records meanwhile), and only a row the database rejects on its own
goes to `wal/rejected.jsonl`. A stream's stub (final=False) is held in memory until its final
record arrives, and the checkpoint stays before it, so a crash re-reads it; a stub that never
gets its final (Keel stopped, or 15 minutes passed) is written as an interrupted call.

Log entries: a request record is a JSON object; a batch of spans is a JSON array. Spans are
logged as rows, `[2, [trace_id, span_id, ...], ...]` (format 2: the values in
`keel.storage.spans_repo.SPAN_COLUMNS` order, JSON columns as JSON text), so the writer hands
them to the database as they come out of the log. Entries of Keel versions before format 2 (an
array of span objects) still replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import exc as sa_exc

from keel.records.model import RequestRecord
from keel.records.span import SpanRecord
from keel.records.wal import ENTRY_HEADER_BYTES, Entry, LogFullError, WriteAheadLog
from keel.storage.batch import Row, write_batch
from keel.storage.database import Database
from keel.storage.span_writer import SpanWriterError, SpanWriterProcess
from keel.storage.spans_repo import JSON_COLUMNS, SPAN_COLUMNS, SpanRow, row_dict, span_row

__all__ = ["INTERRUPTED_ERROR", "LogFullError", "RecordPipeline"]

log = logging.getLogger(__name__)

INTERRUPTED_ERROR = "interrupted: Keel stopped before the call finished"
_DATA_ERROR_RETRIES = 3  # whole-batch attempts before looking for the row the database rejects
SPAN_ROWS = 2  # the format marker of a span entry: [SPAN_ROWS, row, row, ...]
_BATCH_BYTES = 16 << 20  # log bytes per writer batch (about 16,000 spans), whatever the entries
_FRESH_BYTES = 32 << 20  # log bytes of span entries also kept in memory for the writer
_JSON_POSITIONS = tuple(SPAN_COLUMNS.index(name) for name in JSON_COLUMNS)


@dataclass(slots=True)
class _Stub:
    record: RequestRecord
    position: int  # where its entry starts: the checkpoint must not pass it
    seen: float  # time.monotonic() when the writer read it


class RecordPipeline:
    """Durable hand-off of request records from the gateway to the database."""

    def __init__(
        self,
        data_dir: str | Path,
        db: Database,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: str,
        fsync_interval_ms: int,
        batch_size: int,
        linger_ms: int = 0,
        stub_timeout_s: float = 900.0,
        max_backoff_s: float = 5.0,
        on_written: Callable[[Sequence[Row]], None] | None = None,
        span_writer: SpanWriterProcess | None = None,
    ) -> None:
        self._dir = Path(data_dir) / "wal"
        self._wal = WriteAheadLog(
            self._dir,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
            fsync_interval_ms=fsync_interval_ms,
        )
        self._db = db
        self._batch_size = max(batch_size, 1)
        self._linger = max(linger_ms, 0) / 1000.0
        self._backlogged = False
        self._stub_timeout = stub_timeout_s
        self._max_backoff = max_backoff_s
        self._on_written = on_written  # sees every row once it is in the database
        self._span_writer = span_writer  # writes the spans of each batch (SQLite), if given
        self._stubs: dict[str, _Stub] = {}  # insertion order is log order: first is oldest
        self._read_pos = 0
        # Span entries this run appended, as rows, until the writer takes them: (start, end,
        # rows). The writer uses them instead of reading the log back and decoding it again;
        # the log stays the truth (whatever is not here, or is dropped, is read from it).
        self._fresh: deque[tuple[int, int, Sequence[SpanRow]]] = deque()
        self._fresh_bytes = 0
        self._replay_end = 0  # the end of the log as found at start: entries of the last run
        self._replaying = True
        self._appended = 0  # entries in the log at start plus entries submitted since
        self._settled = 0  # entries whose record is in the database (or rejected, or superseded)
        self._batch_settled = 0  # entries the batch being written will settle
        self._batch_spans = 0  # spans of this run the batch being written will settle
        self._entry_bytes = 0.0  # the average size of the entries read lately
        self._written = 0
        self._spans_submitted = 0  # spans appended since start
        self._spans_settled = 0  # spans submitted since start that are written or rejected
        self._lost = 0
        self._rejected = 0
        self._db_up = True
        self._last_error: str | None = None
        self._logged_error: str | None = None
        self._disk_failing = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- observability --------------------------------------------------------------------------

    @property
    def pending_records(self) -> int:
        return self._appended - self._settled

    @property
    def pending_bytes(self) -> int:
        return self._wal.pending_bytes

    @property
    def written_records(self) -> int:
        return self._written

    @property
    def pending_spans(self) -> int:
        """Spans accepted since start and not yet in the database (replayed ones excluded)."""
        return self._spans_submitted - self._spans_settled

    @property
    def lost_records(self) -> int:
        return self._lost

    @property
    def rejected_records(self) -> int:
        return self._rejected

    @property
    def db_up(self) -> bool:
        return self._db_up

    @property
    def last_write_error(self) -> str | None:
        return self._last_error

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the log and replay it; returns early (writer retrying) if the database is down."""
        await asyncio.to_thread(self._wal.open)
        self._read_pos = self._wal.checkpoint_position
        self._replay_end = self._wal.end_position
        self._appended = self._wal.entries_at_open
        self._db_up = await self._db.ping()
        self._task = asyncio.create_task(self._run(), name="keel-record-writer")
        self._task.add_done_callback(lambda _: self._started.set())
        await self._started.wait()

    # The timeout bounds only the drain: closing the log must still happen after it expires,
    # which a caller's asyncio.timeout() around the whole call would cancel.
    async def stop(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Drain the log into the database (for at most `timeout` seconds) and close it."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                log.warning(
                    "record writer did not drain within %ss; %d records stay in the "
                    "write-ahead log for the next start",
                    timeout,
                    self.pending_records,
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except asyncio.CancelledError:
                if not task.cancelled():  # stop() itself was cancelled, not the writer
                    raise
        if self._span_writer is not None:
            await self._span_writer.stop()
        await asyncio.to_thread(self._wal.close)

    # -- the hot path ---------------------------------------------------------------------------

    def submit(self, record: RequestRecord) -> None:
        """Append `record` to the log (call on the event-loop thread).

        Raises LogFullError when the log is full. Other failures (disk errors, a value JSON
        cannot hold) fail open: the record is counted in `lost_records` and logged once per
        burst of failures.
        """
        # orjson encodes the dataclass natively to the same bytes as `to_dict()` (a test holds
        # it to that) in a tenth of the time: asdict() deep-copies on the hot path.
        try:
            self._wal.append(orjson.dumps(record))
        except LogFullError:
            raise
        except (OSError, orjson.JSONEncodeError) as exc:
            self._lost += 1
            if not self._disk_failing:
                self._disk_failing = True
                log.error("cannot append to the write-ahead log in %s: %s", self._dir, exc)
            return
        if self._disk_failing:
            self._disk_failing = False
            log.info("write-ahead log appends work again (%d records lost)", self._lost)
        self._appended += 1
        self._wake.set()

    def submit_spans(self, spans: list[SpanRecord]) -> None:
        """Append a batch of spans to the log as one entry (call on the event-loop thread).

        Unlike `submit`, every failure raises: an OTLP export is acknowledged only once its
        spans are in the log, and the exporter retries what was refused.
        """
        self.submit_span_rows([span_row(s) for s in spans])

    def submit_span_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """`submit_spans` for spans already made rows (keel.storage.spans_repo.span_row)."""
        if not rows:
            return
        # A JSON array (request records are objects) led by the format marker.
        payload = orjson.dumps([SPAN_ROWS, *rows])
        end = self._wal.append(payload)
        size = ENTRY_HEADER_BYTES + len(payload)
        if self._fresh_bytes + size <= _FRESH_BYTES:
            self._fresh.append((end - size, end, rows))
            self._fresh_bytes += size
        self._appended += 1
        self._spans_submitted += len(rows)
        self._wake.set()

    def has_room(self, reserve: int = 1 << 20) -> bool:
        """False when the log is nearly full: refuse the call before it reaches a provider."""
        return self._wal.has_room(reserve)

    async def wait_durable(self) -> None:
        """Wait for the fsync that covers everything submitted so far."""
        await self._wal.wait_durable()

    # -- the writer -----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                idle = await self._step()
            except Exception:  # a disk fault in the log; the writer must outlive it
                failures += 1
                log.exception("record writer failed; retrying")
                await asyncio.sleep(min(self._max_backoff, 0.1 * 2 ** min(failures, 8)))
                continue
            failures = 0
            if idle:
                self._started.set()
                if self._stopping:
                    return
                await self._wait_for_work()
            if self._linger and not self._stopping and not self._backlogged:
                # Let records gather into one transaction: a batch of a few per step would
                # cost the database a commit (and an fsync) every few calls.
                await asyncio.sleep(self._linger)

    async def _step(self) -> bool:
        """Move one batch from the log to the database; True when the log had nothing new."""
        self._wake.clear()  # before reading, so a submit during the read is not missed
        self._batch_settled = self._batch_spans = 0
        # As many entries as fit the batch's bytes: a span entry may hold thousands of spans,
        # and one transaction of a thousand of them would be a gigabyte of rows.
        limit = self._batch_size
        if self._entry_bytes:
            limit = max(1, min(limit, int(_BATCH_BYTES / self._entry_bytes)))
        entries, resume = await self._next_entries(limit)
        if entries:
            size = (resume - self._read_pos) / len(entries)
            self._entry_bytes = size if not self._entry_bytes else (self._entry_bytes + size) / 2
        rows = self._absorb(entries)
        if self._replaying and resume >= self._replay_end:
            self._end_replay(rows)
        self._expire_stubs(rows)
        if rows:
            await self._write(list(rows.values()))
        self._settled += self._batch_settled
        self._spans_settled += self._batch_spans
        self._batch_settled = self._batch_spans = 0
        self._read_pos = resume
        await self._checkpoint()
        self._backlogged = len(entries) >= limit  # more waiting: no pause
        return not entries

    async def _next_entries(self, limit: int) -> tuple[list[_Entry], int]:
        """Up to `limit` entries from the read position, and the position after them: span
        entries from memory where the writer has them, the others read from the log."""
        fresh = self._fresh
        position = self._read_pos
        entries: list[_Entry] = []
        while len(entries) < limit:
            while fresh and fresh[0][0] < position:  # read from the log already
                self._fresh_bytes -= fresh[0][1] - fresh[0][0]
                fresh.popleft()
            if fresh and fresh[0][0] == position:
                start, position, rows = fresh.popleft()
                self._fresh_bytes -= position - start
                entries.append((rows, position))
                continue
            stop = fresh[0][0] if fresh else None
            read, position = await asyncio.to_thread(
                self._wal.read, position, limit - len(entries), stop
            )
            entries += read
            if position != stop:  # the end of the log, or `limit` entries
                break
        return entries, position

    def _absorb(self, entries: list[_Entry]) -> dict[_Key, Row]:
        """Rows to write for these entries; stubs go to the open-stub map instead."""
        rows: dict[_Key, Row] = {}
        start, now = self._read_pos, time.monotonic()
        for payload, after in entries:
            if self._replaying and start >= self._replay_end:
                self._end_replay(rows)
            if not isinstance(payload, bytes):  # a span entry's rows, kept since its append
                spans, count = payload, len(payload)
            elif payload[:1] == b"[":  # a span entry read from the log
                spans, count = self._decode_spans(payload)
            else:
                spans = None
            if spans is not None:
                for span in spans:
                    rows.setdefault((span[0], span[1]), span)  # the first copy wins
                self._batch_settled += 1
                if start >= self._replay_end:  # submitted by this run: pending_spans counts it
                    self._batch_spans += count
                start = after
                continue
            assert isinstance(payload, bytes)  # rows kept in memory are span entries, above
            record = self._decode(payload)
            if record is not None and not record.final and record.id not in rows:
                # An open stub settles later, with its final record or as interrupted; a
                # repeated stub is ignored.
                self._stubs.setdefault(record.id, _Stub(record, start, now))
                if self._stubs[record.id].position != start:
                    self._batch_settled += 1
                start = after
                continue
            self._batch_settled += 1
            if record is not None and record.final:
                if self._stubs.pop(record.id, None) is not None:
                    self._batch_settled += 1  # the stub's entry settles with its final record
                seen = rows.get(record.id)
                if not isinstance(seen, RequestRecord) or not seen.final:  # first final wins
                    rows[record.id] = record
            start = after
        return rows

    def _decode(self, payload: bytes) -> RequestRecord | None:
        try:
            return RequestRecord.from_dict(orjson.loads(payload))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            self._reject({"payload": payload.decode("utf-8", "replace")}, exc)
            return None

    def _decode_spans(self, payload: bytes) -> tuple[list[SpanRow], int]:
        """The rows of a span entry, and how many spans it holds (rejected ones included)."""
        try:
            items = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self._reject({"payload": payload.decode("utf-8", "replace")}, exc)
            return [], 0
        if not items or isinstance(items[0], dict):  # before format 2: span objects
            return self._decode_span_objects(items), len(items)
        if items[0] != SPAN_ROWS:  # a later Keel's format; it never returns to an older one
            unknown = ValueError(f"unknown span entry format {str(items[0])[:20]!r}")
            self._reject({"payload": payload.decode("utf-8", "replace")}, unknown)
            return [], len(items) - 1
        rows: list[SpanRow] = []
        width = len(SPAN_COLUMNS)
        tags, attributes, events = _JSON_POSITIONS
        for item in items[1:]:
            # A JSON column that is not text would fail as the driver binds it, which looks
            # like an outage, not a bad row: the writer would retry it forever.
            if (
                type(item) is list
                and len(item) == width
                and type(item[tags]) is str
                and type(item[attributes]) is str
                and type(item[events]) is str
            ):
                rows.append(item)
            else:
                reason = ValueError(f"not a span row ({width} values, JSON columns as text)")
                self._reject({"span": item}, reason)
        return rows, len(items) - 1

    def _decode_span_objects(self, items: list[Any]) -> list[SpanRow]:
        rows: list[SpanRow] = []
        for item in items:
            try:
                rows.append(span_row(SpanRecord.from_dict(item)))
            except (TypeError, ValueError, AttributeError, orjson.JSONEncodeError) as exc:
                self._reject({"span": item}, exc)
        return rows

    def _end_replay(self, rows: dict[_Key, Row]) -> None:
        # Every stub still open here was written by the previous run, which cannot finish it.
        self._replaying = False
        for stub in self._stubs.values():
            rows.setdefault(stub.record.id, _interrupted(stub.record))
        self._batch_settled += len(self._stubs)
        self._stubs.clear()

    def _expire_stubs(self, rows: dict[_Key, Row]) -> None:
        deadline = time.monotonic() - self._stub_timeout
        while self._stubs:
            key, stub = next(iter(self._stubs.items()))
            if stub.seen > deadline:
                return
            del self._stubs[key]
            self._batch_settled += 1
            rows.setdefault(key, _interrupted(stub.record))

    async def _checkpoint(self) -> None:
        target = self._read_pos
        if self._stubs:
            target = min(target, next(iter(self._stubs.values())).position)
        if target > self._wal.checkpoint_position:
            await asyncio.to_thread(self._wal.checkpoint, target)

    async def _wait_for_work(self) -> None:
        timeout = None
        if self._stubs:
            oldest = next(iter(self._stubs.values()))
            timeout = max(0.0, oldest.seen + self._stub_timeout - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    # -- database writes ------------------------------------------------------------------------

    async def _write(self, rows: list[Row]) -> None:
        """Write the batch, retrying forever; rows the database rejects go to rejected.jsonl."""
        failures = data_errors = 0
        remaining = deque(rows)
        while True:
            try:
                if data_errors >= _DATA_ERROR_RETRIES:
                    await self._write_row_by_row(remaining)
                else:
                    await write_batch(self._db, remaining, self._span_writer)
                    self._count_written(list(remaining))
                self._note_success()
                return
            except Exception as exc:  # the writer must outlive any failure; it never drops
                permanent = _is_data_error(exc)
                data_errors += permanent
                failures += 1
                self._note_failure(exc, permanent)
                delay = 0.05 if permanent else min(self._max_backoff, 0.1 * 2 ** min(failures, 8))
                await asyncio.sleep(delay)

    def _count_written(self, rows: Sequence[Row]) -> None:
        self._written += len(rows)
        if self._on_written is not None:
            try:
                self._on_written(rows)
            except Exception:  # an observer (the OTLP exporter) must not stop the writer
                log.exception("record observer failed")

    async def _write_row_by_row(self, remaining: deque[Row]) -> None:
        # Rows leave `remaining` as they are settled, so a connection error part way through
        # resumes where it stopped instead of rejecting or counting a row twice.
        while remaining:
            record = remaining[0]
            try:
                await write_batch(self._db, [record], self._span_writer)
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                self._reject(_reject_item(record), exc)
            else:
                self._count_written([record])
            remaining.popleft()

    def _note_success(self) -> None:
        if not self._db_up:
            log.info("database %s is reachable again", self._db.url_for_logs)
        self._db_up = True
        self._logged_error = None

    def _note_failure(self, exc: BaseException, permanent: bool) -> None:
        message = _describe(exc)
        if message != self._logged_error:  # once per outage and kind of error, not per retry
            self._logged_error = message
            log.warning(
                "record writer: database %s %s: %s; retrying (records wait in the log)",
                self._db.url_for_logs,
                "rejected a batch" if permanent else "write failed",
                message,
            )
        self._last_error = message
        if not permanent:
            self._db_up = False
            self._started.set()  # a down database must not hold up the gateway's start

    def _reject(self, item: dict[str, Any], exc: BaseException) -> None:
        reason = _describe(exc)
        line = orjson.dumps({"rejected_at": time.time(), "reason": reason, **item})
        with open(self._dir / "rejected.jsonl", "ab") as file:
            file.write(line + b"\n")
            file.flush()
            os.fsync(file.fileno())  # after the checkpoint moves, this is the only copy
        self._rejected += 1
        log.error("record rejected, moved to %s: %s", self._dir / "rejected.jsonl", reason)


_Key = str | tuple[str, str]  # a request record's id, a span's (trace_id, span_id)
# A log entry as the writer reads it: its payload, or (for a span entry this run appended) the
# rows it holds; and the position just after it.
_Entry = Entry | tuple[Sequence[SpanRow], int]


def _reject_item(row: Row) -> dict[str, Any]:
    """What rejected.jsonl keeps of a row the database refused."""
    if isinstance(row, RequestRecord | SpanRecord):
        return row.to_dict()
    try:
        return row_dict(row)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return {"span": list(row)}


def _interrupted(stub: RequestRecord) -> RequestRecord:
    return dataclasses.replace(stub, final=False, error=INTERRUPTED_ERROR, error_type="interrupted")


def _is_data_error(exc: BaseException) -> bool:
    """True for errors that belong to a row (bad value, constraint), not to the connection."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if isinstance(exc, SpanWriterError):
        return exc.data
    if not isinstance(exc, sa_exc.DBAPIError):
        # A StatementError that is not a DBAPIError failed while binding the parameters.
        return isinstance(exc, sa_exc.StatementError)
    for cause in _causes(exc):
        sqlstate = getattr(cause, "sqlstate", None)
        # SQLSTATE class 22 is "data exception", 23 "integrity constraint violation"; asyncpg
        # reports a value it cannot encode as a ValueError before anything is sent.
        if (isinstance(sqlstate, str) and sqlstate[:2] in {"22", "23"}) or isinstance(
            cause, ValueError | TypeError
        ):
            return True
    return False


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 5:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def _describe(exc: BaseException) -> str:
    # The driver's own exception, not SQLAlchemy's wrapper: its text embeds the SQL statement
    # and the parameters (request bodies).
    cause = _causes(exc)[-1]
    text = str(cause).strip()
    first_line = text.splitlines()[0][:300] if text else ""
    return f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
