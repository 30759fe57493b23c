"""A side-by-side diff of two prompt versions, as rows the diff page lays out in two columns.

The texts compared are `keel.prompts.diff.source_text` of each version, the same text the API's
and the CLI's unified diff is made from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from itertools import zip_longest
from typing import Literal

__all__ = ["Row", "side_by_side"]

Tag = Literal["equal", "replace", "delete", "insert"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of each side; a side is None where the other side has a line with no match."""

    tag: Tag
    left_no: int | None
    left: str | None
    right_no: int | None
    right: str | None


def side_by_side(old: str, new: str) -> list[Row]:
    """Rows pairing the lines of `old` and `new`, changed ones tagged."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = zip_longest(range(i1, i2), range(j1, j2))
        for i, j in pairs:
            rows.append(
                Row(
                    tag=tag,
                    left_no=None if i is None else i + 1,
                    left=None if i is None else a[i],
                    right_no=None if j is None else j + 1,
                    right=None if j is None else b[j],
                )
            )
    return rows
