"""Prompts as code: prompt files load, dump back to the same content, and errors name the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.prompts.files import content_from_json, dump, load_dir, load_file
from keel.prompts.model import PromptContent, PromptError

DOCUMENTED = """\
name: summarize
description: Summaries for the support inbox
messages:                       # or `template: "..."` for a text prompt
  - {role: system, content: "You write summaries for {{ audience }}."}
  - {role: user, content: "{{ text }}"}
variables: [audience, text]     # or a JSON schema object
config: {model: fast, temperature: 0.2, max_tokens: 300}
"""

SUMMARIZE = PromptContent(
    kind="chat",
    messages=(
        {"role": "system", "content": "You write summaries for {{ audience }}."},
        {"role": "user", "content": "{{ text }}"},
    ),
    variables=["audience", "text"],
    config={"model": "fast", "temperature": 0.2, "max_tokens": 300},
    description="Summaries for the support inbox",
)


def test_the_documented_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "summarize.yaml"
    path.write_text(DOCUMENTED)
    assert load_file(path) == ("summarize", SUMMARIZE)


def test_dump_is_stable_block_style_and_loads_back(tmp_path: Path) -> None:
    content = PromptContent(
        kind="text",
        template="Summarize for {{ who }}:\n\n{{ text }}\n",
        variables={"type": "object", "properties": {"who": {"type": "string"}}},
        config={"model": "fast", "response_format": {"type": "json_object"}},
    )
    text = dump("digest", content)
    assert text == (
        "name: digest\n"
        "template: |\n"
        "  Summarize for {{ who }}:\n"
        "\n"
        "  {{ text }}\n"
        "variables:\n"
        "  type: object\n"
        "  properties:\n"
        "    who:\n"
        "      type: string\n"
        "config:\n"
        "  model: fast\n"
        "  response_format:\n"
        "    type: json_object\n"
    )
    for name, value in (("digest", content), ("summarize", SUMMARIZE)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump(name, value))
        assert load_file(path) == (name, value)


def test_load_dir_reads_yaml_and_yml_and_refuses_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(dump("one", SUMMARIZE))
    (tmp_path / "b.yml").write_text(dump("two", SUMMARIZE))
    (tmp_path / "notes.txt").write_text("not a prompt")
    assert load_dir(tmp_path) == [
        ("one", SUMMARIZE, tmp_path / "a.yaml"),
        ("two", SUMMARIZE, tmp_path / "b.yml"),
    ]
    (tmp_path / "c.yaml").write_text(dump("one", SUMMARIZE))
    with pytest.raises(PromptError) as caught:
        load_dir(tmp_path)
    assert caught.value.message == (
        f"prompt 'one' is defined in both {tmp_path / 'a.yaml'} and {tmp_path / 'c.yaml'}"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("template: x\n", "field 'name': is required and must be a string"),
        ("name: bad name\ntemplate: x\n", "invalid prompt name 'bad name'"),
        ("name: a\n", "a prompt has exactly one of 'messages' and 'template'"),
        ("name: a\ntemplate: x\nmessages: []\n", "exactly one of 'messages' and 'template'"),
        ("name: a\nmessages: [{role: 1, content: x}]\n", "field 'messages[0].role': must be"),
        ("name: a\nmessages: [{role: u, content: [x]}]\n", "field 'messages[0].content[0]'"),
        ("name: a\ntemplate: x\nvariables: [a, a]\n", "field 'variables': names a variable twice"),
        ("name: a\ntemplate: x\nconfig: [1]\n", "field 'config': must be an object"),
        ("name: a\ntemplate: x\nmodel: fast\n", "field 'model': unknown field"),
        ("name: a\ntemplate: {{ x }}\n", "not valid YAML"),
        ("- just a list\n", "a prompt file holds one mapping"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(PromptError) as caught:
        load_file(path)
    assert caught.value.status == 400
    assert caught.value.message.startswith(f"{path}: ")
    assert message in caught.value.message


def test_content_from_json_reads_what_to_json_writes() -> None:
    assert content_from_json(SUMMARIZE.to_json()) == SUMMARIZE
    with pytest.raises(PromptError, match="field 'kind': must be 'text'"):
        content_from_json({"kind": "chat", "template": "x"})
    with pytest.raises(PromptError, match="a prompt must be an object"):
        content_from_json([])  # type: ignore[arg-type]
