"""The prompt registry's vocabulary: content, versions, labels and their moves, errors."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "LabelMove",
    "PromptContent",
    "PromptError",
    "PromptSummary",
    "PromptVersion",
    "RenderError",
    "check_label",
    "check_name",
    "content_hash",
]

Kind = Literal["chat", "text"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class PromptError(ValueError):
    """A request about prompts that cannot be done; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RenderError(PromptError):
    """A template that may not be saved or rendered, or variables that do not fit it (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass(frozen=True, slots=True)
class PromptContent:
    """What a version holds. Exactly one of `messages` (chat) and `template` (text) is set.

    `variables` is either a list of names or a JSON schema object (type object, properties...).
    `config` is model configuration passed to the gateway: model, temperature, max_tokens,
    tools, response_format and any other field.
    """

    kind: Kind
    messages: tuple[dict[str, Any], ...] | None = None
    template: str | None = None
    variables: list[str] | dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.messages is not None:
            out["messages"] = list(self.messages)
        if self.template is not None:
            out["template"] = self.template
        out["variables"] = self.variables
        out["config"] = self.config
        out["description"] = self.description
        return out


def check_name(name: str) -> str:
    """`name` when it is a valid prompt name, else PromptError 400."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PromptError(
            400,
            f"invalid prompt name {name!r}: 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return name


def check_label(label: str) -> str:
    """`label` when it is a valid label name, else PromptError 400."""
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise PromptError(
            400,
            f"invalid label {label!r}: 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return label


def content_hash(content: PromptContent) -> str:
    """sha256 of the canonical JSON of what renders and configures (not the description)."""
    canonical = {
        "kind": content.kind,
        "messages": list(content.messages) if content.messages is not None else None,
        "template": content.template,
        "variables": content.variables,
        "config": content.config,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class PromptVersion:
    prompt: str
    version: int
    content_hash: str
    content: PromptContent
    message: str | None
    author: str  # "admin", "open" or the id of the virtual key that pushed it
    created_at: float
    labels: tuple[str, ...] = ()  # the labels pointing at this version when it was read


@dataclass(frozen=True, slots=True)
class LabelMove:
    prompt: str
    label: str
    from_version: int | None
    to_version: int
    actor: str
    at: float
    action: Literal["promote", "rollback"]


@dataclass(frozen=True, slots=True)
class PromptSummary:
    name: str
    description: str | None
    latest_version: int
    labels: dict[str, int]  # label -> version
    protected_labels: tuple[str, ...]
    created_at: float
    updated_at: float
