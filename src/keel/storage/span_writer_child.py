"""The span writer process (`python -m keel.storage.span_writer_child`): the SQLite side of
`keel.storage.span_writer`.

It reads frames from stdin and answers each on stdout. A frame is a little-endian u32 length and
that many bytes: first the JSON `{"path": …, "pragmas": […]}`, then one part per transaction
in `marshal`'s format (the same Python on both ends of a pipe: it decodes rows in half the time
JSON takes). A part holds span rows (keel.storage.spans_repo.SPAN_COLUMNS order), the keys of
those that count as calls and the rollup rows of those calls, which the parent sums (it has
CPU to spare; this process is the one ingest waits for). They are written with the same
statements as `keel.storage.batch.write_batch` writes spans in-process: the rows not yet stored
are inserted (the first copy of a key wins) and the rollups of the counted calls among them are
added; when some of those calls are stored already (a batch retried), the rollups are summed
again here without them. The answer is the JSON `{"ok": true}`, or `{"ok": false, "data": bool,
"error": text}` where `data` tells a row the database refuses (SQLite's integrity and binding
errors) from a failure of the database itself.

It exits at the end of its input, which is also what its parent's death looks like; on Linux it
also asks the kernel for SIGKILL when the parent dies, so no write outlives a killed Keel (a
transaction cut short is rolled back; the parent's log still holds its spans).
"""

from __future__ import annotations

import ctypes
import gc
import marshal
import signal
import sqlite3
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any

import orjson

from keel.analytics.rollups import Rollup, sqlite_key_lookups, sqlite_upsert_sql
from keel.storage.spans_repo import SPAN_COLUMNS, is_counted_row, rollup_view, sqlite_insert_sql

_LENGTH = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
# A bad value or constraint in a row, not a failing database: the parent rejects such rows
# (ValueError, EOFError and TypeError cover a part that is not what `encode_part` makes).
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    ValueError,
    EOFError,
    TypeError,
)

Row = tuple[Any, ...] | list[Any]  # keel.storage.spans_repo.SpanRow
Key = tuple[str, str]


def counted_rows(rows: Iterable[Row]) -> dict[Key, Row]:
    """The rows that count as calls, by key (the first copy of a key)."""
    counted: dict[Key, Row] = {}
    for row in rows:
        if is_counted_row(row):
            counted.setdefault((row[0], row[1]), row)
    return counted


def rollup_rows(counted: Iterable[Row]) -> list[tuple[Any, ...]]:
    """The rollup rows (`sqlite_upsert_sql` parameters) the calls add to."""
    rollup = Rollup()
    for row in counted:
        rollup.add_span(rollup_view(row))
    return rollup.rows()


def encode_part(rows: Sequence[Row]) -> bytes:
    """The frame of one transaction (made by the parent).

    The rows go as the child binds them fastest: Python's sqlite3 passes each None and bool
    through its adapter look-ups (some 0.2 µs each, and a span row holds about ten), a float
    or an int straight to SQLite. So None is sent as NaN, which SQLite stores as NULL, and the
    two flags as 0 or 1; `_as_read` undoes it for the rare part whose rollups the child sums.
    """
    counted = counted_rows(rows)
    params = []
    for row in rows:
        values = [_NAN if v is None else v for v in row]
        values[_ESTIMATED] = int(values[_ESTIMATED])
        values[_COUNTED] = int(values[_COUNTED])
        params.append(values)
    return marshal.dumps((params, list(counted), rollup_rows(counted.values())))


_NAN = float("nan")
_ESTIMATED, _COUNTED = SPAN_COLUMNS.index("cost_estimated"), SPAN_COLUMNS.index("counted")


def _as_read(row: Row) -> list[Any]:
    """A row of a part as `encode_part` was given it (no row holds a NaN of its own: the
    mapping keeps finite numbers only)."""
    values = [None if v != v else v for v in row]
    values[_ESTIMATED] = bool(values[_ESTIMATED])
    values[_COUNTED] = bool(values[_COUNTED])
    return values


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

    def write(self, rows: list[Row], keys: list[Key], rollup: list[tuple[Any, ...]]) -> None:
        """Store a part: its rows, and the rollup rows of its counted calls (`keys`) unless
        some of them are stored already, in which case the rollups are summed here without."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: what is read below stays true
        try:
            stored = self._stored(keys)
            if stored:
                counted = counted_rows(rows)
                for key in stored:
                    del counted[key]
                rollup = rollup_rows(_as_read(row) for row in counted.values())
            conn.executemany(self.insert, rows)
            if rollup:
                conn.executemany(self.upsert, rollup)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _stored(self, keys: list[Key]) -> list[Key]:
        found: list[Key] = []
        for sql, params in sqlite_key_lookups(keys):
            found += [(t, s) for t, s in self.conn.execute(sql, params)]
        return found


def answer(writer: Writer, frame: bytes) -> dict[str, Any]:
    try:
        # From the parent only, over this process's own pipe (no one else writes to it).
        rows, keys, rollup = marshal.loads(frame)  # noqa: S302
        writer.write(rows, keys, rollup)
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
