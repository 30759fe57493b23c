"""Offline token counting: cl100k_base from the bundled file, OpenAI's message scheme, fallback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken.load

from keel.costs import tokens
from keel.costs.tokens import count_messages, count_text, estimate_usage, preload
from keel.providers.base import Usage

# OpenAI cookbook "How to count tokens with tiktoken": these messages are 129 prompt tokens.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.fixture
def fresh_encoding() -> Iterator[None]:
    """Forget the loaded encoding for one test, and put it back afterwards."""
    saved = tokens._encoding, tokens._loaded
    tokens._encoding, tokens._loaded = None, False
    yield
    tokens._encoding, tokens._loaded = saved


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every socket connection and every tiktoken URL read fail; returns the paths read."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    real_read_file = tiktoken.load.read_file
    paths: list[str] = []

    def local_only(blobpath: str) -> bytes:
        paths.append(blobpath)
        if "://" in blobpath:
            raise AssertionError(f"tiktoken tried to download {blobpath}")
        return real_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", local_only)
    return paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello world", 2),
        ("tiktoken is great!", 6),  # the cookbook's example: [83, 1609, 5963, 374, 2294, 0]
        ("<|endoftext|>", 7),  # special tokens in user text are plain text, not an error
    ],
)
def test_count_text_cl100k(text: str, expected: int) -> None:
    assert count_text(text) == expected


def test_encoding_is_built_from_the_bundled_file_without_network(
    fresh_encoding: None,
    no_network: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: the file must be read
    assert preload() is True
    assert count_text("hello world") == 2
    assert len(no_network) == 1
    assert no_network[0].endswith("tiktoken_ext/data/cl100k_base.tiktoken")
    assert Path(no_network[0]).is_file()


def test_encoding_loads_once(fresh_encoding: None) -> None:
    first = tokens._get_encoding()
    assert first is not None
    assert tokens._get_encoding() is first


def test_fallback_heuristic_when_the_file_cannot_load(
    fresh_encoding: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("no such file")

    monkeypatch.setattr(tokens, "_build_encoding", broken)
    with caplog.at_level(logging.WARNING, logger="keel.costs"):
        assert preload() is False
        assert count_text("abcdefghi") == 3  # ceil(9 / 4)
        assert count_text("abcd") == 1
    assert len([r for r in caplog.records if "cl100k_base" in r.getMessage()]) == 1


def test_count_messages_cookbook_example() -> None:
    assert count_messages(COOKBOOK_MESSAGES) == 129


def test_count_messages_scheme() -> None:
    one = [{"role": "user", "content": "hello world"}]
    assert count_messages(one) == 3 + 1 + 2 + 3  # message wrap, "user", text, reply priming
    named = [{"role": "user", "name": "bob", "content": "hello world"}]
    assert count_messages(named) == count_messages(one) + count_text("bob") + 1
    assert count_messages([]) == 0


def test_count_messages_content_parts_and_tool_calls() -> None:
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "tiktoken is great!"},
            ],
        }
    ]
    assert count_messages(parts) == 3 + 1 + 2 + 6 + 3
    call: list[dict[str, Any]] = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    expected = (
        (3 + count_text("assistant") + count_text("get_weather") + count_text('{"city": "Paris"}'))
        + (3 + count_text("tool") + count_text("call_1") + count_text("sunny"))
        + 3
    )
    assert count_messages(call) == expected


def test_count_messages_skips_malformed_items() -> None:
    messages: list[Any] = ["not a message", {"role": "user", "content": 42}]
    assert count_messages(messages) == 3 + 1 + 3


def test_estimate_usage_is_flagged() -> None:
    usage = estimate_usage([{"role": "user", "content": "hello world"}], "tiktoken is great!")
    assert usage == Usage(input_tokens=9, output_tokens=6, estimated=True)


def test_background_load_never_blocks_a_count_and_then_counts_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import threading

    from keel.costs import tokens as module

    fresh = importlib.reload(module)  # forget any encoding an earlier test loaded
    gate = threading.Event()
    build = fresh._build_encoding

    def slow_build() -> object:
        gate.wait(10)
        return build()

    monkeypatch.setattr(fresh, "_build_encoding", slow_build)
    fresh.load_in_background()
    assert fresh.count_text("hello world") == 3  # ceil(11 / 4): the fallback, without waiting
    gate.set()
    assert fresh._background is not None
    fresh._background.join(10)
    assert fresh.count_text("hello world") == 2
