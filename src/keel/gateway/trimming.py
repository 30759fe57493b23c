"""Gateway step: context trimming, a cost control that keeps a conversation within a budget.

A model's `max_input_tokens` (config) caps the prompt: system and developer messages always
stay, then the latest turns are kept, newest first, while they fit; older turns are dropped.
A tool result is never kept without the assistant message that called the tool (providers
refuse such a history), and the last message is always kept. The record says how many
messages were dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.costs.tokens import REPLY_PRIMING_TOKENS, count_messages

__all__ = ["trim_messages"]

_PINNED = ("system", "developer")


def _turns(messages: list[Any]) -> list[list[Any]]:
    """Non-pinned messages grouped so a tool call and its results stay together."""
    turns: list[list[Any]] = []
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "tool" and turns:
            turns[-1].append(message)  # belongs to the assistant turn that called the tool
        else:
            turns.append([message])
    return turns


def trim_messages(messages: list[Any], budget: int) -> tuple[list[Any], int]:
    """The messages to send and how many were dropped to fit `budget` tokens."""
    if count_messages(messages) <= budget:
        return messages, 0
    pinned = [m for m in messages if isinstance(m, Mapping) and m.get("role") in _PINNED]
    rest = [m for m in messages if not (isinstance(m, Mapping) and m.get("role") in _PINNED)]
    turns = _turns(rest)
    kept: list[list[Any]] = [turns[-1]] if turns else []  # the latest turn, whatever it costs
    used = count_messages(pinned + turns[-1]) if turns else count_messages(pinned)
    for turn in reversed(turns[:-1]):
        cost = count_messages(turn) - REPLY_PRIMING_TOKENS  # the reply is primed once, above
        if used + cost > budget:
            break
        kept.insert(0, turn)
        used += cost
    keep = {id(m) for turn in kept for m in turn} | {id(m) for m in pinned}
    out = [m for m in messages if id(m) in keep]  # original order: pinned ones where they were
    return out, len(messages) - len(out)
