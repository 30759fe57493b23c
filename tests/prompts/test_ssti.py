"""Every known sandbox-escape payload is refused on every render path, and nothing runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel.prompts import sandbox
from keel.prompts.model import PromptContent, RenderError
from keel.prompts.render import render, validate
from tests.prompts.ssti_payloads import RUNTIME, STATIC


class Sentinel:
    """A variable that records any use a template makes of it."""

    def __init__(self) -> None:
        object.__setattr__(self, "touched", [])

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        return self

    def __getitem__(self, key: Any) -> Any:
        self.touched.append(f"[{key!r}]")
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.touched.append("()")
        return self

    def __str__(self) -> str:
        self.touched.append("str")
        return "sentinel"


def _contents(template: str) -> list[PromptContent]:
    """The payload in each place a template can be: text, message content, a text part."""
    return [
        PromptContent(kind="text", template=template),
        PromptContent(kind="chat", messages=({"role": "user", "content": template},)),
        PromptContent(
            kind="chat",
            messages=({"role": "user", "content": [{"type": "text", "text": template}]},),
        ),
    ]


def test_the_corpus_is_big_enough() -> None:
    assert len(STATIC) >= 25


@pytest.mark.parametrize("payload", STATIC.values(), ids=STATIC.keys())
def test_payload_is_refused_by_validate_and_render(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    template = payload.replace("MARKER", str(marker))
    sentinel = Sentinel()
    for content in _contents(template):
        with pytest.raises(RenderError) as by_validate:
            validate(content)
        with pytest.raises(RenderError) as by_render:
            render(content, {"x": sentinel})
        assert by_render.value.message == by_validate.value.message
        assert by_render.value.status == 400
        assert "Traceback" not in by_render.value.message
    assert sentinel.touched == []
    assert not marker.exists()


@pytest.mark.parametrize("payload", STATIC.values(), ids=STATIC.keys())
def test_the_sandbox_alone_also_stops_the_payload(payload: str, tmp_path: Path) -> None:
    # Defence in depth: compiled without the static checks, the sandbox still runs nothing.
    marker = tmp_path / "ran"
    source = payload.replace("MARKER", str(marker))
    try:
        template = sandbox.compile_checked(sandbox.environment.parse(source))
        with sandbox.Budget():
            output = template.render(x=Sentinel(), s="abc")
    except Exception:  # refused: by the sandbox, a limit, or a missing name or loader
        output = None
    assert not marker.exists()
    assert output is None or ("class" not in output and "function" not in output)


@pytest.mark.parametrize("payload", RUNTIME.values(), ids=RUNTIME.keys())
def test_resource_payload_is_stopped_while_rendering(payload: str) -> None:
    content = PromptContent(kind="text", template=payload)
    validate(content)  # a valid template: only running it shows the problem
    with pytest.raises(RenderError) as caught:
        render(content, {"x": "a" * 1000})
    assert caught.value.message.startswith("template: ")
