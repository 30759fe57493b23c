"""Record ids: 26-character ULIDs in lower-case Crockford base32, ordered by time."""

from __future__ import annotations

import random
import time

import pytest

from keel.records import model
from keel.records.model import new_id


def _reference(value: int) -> str:
    digits = []
    for _ in range(26):
        digits.append("0123456789abcdefghjkmnpqrstvwxyz"[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def test_ids_encode_time_and_randomness_digit_for_digit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    for _ in range(2000):
        ms, bits = rng.randrange(2**48), rng.getrandbits(80)
        monkeypatch.setattr(model.time, "time_ns", lambda ms=ms: ms * 1_000_000)
        monkeypatch.setattr(model.random, "getrandbits", lambda n, bits=bits: bits)
        assert new_id() == _reference(ms << 80 | bits)


def test_ids_sort_by_time() -> None:
    first = new_id()
    time.sleep(0.002)
    assert len(first) == 26 and new_id() > first
