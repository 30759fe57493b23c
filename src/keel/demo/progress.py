"""The demo's progress on standard error: a redrawn bar on a terminal, a line per tenth elsewhere.

Standard output keeps only the summary, so `keel demo > summary.txt` stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING

import click

if TYPE_CHECKING:
    from keel.demo.runner import Tally

__all__ = ["Progress"]

_WIDTH = 28


class Progress:
    def __init__(self, file: IO[str] | None = None, *, tty: bool | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.tty = self.file.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._tenths = 0
        self._drawn = False

    def _line(self, tally: Tally) -> str:
        return (
            f"{tally.calls}/{tally.planned_calls} calls, {tally.errors} errors, "
            f"{tally.traces} traces, {len(tally.sessions)} sessions"
        )

    def __call__(self, tally: Tally) -> None:
        total = max(tally.planned_calls, 1)
        done = min(tally.calls, total)
        if self.tty:
            filled = _WIDTH * done // total
            bar = "#" * filled + "-" * (_WIDTH - filled)
            elapsed = time.monotonic() - self.started
            text = f"\rkeel demo [{bar}] {self._line(tally)}, {elapsed:.0f} s"
            click.echo(text, file=self.file, nl=False)
            self._drawn = True
            return
        tenths = 10 * done // total
        if tenths > self._tenths:
            self._tenths = tenths
            click.echo(f"keel demo: {self._line(tally)}", file=self.file)

    def start(self, tally: Tally) -> None:
        self.started = time.monotonic()
        click.echo(f"keel demo: {tally.planned_calls} gateway calls to send", file=self.file)

    def finish(self) -> None:
        if self._drawn:
            click.echo("", file=self.file)
