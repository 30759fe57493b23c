"""keel.prompts.render: benign templates render; variables are checked; errors are clear."""

from __future__ import annotations

from typing import Any

import pytest

from keel.prompts.model import PromptContent, RenderError
from keel.prompts.render import render, validate


def chat(*messages: dict[str, Any], variables: Any = None) -> PromptContent:
    return PromptContent(kind="chat", messages=messages, variables=variables)


def text(template: str, variables: Any = None) -> PromptContent:
    return PromptContent(kind="text", template=template, variables=variables)


def test_chat_prompt_renders_strings_and_text_parts_and_copies_the_rest() -> None:
    content = chat(
        {"role": "system", "content": "You write for {{ audience|upper }}.", "name": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "{{ items|join(', ') }}"},
                {"type": "image_url", "image_url": {"url": "https://x/{{ nope }}.png"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        variables=["audience", "items"],
    )
    out = render(content, {"audience": "support", "items": ["a", "b"]})
    assert out == [
        {"role": "system", "content": "You write for SUPPORT.", "name": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a, b"},
                {"type": "image_url", "image_url": {"url": "https://x/{{ nope }}.png"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
    ]


def test_text_prompt_renders_to_one_user_message_with_loops_conditionals_and_filters() -> None:
    template = (
        "{% for t in tickets %}{{ loop.index }}. {{ t.title|title }}"
        "{% if t.urgent %} (urgent){% endif %}\n{% endfor %}"
        "{{ note|default('no note') }} {{ meta|tojson }} {{ 'a' ~ 'b' }} {{ n * 2 }}"
        "{{ ' %.1f'|format(score) }} {{ range(3)|list }} {{ dict(k=1)|tojson }}"
    )
    variables = {
        "tickets": [{"title": "login fails", "urgent": True}, {"title": "typo", "urgent": False}],
        "meta": {"k": [1, 2]},
        "n": 21,
        "score": 0.25,
    }
    assert render(text(template), variables) == [
        {
            "role": "user",
            "content": '1. Login Fails (urgent)\n2. Typo\nno note {"k": [1, 2]} ab 42 0.2 '
            '[0, 1, 2] {"k": 1}',
        }
    ]


def test_variables_list_reports_missing_and_unknown_names() -> None:
    content = text("{{ a }} {{ b }}", variables=["a", "b"])
    with pytest.raises(RenderError, match=r"missing variable 'b' \(declared: a, b\)"):
        render(content, {"a": 1})
    with pytest.raises(RenderError, match=r"unknown variable 'c' \(declared: a, b\)"):
        render(content, {"a": 1, "b": 2, "c": 3})


def test_template_may_only_use_declared_variables() -> None:
    with pytest.raises(RenderError) as caught:
        validate(chat({"role": "user", "content": "{{ a }}{{ z }}"}, variables=["a"]))
    assert caught.value.message == "messages[0].content: uses undeclared variables: z (declared: a)"
    assert caught.value.status == 400


SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "n": {"type": "integer", "minimum": 1}},
    "required": ["text"],
    "additionalProperties": False,
}


def test_schema_variables_are_validated_with_the_failing_path() -> None:
    content = text("{{ text }}{% if n is defined %} x{{ n }}{% endif %}", variables=SCHEMA)
    assert render(content, {"text": "hi", "n": 2}) == [{"role": "user", "content": "hi x2"}]
    assert render(content, {"text": "hi"}) == [{"role": "user", "content": "hi"}]
    with pytest.raises(RenderError, match=r"schema at '/n': 0 is less than the minimum of 1"):
        render(content, {"text": "hi", "n": 0})
    with pytest.raises(RenderError, match=r"at '/': 'text' is a required property"):
        render(content, {})


def test_invalid_schema_and_undeclared_schema_variable_are_rejected() -> None:
    with pytest.raises(RenderError, match=r"variables: not a valid JSON schema: 5 is not valid"):
        validate(text("{{ a }}", variables={"type": 5}))
    with pytest.raises(RenderError, match=r"undeclared variables: other"):
        validate(text("{{ other }}", variables=SCHEMA))


def test_errors_name_the_place_and_line_without_a_stack() -> None:
    with pytest.raises(RenderError) as caught:
        validate(chat({"role": "user", "content": "ok"}, {"role": "user", "content": "\n{{ x }"}))
    assert caught.value.message == (
        "messages[1].content: line 2: template syntax error: unexpected '}'"
    )
    with pytest.raises(RenderError) as undefined:
        render(text("{{ missing }}"), {})
    assert undefined.value.message == "template: 'missing' is undefined"
    with pytest.raises(RenderError, match=r"template: line 1: No filter named .nope."):
        validate(text("{{ 1|nope }}"))


def test_content_must_match_its_kind() -> None:
    with pytest.raises(RenderError, match="a chat prompt has messages and no template"):
        validate(PromptContent(kind="chat", template="x"))
    with pytest.raises(RenderError, match="a text prompt has a template and no messages"):
        validate(PromptContent(kind="text", messages=({"role": "user", "content": "x"},)))
