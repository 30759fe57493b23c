"""The span writer process (`python -m keel.storage.span_writer_child`): the SQLite side of
`keel.storage.span_writer`.

It reads frames from stdin and answers each on stdout. A frame is a little-endian u32 length and
that many bytes of JSON: first `{"path": …, "pragmas": […]}`, then one JSON array of span rows
(keel.storage.spans_repo.SPAN_COLUMNS order) per transaction, written with the same statements
as `keel.storage.batch.write_batch` writes spans in-process: the
rows not yet stored are inserted (the first copy of a key wins) and the rollups of the counted
calls among them are added. The answer is `{"ok": true}`, or `{"ok": false, "data": bool,
"error": text}` where `data` tells a row the database refuses (SQLite's integrity and binding
errors) from a failure of the database itself.

It exits at the end of its input, which is also what its parent's death looks like; on Linux it
also asks the kernel for SIGKILL when the parent dies, so no write outlives a killed Keel (a
transaction cut short is rolled back; the parent's log still holds its spans).
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sqlite3
import struct
import sys
from typing import IO, Any

import orjson

from keel.analytics.rollups import Rollup, sqlite_key_lookups, sqlite_upsert_sql
from keel.storage.spans_repo import is_counted_row, rollup_view, sqlite_insert_sql

_LENGTH = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
# A bad value or constraint in a row, not a failing database: the parent rejects such rows
# (ValueError covers a batch that is not JSON rows, orjson's decoding error included).
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    ValueError,
    TypeError,
)


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's bytes, or None at the end of the stream (also this module's parent's
    way of reading the answers)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


class Writer:
    """Writes batches of span rows on one SQLite connection."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.conn = sqlite3.connect(setup["path"], isolation_level=None, check_same_thread=False)
        for pragma in setup["pragmas"]:
            self.conn.execute(f"PRAGMA {pragma}")
        self.insert = sqlite_insert_sql()
        self.upsert = sqlite_upsert_sql()

    def write(self, rows: list[list[Any]]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: what is read below stays true
        try:
            counted: dict[tuple[str, str], list[Any]] = {}
            for row in rows:
                if is_counted_row(row):
                    counted.setdefault((row[0], row[1]), row)
            for key in self._stored(list(counted)):
                del counted[key]
            conn.executemany(self.insert, rows)
            rollup = Rollup()
            for row in counted.values():
                rollup.add_span(rollup_view(row))
            if rollup:
                conn.executemany(self.upsert, rollup.rows())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _stored(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for sql, params in sqlite_key_lookups(keys):
            found += [(t, s) for t, s in self.conn.execute(sql, params)]
        return found


def answer(writer: Writer, frame: bytes) -> dict[str, Any]:
    try:
        writer.write(orjson.loads(frame))
    except Exception as exc:  # reported, never fatal: the parent retries or rejects the rows
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        error = f"{type(exc).__name__}: {first_line}"
        return {"ok": False, "data": isinstance(exc, _DATA_ERRORS), "error": error}
    return {"ok": True}


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the end of stdin still stops this process
        pass


def main() -> None:
    _die_with_parent()
    # Ctrl-C, or a service manager's SIGTERM, reaches the whole process group: the parent
    # decides when this process stops (it closes stdin after its last batch is written).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = read_frame(stdin)
    if setup is None:
        return
    writer = Writer(orjson.loads(setup))
    # Rows decoded from JSON hold no reference cycles: reference counting frees them, and the
    # cyclic collector, which the thousands of row lists of each batch set off again and again,
    # only cost time (an eighth of this process's CPU). What was made at start-up is frozen out
    # of its way; a failed batch (whose traceback may hold a cycle) is followed by a collection.
    gc.freeze()
    gc.disable()
    write_frame(stdout, b'{"ok":true}')
    while (frame := read_frame(stdin)) is not None:
        result = answer(writer, frame)
        write_frame(stdout, orjson.dumps(result))
        if not result["ok"]:
            gc.collect()
    writer.conn.close()


if __name__ == "__main__":
    main()
