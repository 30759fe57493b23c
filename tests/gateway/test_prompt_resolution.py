"""Issue 5's end-to-end path: prompts pushed as code, promoted, served by the gateway.

`keel prompts push` of a folder, `promote` to production, then the official `openai` SDK with
`extra_body={"prompt": ...}`; the record names the prompt version; `rollback` changes what the
next call uses, with no restart.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway.conftest import ADMIN_KEY, fetch_record
from tests.servers import KEEL_BIN, KeelProcess

pytestmark = pytest.mark.timeout(90)

PROMPT_V1 = """\
name: summarize
description: Summaries for the support inbox
messages:
  - {role: system, content: "You write summaries for {{ audience }}."}
  - {role: user, content: "v1 {{ text }}"}
variables: [audience, text]
config: {model: fast, temperature: 0.2, max_tokens: 300}
"""


def keel_cli(keel: KeelProcess, *args: str) -> str:
    done = subprocess.run(
        [KEEL_BIN, "--url", keel.url, "--api-key", ADMIN_KEY, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_pushed_promoted_prompt_is_served_and_rollback_takes_effect(
    tmp_path: Path,
    keel: KeelProcess,
    client: openai.OpenAI,
    fake_upstream: tuple[FakeOpenAI, str],
) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "summarize.yaml").write_text(PROMPT_V1)
    assert "version 1" in keel_cli(keel, "prompts", "push", str(folder))
    assert "unchanged" in keel_cli(keel, "prompts", "push", str(folder))  # idempotent
    (folder / "summarize.yaml").write_text(PROMPT_V1.replace("v1 {{", "v2 {{"))
    assert "version 2" in keel_cli(keel, "prompts", "push", str(folder))
    keel_cli(keel, "prompts", "promote", "summarize", "1", "--label", "production")
    keel_cli(keel, "prompts", "promote", "summarize", "2", "--label", "production")

    def ask() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="fast",
            messages=[],
            extra_body={
                "prompt": {
                    "name": "summarize",
                    "label": "production",
                    "variables": {"audience": "agents", "text": "hello"},
                }
            },
        )
        return raw.parse().choices[0].message.content or "", raw.headers["x-keel-request-id"]

    answer, request_id = ask()
    assert answer == "v2 hello"
    sent = fake_upstream[0].requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "You write summaries for agents."},
        {"role": "user", "content": "v2 hello"},
    ]
    assert (sent["temperature"], sent["max_tokens"], "prompt" in sent) == (0.2, 300, False)
    record = fetch_record(keel, request_id)
    assert (record["prompt_name"], record["prompt_version"]) == ("summarize", 2)

    keel_cli(keel, "prompts", "rollback", "summarize", "--label", "production")
    answer, request_id = ask()
    assert answer == "v1 hello"
    assert fetch_record(keel, request_id)["prompt_version"] == 1


def test_prompt_errors_are_clear(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.chat.completions.create(
            model="fast", messages=[], extra_body={"prompt": {"name": "nope"}}
        )
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.chat.completions.create(
            model="fast", messages=[], extra_body={"prompt": "summarize"}
        )
