"""Span rows written to SQLite by a helper process, beside the event loop instead of under it.

The record writer's SQLite work for spans (the inserts, the look-ups of what is stored, the
rollups) is as much CPU as decoding and mapping them, and in one process the two take turns on
Python's interpreter lock: the driver's thread waits for the event loop's at every row, and
throughput on two cores stays that of one. `keel serve` therefore starts one child process
(`keel.storage.span_writer_child`) that owns a SQLite connection and writes span batches sent to
it over a pipe; `write_batch` hands it the spans of each batch (request records stay in-process).

Nothing about durability moves: the child's transactions (a few thousand spans each) are
idempotent by (trace_id, span_id), rollups included; the record pipeline's log and checkpoint
stay in this process, which moves the checkpoint only after the child answered that every part
of the batch is committed. If the child dies, the
write fails like a database outage (the pipeline retries; the next write starts a new child). If
this process dies, the child sees its input end (and, on Linux, is killed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from keel.storage.database import SQLITE_PRAGMAS
from keel.storage.span_writer_child import encode_part, read_frame, write_frame
from keel.storage.spans_repo import SpanRow

__all__ = ["SpanWriterError", "SpanWriterProcess"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
# Rows per transaction of the child: a writer batch of 16 MB of log (some 16,000 spans) decoded
# whole would cost the child ~150 MB at its peak; a quarter of it, a quarter of that memory.
_ROWS_PER_TRANSACTION = 4096
_FIRST_PART = 512
# A transaction takes well under a second; one that takes minutes is a child stuck for good
# (SQLite itself gives up on a lock after its busy_timeout of 5 s).
_TRANSACTION_TIMEOUT_S = 120.0
# The child's page cache (SQLite's default is 2 MB): the spans table's key (random trace ids)
# and indexes grow at random places, and with 2 MB a table of 400,000 spans had a page read back
# from the file for 4 of 5 rows written, 32 MB one for 1 in 6 (strace), and less CPU a row.
_CHILD_PRAGMAS = (*SQLITE_PRAGMAS, "cache_size=-32768")


class SpanWriterError(Exception):
    """A batch the span writer did not commit; `data` when SQLite refused a row in it."""

    def __init__(self, message: str, *, data: bool = False) -> None:
        super().__init__(message)
        self.data = data


class SpanWriterProcess:
    """The child process and its pipe; one batch at a time (the record writer is one task).

    A batch is megabytes: it goes through the pipe from a worker thread (blocking writes and
    reads let go of the interpreter lock), not from the event loop, whose turns are taken by
    request handling and would pace the transfer to one pipe buffer per turn. The child is
    started from the event loop's thread, which lives as long as Keel (on Linux, the child's
    death signal follows the thread that started it).
    """

    def __init__(self, path: str) -> None:
        self.path = path  # the SQLite database file
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def write(self, rows: Sequence[SpanRow]) -> None:
        """Commit the rows, `_ROWS_PER_TRANSACTION` at a time; raises SpanWriterError when a
        part was not committed (the parts before it were, and maybe the one after it, sent
        while it was being written: writing any of them again changes nothing).
        """
        if not rows:
            return
        parts = [rows[part] for part in _parts(len(rows))]
        async with self._lock:
            proc = await self._running()
            within_s = _TRANSACTION_TIMEOUT_S * len(parts)
            answer = await self._timed(self._send_parts, proc, parts, within_s=within_s)
            if not answer.get("ok"):
                error = str(answer.get("error"))
                raise SpanWriterError(error, data=bool(answer.get("data")))

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounds a shutdown
        """End the child's input and wait for it to finish; kill it past `timeout`."""
        async with self._lock:  # after the batch in flight, if any
            proc, self._proc = self._proc, None
            if proc is not None:
                await asyncio.to_thread(_end, proc, timeout)

    async def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None:
            return self._proc
        # On this thread on purpose (see the class): a few milliseconds, once per child.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "keel.storage.span_writer_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._proc = proc
        setup = orjson.dumps({"path": self.path, "pragmas": _CHILD_PRAGMAS})
        try:
            answer = await self._timed(self._exchange, proc, setup, within_s=_START_TIMEOUT_S)
        except SpanWriterError as exc:  # it is gone already
            raise SpanWriterError(f"the span writer process did not start: {exc}") from None
        if not answer.get("ok"):
            await asyncio.to_thread(self._discard, proc)
            raise SpanWriterError(f"the span writer process did not start: {answer}")
        return proc

    async def _timed(
        self,
        exchange: Callable[[subprocess.Popen[bytes], Any], dict[str, object]],
        proc: subprocess.Popen[bytes],
        arg: Any,
        *,
        within_s: float,
    ) -> dict[str, object]:
        """`exchange(proc, arg)` in a worker thread, but a child that does not answer within
        `within_s` seconds is killed, which ends the exchange with a SpanWriterError (the
        record pipeline retries)."""
        future = asyncio.ensure_future(asyncio.to_thread(exchange, proc, arg))
        done, _ = await asyncio.wait({future}, timeout=within_s)
        if not done:
            log.error("span writer process did not answer within %gs; killing it", within_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await future

    def _exchange(self, proc: subprocess.Popen[bytes], body: bytes) -> dict[str, object]:
        """Send one frame and read the answer (in a worker thread)."""
        with self._talking(proc):
            assert proc.stdin is not None
            write_frame(proc.stdin, body)
            return self._answer(proc)

    def _send_parts(
        self, proc: subprocess.Popen[bytes], parts: list[Sequence[SpanRow]]
    ) -> dict[str, object]:
        """Send the parts, a transaction each (in a worker thread): each but the first goes
        down the pipe while the child commits the one before, so the child does not wait for
        the parent between the transactions of a batch. Returns the first answer that is not
        ok (no part is sent after it, and every part sent is answered), else ok."""
        failed: dict[str, object] | None = None
        with self._talking(proc):
            assert proc.stdin is not None
            write_frame(proc.stdin, encode_part(parts[0]))
            sent, answered = 1, 0
            while answered < sent:
                if failed is None and sent < len(parts):
                    # waits while the child commits the part before
                    write_frame(proc.stdin, encode_part(parts[sent]))
                    sent += 1
                answer = self._answer(proc)
                answered += 1
                if failed is None and not answer.get("ok"):
                    failed = answer
        return failed or {"ok": True}

    @contextlib.contextmanager
    def _talking(self, proc: subprocess.Popen[bytes]) -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, ValueError) as exc:
            # The child died mid-batch (nothing of a part is committed unless it answered):
            # the next write starts a new one.
            self._discard(proc)
            raise SpanWriterError(f"the span writer process failed: {exc!r}") from None

    def _answer(self, proc: subprocess.Popen[bytes]) -> dict[str, object]:
        assert proc.stdout is not None
        frame = read_frame(proc.stdout)
        if frame is None:
            raise EOFError("the span writer process ended")
        answer = orjson.loads(frame)
        if not isinstance(answer, dict):
            raise ValueError(f"unexpected answer from the span writer: {answer!r}")
        return answer

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        if self._proc is proc:
            self._proc = None
        _end(proc, timeout=0)
        log.warning("span writer process ended (exit code %s)", proc.returncode)


def _parts(count: int) -> list[slice]:
    """The transactions of a batch of `count` rows: a short first one, which the child starts
    on while Keel makes the next (making a frame of 4,096 rows takes Keel some 50 ms, beside
    request handling, and the child would wait that long at each batch), then
    `_ROWS_PER_TRANSACTION` rows each."""
    bounds = [0, *range(min(count, _FIRST_PART), count, _ROWS_PER_TRANSACTION), count]
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Close the child's input (its signal to finish), wait `timeout`, then kill it."""
    with contextlib.suppress(OSError):  # a broken pipe: it is gone already
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
