"""keel.prompts.diff on whole records."""

from __future__ import annotations

from keel.prompts.diff import diff_versions, source_text
from keel.prompts.model import PromptContent, PromptVersion, content_hash


def version(number: int, content: PromptContent) -> PromptVersion:
    return PromptVersion("p", number, content_hash(content), content, None, "k", 0.0)


def test_diff_of_a_chat_and_a_text_version() -> None:
    chat = PromptContent(
        kind="chat",
        messages=(
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "{{ q }}"}, {"type": "image_url"}],
            },
        ),
        variables=["q"],
        config={"model": "fast", "params": {"top_p": 1, "seed": 3}},
    )
    text = PromptContent(
        kind="text", template="Be brief.\n{{ q }}", variables=["q"], config={"model": "slow"}
    )
    assert source_text(chat) == "system: Be brief.\nuser: {{ q }}\n[image_url]"
    assert diff_versions("p", version(1, chat), version(2, text)) == {
        "prompt": "p",
        "from": 1,
        "to": 2,
        "template": "--- p v1\n+++ p v2\n@@ -1,3 +1,2 @@\n-system: Be brief.\n-user: {{ q }}\n"
        "-[image_url]\n+Be brief.\n+{{ q }}",
        "config": [
            {"key": "model", "from": "fast", "to": "slow"},
            {"key": "params.seed", "from": 3, "to": None},
            {"key": "params.top_p", "from": 1, "to": None},
        ],
        "variables": None,
    }
    assert diff_versions("p", version(1, chat), version(1, chat))["template"] == ""
