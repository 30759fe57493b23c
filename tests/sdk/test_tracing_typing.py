"""@observe keeps the decorated function's signature for type checkers (mypy --strict)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_observe_typing_under_mypy_strict() -> None:
    target = Path(__file__).with_name("typing_observe.py")
    args = ["--strict", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental"]
    args += ["--cache-dir", "/dev/null", str(target)]
    stdout, stderr, status = api.run(args)
    assert (status, stderr) == (0, ""), stdout
    assert stdout.startswith("Success: no issues found in 1 source file")
