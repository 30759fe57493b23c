"""The write-ahead log on its own: round trip, rotation, torn and corrupt tails, checkpoints."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.records.wal import LogFullError, LogLockedError, WriteAheadLog


@pytest.fixture
def opened() -> Iterator[list[WriteAheadLog]]:
    """Logs a test opens; closed at the end even when the test fails."""
    logs: list[WriteAheadLog] = []
    yield logs
    for wal in logs:
        wal.close()


def _open(opened: list[WriteAheadLog], path: Path, **kwargs: int | str) -> WriteAheadLog:
    options: dict[str, int | str] = {"max_bytes": 1 << 20, "segment_bytes": 1 << 16}
    options.update(kwargs)
    wal = WriteAheadLog(path, **options)  # type: ignore[arg-type]
    wal.open()
    opened.append(wal)
    return wal


def _read_all(wal: WriteAheadLog, position: int | None = None) -> list[bytes]:
    entries, _ = wal.read(wal.checkpoint_position if position is None else position, 10**6)
    return [payload for payload, _ in entries]


def _segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("wal-*.log"))


def test_append_read_round_trip(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path)
    positions = [wal.append(f"entry {n}".encode()) for n in range(5)]
    entries, resume = wal.read(0, 100)
    assert entries == [(f"entry {n}".encode(), positions[n]) for n in range(5)]
    assert resume == positions[-1] == wal.end_position == wal.pending_bytes
    assert wal.read(positions[1], 2) == (
        [(b"entry 2", positions[2]), (b"entry 3", positions[3])],
        positions[3],
    )


def test_rotation_and_reopen(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path, segment_bytes=100)
    for n in range(20):
        wal.append(b"x" * 40 + str(n).encode())
    assert len(_segments(tmp_path)) == 10  # two 48-50 byte entries per 100-byte segment
    assert _read_all(wal) == [b"x" * 40 + str(n).encode() for n in range(20)]
    wal.close()
    again = _open(opened, tmp_path, segment_bytes=100)
    assert again.entries_at_open == 20
    again.append(b"after restart")
    assert _read_all(again)[-2:] == [b"x" * 40 + b"19", b"after restart"]
    assert len(_segments(tmp_path)) == 11  # a reopened log always starts a fresh segment


def test_read_stops_before_a_position(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    # The writer reads up to the first entry it holds in memory: within a segment, at a
    # segment's start, and past a torn tail that ends the segment before it.
    wal = _open(opened, tmp_path, segment_bytes=100)
    ends = [wal.append(b"x" * 40 + str(n).encode()) for n in range(6)]  # two per segment
    starts = [0, *ends[:-1]]
    entries, resume = wal.read(0, 100, stop=starts[3])  # mid-segment
    assert [e[1] for e in entries] == ends[:3] and resume == starts[3]
    entries, resume = wal.read(0, 100, stop=starts[4])  # a segment's start
    assert [e[1] for e in entries] == ends[:4] and resume == starts[4]
    assert wal.read(starts[4], 100, stop=starts[4]) == ([], starts[4])
    with open(tmp_path / f"wal-{starts[2]:016d}.log", "r+b") as file:
        file.truncate(ends[2] - starts[2] + 5)  # the second entry of segment 2 is torn
    entries, resume = wal.read(starts[3], 100, stop=starts[4])
    assert entries == [] and resume == starts[4]


def test_torn_tail_is_ignored(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path)
    for n in range(3):
        wal.append(f"entry {n}".encode())
    wal.close()
    segment = tmp_path / _segments(tmp_path)[0]
    os.truncate(segment, segment.stat().st_size - 3)  # power cut in the middle of entry 2
    again = _open(opened, tmp_path)
    again.append(b"entry 3")
    assert _read_all(again) == [b"entry 0", b"entry 1", b"entry 3"]
    assert again.entries_at_open == 2


def test_torn_header_is_ignored(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path)
    wal.append(b"kept")
    wal.close()
    with open(tmp_path / _segments(tmp_path)[0], "ab") as file:
        file.write(b"\x05\x00")  # four bytes of a header never made it
    again = _open(opened, tmp_path)
    again.append(b"new")
    assert _read_all(again) == [b"kept", b"new"]


def test_crc_corruption_is_detected(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path)
    first = wal.append(b"good")
    wal.append(b"flipped")
    wal.close()
    segment = tmp_path / _segments(tmp_path)[0]
    data = bytearray(segment.read_bytes())
    data[first + 8] ^= 0xFF  # the first payload byte of the second entry
    segment.write_bytes(bytes(data))
    again = _open(opened, tmp_path)
    again.append(b"later")
    assert _read_all(again) == [b"good", b"later"]


def test_garbage_length_does_not_allocate(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path)
    wal.append(b"good")
    wal.close()
    with open(tmp_path / _segments(tmp_path)[0], "ab") as file:
        file.write(struct.pack("<II", 0xFFFFFFF0, 0) + b"junk")
    again = _open(opened, tmp_path)
    assert _read_all(again) == [b"good"]


def test_checkpoint_trims_old_segments(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path, segment_bytes=100)
    positions = [wal.append(b"y" * 42) for _ in range(10)]  # 50 bytes each: two per segment
    assert len(_segments(tmp_path)) == 5
    wal.checkpoint(positions[4])  # the first two segments are wholly before it
    assert len(_segments(tmp_path)) == 3
    assert wal.pending_bytes == 250
    assert len(_read_all(wal)) == 5
    wal.checkpoint(positions[2])  # going back is ignored
    assert wal.checkpoint_position == positions[4]
    wal.close()
    again = _open(opened, tmp_path, segment_bytes=100)
    assert again.checkpoint_position == positions[4]
    assert again.entries_at_open == 5
    again.checkpoint(again.end_position)
    assert _segments(tmp_path) == [f"wal-{again.end_position:016d}.log"]
    assert again.pending_bytes == 0


def test_unreadable_checkpoint_replays_everything(
    tmp_path: Path, opened: list[WriteAheadLog]
) -> None:
    wal = _open(opened, tmp_path)
    wal.append(b"a")
    wal.checkpoint(wal.append(b"b"))
    wal.close()
    (tmp_path / "checkpoint").write_bytes(b"\x00garbage")
    again = _open(opened, tmp_path)
    assert again.checkpoint_position == 0
    assert _read_all(again) == [b"a", b"b"]


def test_log_full_and_has_room(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    wal = _open(opened, tmp_path, max_bytes=1000, segment_bytes=300)
    assert wal.has_room(reserve=900)
    for _ in range(9):
        wal.append(b"z" * 92)  # 100 bytes with the header
    assert not wal.has_room(reserve=101)
    assert wal.has_room(reserve=100)
    wal.append(b"z" * 92)
    with pytest.raises(LogFullError, match="full"):
        wal.append(b"")
    wal.checkpoint(wal.read(0, 5)[1])  # the writer caught up on five entries
    assert wal.pending_bytes == 500
    wal.append(b"z" * 92)


def test_one_process_per_folder(tmp_path: Path, opened: list[WriteAheadLog]) -> None:
    _open(opened, tmp_path)
    with pytest.raises(LogLockedError):
        _open(opened, tmp_path)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mode", ["always", "batch"])
async def test_wait_durable_groups_waiters(
    tmp_path: Path, opened: list[WriteAheadLog], mode: str
) -> None:
    wal = _open(opened, tmp_path, fsync=mode, fsync_interval_ms=20)
    positions = [wal.append(f"{n}".encode()) for n in range(50)]
    await asyncio.gather(*(wal.wait_durable(p) for p in positions))
    assert wal.durable_position >= positions[-1]
    await wal.wait_durable()  # already durable: returns at once
    later = wal.append(b"later")
    await wal.wait_durable()
    assert wal.durable_position >= later
