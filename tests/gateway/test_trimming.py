"""Context trimming keeps system prompts and the latest turns within the token budget."""

from __future__ import annotations

from typing import Any

from keel.costs.tokens import count_messages
from keel.gateway.trimming import trim_messages


def _conversation(turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        out.append({"role": "user", "content": f"question {i} " + "word " * 20})
        out.append({"role": "assistant", "content": f"answer {i} " + "word " * 20})
    out.append({"role": "user", "content": "the latest question"})
    return out


def test_within_budget_nothing_changes() -> None:
    messages = _conversation(2)
    assert trim_messages(messages, 10_000) == (messages, 0)


def test_oldest_turns_go_first_and_the_system_prompt_stays() -> None:
    messages = _conversation(10)
    kept, dropped = trim_messages(messages, 150)
    assert kept[0] == messages[0] and kept[-1] == messages[-1]
    assert count_messages(kept) <= 150
    assert dropped == len(messages) - len(kept) > 0
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]  # a contiguous recent tail


def test_the_latest_message_stays_even_over_budget() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "word " * 500}]
    assert (
        trim_messages(messages, 10) == (messages, 0) or trim_messages(messages, 10)[0] == messages
    )


def test_a_tool_result_never_loses_its_call() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "word " * 30}
    messages = [
        {"role": "user", "content": "word " * 200},
        call,
        result,
        {"role": "user", "content": "next"},
    ]
    kept, _ = trim_messages(messages, 80)
    assert (call in kept) == (result in kept)
    assert kept[-1] == messages[-1]
