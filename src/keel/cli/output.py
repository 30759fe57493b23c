"""How the `keel` commands print: JSON for `--json`, aligned columns for people."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["print_json", "table"]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """`rows` under `headers`, each column as wide as its widest cell."""
    cells = [headers, *rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )
