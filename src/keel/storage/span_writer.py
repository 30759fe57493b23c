"""Span rows written to SQLite by a helper process, beside the event loop instead of under it.

The record writer's SQLite work for spans (the inserts, the look-ups of what is stored, the
rollups) is as much CPU as decoding and mapping them, and in one process the two take turns on
Python's interpreter lock: the driver's thread waits for the event loop's at every row, and
throughput on two cores stays that of one. `keel serve` therefore starts one child process
(`keel.storage.span_writer_child`) that owns a SQLite connection and writes span batches sent to
it over a pipe; `write_batch` hands it the spans of each batch (request records stay in-process).

Nothing about durability moves: the batch is still one transaction, idempotent by
(trace_id, span_id); the record pipeline's log and checkpoint stay in this process, which moves
the checkpoint only after the child answered that the batch is committed. If the child dies, the
write fails like a database outage (the pipeline retries; the next write starts a new child). If
this process dies, the child sees its input end (and, on Linux, is killed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
from collections.abc import Sequence

import orjson

from keel.analytics.rollups import SQLITE_KEY_CHUNK, sqlite_keys_query, sqlite_upsert_sql
from keel.storage.database import SQLITE_PRAGMAS
from keel.storage.spans_repo import SpanRow, sqlite_insert_sql

__all__ = ["SpanWriterError", "SpanWriterProcess"]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
_START_TIMEOUT_S = 30.0


class SpanWriterError(Exception):
    """A batch the span writer did not commit; `data` when SQLite refused a row in it."""

    def __init__(self, message: str, *, data: bool = False) -> None:
        super().__init__(message)
        self.data = data


class SpanWriterProcess:
    """The child process and its pipe; one batch at a time (the record writer is one task)."""

    def __init__(self, path: str) -> None:
        self.path = path  # the SQLite database file
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def write(self, rows: Sequence[SpanRow]) -> None:
        """Commit the rows in one transaction; raises SpanWriterError when that did not happen."""
        async with self._lock:
            proc = await self._running()
            answer = await self._call(proc, orjson.dumps(rows))
        if not answer.get("ok"):
            raise SpanWriterError(str(answer.get("error")), data=bool(answer.get("data")))

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounds a shutdown
        """End the child's input and wait for it to finish; kill it past `timeout`."""
        async with self._lock:  # after the batch in flight, if any
            proc, self._proc = self._proc, None
            if proc is not None:
                await _end(proc, timeout)

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is not None:
            return self._proc
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keel.storage.span_writer_child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        setup = {
            "path": self.path,
            "pragmas": list(SQLITE_PRAGMAS),
            "insert": sqlite_insert_sql(),
            "keys": sqlite_keys_query(),
            "upsert": sqlite_upsert_sql(),
            "chunk": SQLITE_KEY_CHUNK,
        }
        self._proc = proc
        try:
            answer = await asyncio.wait_for(self._call(proc, orjson.dumps(setup)), _START_TIMEOUT_S)
        except TimeoutError:
            answer = {"error": f"no answer within {_START_TIMEOUT_S:g}s"}
        except SpanWriterError as exc:
            answer = {"error": str(exc)}
        if not answer.get("ok"):
            await self._discard(proc)
            raise SpanWriterError(f"the span writer process did not start: {answer.get('error')}")
        return proc

    async def _call(self, proc: asyncio.subprocess.Process, body: bytes) -> dict[str, object]:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_LENGTH.pack(len(body)) + body)
            await proc.stdin.drain()
            (size,) = _LENGTH.unpack(await proc.stdout.readexactly(_LENGTH.size))
            answer = orjson.loads(await proc.stdout.readexactly(size))
        except (OSError, asyncio.IncompleteReadError, orjson.JSONDecodeError) as exc:
            # The child died mid-batch (nothing of the batch is committed unless it answered):
            # the next write starts a new one.
            await self._discard(proc)
            raise SpanWriterError(f"the span writer process failed: {exc!r}") from None
        if not isinstance(answer, dict):
            await self._discard(proc)
            raise SpanWriterError(f"unexpected answer from the span writer: {answer!r}")
        return answer

    async def _discard(self, proc: asyncio.subprocess.Process) -> None:
        if self._proc is proc:
            self._proc = None
        await _end(proc, timeout=0)
        log.warning("span writer process ended (exit code %s)", proc.returncode)


async def _end(proc: asyncio.subprocess.Process, timeout: float) -> None:  # noqa: ASYNC109
    """Close the child's input (its signal to finish), wait `timeout`, then kill it."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            proc.kill()
        await proc.wait()
