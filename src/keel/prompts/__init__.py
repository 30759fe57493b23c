"""Prompt management: versioned prompts with labels, diff, rollback and sandboxed rendering.

`model` is the vocabulary, `render` the one place templates are checked and rendered (in the
sandbox of `sandbox`), `service.PromptService` the registry (over `store`), `diff` the version
comparison and `files` the prompts-as-code file shape.
"""

from __future__ import annotations

from keel.prompts.model import (
    LabelMove,
    PromptContent,
    PromptError,
    PromptSummary,
    PromptVersion,
    RenderError,
    content_hash,
)

__all__ = [
    "LabelMove",
    "PromptContent",
    "PromptError",
    "PromptSummary",
    "PromptVersion",
    "RenderError",
    "content_hash",
]
