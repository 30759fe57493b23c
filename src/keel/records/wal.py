"""The write-ahead log under `<data_dir>/wal/`: segment files, group-commit fsync, checkpoint.

A record is appended here on the request hot path before anything else may lose it; the
background writer copies entries to the database and then moves the checkpoint past them.

Layout. `wal-<16 digits>.log` segments, where the number is the segment's first position: a
position is one int, a byte offset in the logical stream of all segments ever written, so
`pending_bytes` is `end - checkpoint`. An entry is `<u32 length><u32 crc32><payload>` (little
endian). A torn or corrupt entry ends its segment for readers, and every `open` starts a fresh
segment, so a torn tail left by a crash never sits in front of good data. `checkpoint` holds the
position up to which everything is in the database; segments wholly before it are deleted.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from bisect import bisect_right
from pathlib import Path

import orjson

__all__ = ["ENTRY_HEADER_BYTES", "Entry", "LogFullError", "LogLockedError", "WriteAheadLog"]

log = logging.getLogger(__name__)

Entry = tuple[bytes, int]  # (payload, position just after the entry)

_HEADER = struct.Struct("<II")
ENTRY_HEADER_BYTES = _HEADER.size  # an entry takes this plus its payload's length
_SEGMENT = re.compile(r"^wal-(\d{16})\.log$")
_COUNT_CHUNK = 10_000


class LogFullError(Exception):
    """The log holds `max_bytes` not yet in the database: refuse new work (HTTP 503)."""


class LogLockedError(RuntimeError):
    """Another process has this write-ahead log open."""


class WriteAheadLog:
    """Append on the event-loop thread; fsync in a background thread; read from the writer."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: str = "batch",
        fsync_interval_ms: int = 10,
    ) -> None:
        if fsync not in {"batch", "always"}:
            raise ValueError(f"fsync must be 'batch' or 'always', got {fsync!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._interval = max(fsync_interval_ms, 1) / 1000
        self.entries_at_open = 0  # valid entries after the checkpoint when the log was opened
        self._lock = threading.Lock()  # guards the segment list, fd swaps and retired fds
        self._segments: list[int] = []
        self._fd = -1
        self._seg_start = 0
        self._end = 0
        self._checkpoint = 0
        self._synced = 0
        self._retired: list[int] = []
        self._dir_dirty = False
        self._broken = False
        self._stopping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._warned: set[int] = set()

    # -- positions ------------------------------------------------------------------------------

    @property
    def end_position(self) -> int:
        return self._end

    @property
    def checkpoint_position(self) -> int:
        return self._checkpoint

    @property
    def durable_position(self) -> int:
        return self._synced

    @property
    def pending_bytes(self) -> int:
        """Bytes appended but not yet checkpointed (in the database)."""
        return self._end - self._checkpoint

    def has_room(self, reserve: int = 1 << 20) -> bool:
        """False when fewer than `reserve` bytes are left: refuse a call before it costs money."""
        return self.pending_bytes + reserve <= self.max_bytes

    # -- open / close ---------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the folder, find the checkpoint, start a fresh segment and the fsync thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_folder_lock()
        self._checkpoint = self._load_checkpoint()
        sizes = self._scan()
        self._segments = [start for start, _ in sizes]
        if sizes and sizes[-1][1] == 0:
            start = sizes[-1][0]  # an empty last segment has no torn tail: reuse it
        else:
            start = max(self._checkpoint, sizes[-1][0] + sizes[-1][1] if sizes else 0)
            self._segments.append(start)
        self._trim()
        for old in self._segments[:-1]:  # a crash may have left them only in the page cache
            _fsync_path(self._path(old))
        self._fd = _open_segment(self._path(start))
        self._seg_start = self._end = self._synced = start
        _fsync_path(self.directory)
        self.entries_at_open = self._count_entries()
        self._thread = threading.Thread(target=self._sync_loop, name="keel-wal-fsync", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the fsync thread, fsync what was written and close the files."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._thread = None
        self._sync_once()
        for fd in [*self._retired, self._fd, self._lock_fd]:
            os.close(fd)
        self._retired, self._fd, self._lock_fd = [], -1, -1

    def _take_folder_lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise LogLockedError(f"{self.directory} is in use by another Keel process") from exc
        self._lock_fd = fd

    def _scan(self) -> list[tuple[int, int]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append((int(match.group(1)), path.stat().st_size))
        return sorted(found)

    def _count_entries(self) -> int:
        count, position = 0, self._checkpoint
        while True:
            entries, position = self.read(position, _COUNT_CHUNK)
            count += len(entries)
            if not entries:
                return count

    # -- append (event-loop thread) -------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write one entry with a single `os.write`; returns the position after it.

        No fsync and no buffering: once this returns, the kernel has the entry, which is what
        survives SIGKILL. Raises LogFullError, or OSError from the disk.
        """
        size = _HEADER.size + len(payload)
        if self._end + size - self._checkpoint > self.max_bytes:
            raise LogFullError(
                f"the write-ahead log is full ({self.pending_bytes} of {self.max_bytes} bytes "
                "not yet in the database)"
            )
        used = self._end - self._seg_start
        if self._broken or (used and used + size > self.segment_bytes):
            self._rotate()  # a segment exceeds segment_bytes only to hold one oversized entry
        entry = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, entry)
            while written < size:  # a short write only happens near a full disk
                written += os.write(self._fd, entry[written:])
        except OSError:
            self._broken = True  # part of the entry may be on disk: continue in a new segment
            raise
        self._end += size
        return self._end

    def _rotate(self) -> None:
        # After a failed write the file may hold a partial entry; the next segment starts after
        # it so that positions stay unique.
        start = self._seg_start + os.fstat(self._fd).st_size
        fd = _open_segment(self._path(start))
        with self._lock:
            self._retired.append(self._fd)  # the fsync thread fsyncs and closes it
            self._fd, self._seg_start, self._end = fd, start, start
            self._segments.append(start)
            self._dir_dirty = True
        self._broken = False

    # -- durability (fsync thread) --------------------------------------------------------------

    async def wait_durable(self, position: int | None = None) -> None:
        """Return once an fsync covers `position` (default: everything appended so far).

        Concurrent waiters share one fsync. In "always" mode the fsync starts now; in "batch"
        mode this waits for the next interval.
        """
        target = self._end if position is None else position
        # Set the loop before reading `_synced`, so the fsync thread either sees the loop and
        # notifies, or advanced `_synced` before the check below.
        self._loop = asyncio.get_running_loop()
        if self._synced >= target:
            return
        future = self._loop.create_future()
        self._waiters.append((target, future))
        if self.fsync == "always":
            self._wake.set()
        await future

    def _sync_loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self._sync_once()
            except OSError as exc:
                # Waiters stay pending: an entry is not reported durable unless an fsync says so.
                log.error("write-ahead log fsync failed in %s: %s", self.directory, exc)

    def _sync_once(self) -> None:
        with self._lock:
            end, fd, retired, dir_dirty = self._end, self._fd, self._retired, self._dir_dirty
            self._retired, self._dir_dirty = [], False
        if end == self._synced and not retired and not dir_dirty:
            return
        for old in retired:
            os.fsync(old)
            os.close(old)
        os.fsync(fd)
        if dir_dirty:
            _fsync_path(self.directory)
        self._synced = end
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._release_waiters)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                self._loop = None

    def _release_waiters(self) -> None:
        synced, still = self._synced, []
        for target, future in self._waiters:
            if target <= synced:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    # -- read and checkpoint (writer) -----------------------------------------------------------

    def read(
        self, position: int, max_entries: int, stop: int | None = None
    ) -> tuple[list[Entry], int]:
        """Up to `max_entries` entries from `position` (none that starts at or after `stop`),
        and the position to continue from.

        Safe in a worker thread beside `append`: it never reads past the end position it saw.
        """
        with self._lock:
            segments, end = list(self._segments), self._end
        if stop is not None:
            end = min(end, stop)
        entries: list[Entry] = []
        index = bisect_right(segments, position) - 1
        if index < 0:
            if not segments:
                return entries, position
            index, position = 0, segments[0]
        while len(entries) < max_entries:
            start = segments[index]
            if start >= end:  # a segment that begins at `stop`
                break
            last = index == len(segments) - 1 or segments[index + 1] > end
            limit = end - start if last else None
            position = self._read_segment(start, position - start, limit, max_entries, entries)
            if last or len(entries) >= max_entries:
                break
            index, position = index + 1, segments[index + 1]  # the rest of this one is invalid
        return entries, position

    def _read_segment(
        self, start: int, offset: int, limit: int | None, max_entries: int, out: list[Entry]
    ) -> int:
        with open(self._path(start), "rb", buffering=1 << 20) as file:
            size = os.fstat(file.fileno()).st_size if limit is None else limit
            file.seek(offset)
            while len(out) < max_entries and offset + _HEADER.size <= size:
                length, crc = _HEADER.unpack(file.read(_HEADER.size))
                if offset + _HEADER.size + length > size:
                    break
                payload = file.read(length)
                if zlib.crc32(payload) != crc:
                    break
                offset += _HEADER.size + length
                out.append((payload, start + offset))
        if offset < size and len(out) < max_entries and start not in self._warned:
            self._warned.add(start)
            log.warning(
                "write-ahead log segment %s ends with %d bytes of a torn or corrupt entry; "
                "skipping them",
                self._path(start).name,
                size - offset,
            )
        return start + offset

    def checkpoint(self, position: int) -> None:
        """Everything before `position` is in the database: persist that and drop old segments."""
        if position <= self._checkpoint:
            return
        path = self.directory / "checkpoint"
        temp = path.with_suffix(".tmp")
        # No fsync: a checkpoint lost to a power cut only makes the next start replay records the
        # database already has, which is harmless (writes are idempotent); an fsync per batch is
        # not free. An unreadable checkpoint means a full replay, never a loss.
        temp.write_bytes(orjson.dumps({"position": position}))
        os.replace(temp, path)
        self._checkpoint = position
        self._trim()

    def _trim(self) -> None:
        with self._lock:
            doomed = []
            while len(self._segments) > 1 and self._segments[1] <= self._checkpoint:
                doomed.append(self._segments.pop(0))
        for start in doomed:
            self._path(start).unlink(missing_ok=True)

    def _load_checkpoint(self) -> int:
        path = self.directory / "checkpoint"
        try:
            position = orjson.loads(path.read_bytes())["position"]
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            # Replaying from the start is always safe (writes are idempotent); losing is not.
            log.warning("unreadable write-ahead log checkpoint (%s); replaying the whole log", exc)
            return 0
        return position if isinstance(position, int) and position >= 0 else 0

    def _path(self, start: int) -> Path:
        return self.directory / f"wal-{start:016d}.log"


def _open_segment(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
