"""The difference between two versions of a prompt: template text, configuration, variables.

Pure functions: the service, the CLI and the UI all show the same record.
"""

from __future__ import annotations

import difflib
from typing import Any

from keel.prompts.model import PromptContent, PromptVersion

__all__ = ["config_changes", "diff_versions", "source_text"]

_MISSING = object()


def diff_versions(name: str, older: PromptVersion, newer: PromptVersion) -> dict[str, Any]:
    """{"prompt", "from", "to", "template", "config", "variables"} from `older` to `newer`.

    `template` is a unified diff of `source_text` ("" when equal); `config` lists changed keys
    (dotted for nested ones) with their old and new values (None when absent); `variables` is
    {"from", "to"} when the declared variables changed, else None.
    """
    before, after = older.content, newer.content
    lines = difflib.unified_diff(
        source_text(before).splitlines(),
        source_text(after).splitlines(),
        fromfile=f"{name} v{older.version}",
        tofile=f"{name} v{newer.version}",
        lineterm="",
    )
    variables = None
    if before.variables != after.variables:
        variables = {"from": before.variables, "to": after.variables}
    return {
        "prompt": name,
        "from": older.version,
        "to": newer.version,
        "template": "\n".join(lines),
        "config": config_changes(before.config, after.config),
        "variables": variables,
    }


def source_text(content: PromptContent) -> str:
    """The text a person reads: the template, or each message as a "role: content" block."""
    if content.messages is None:
        return content.template or ""
    return "\n".join(f"{m.get('role', '?')}: {_message_text(m)}" for m in content.messages)


def _message_text(message: dict[str, Any]) -> str:
    body = message.get("content")
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        parts = [
            p["text"] if isinstance(p, dict) and p.get("type") == "text" else f"[{_kind(p)}]"
            for p in body
        ]
        return "\n".join(str(p) for p in parts)
    return "" if body is None else str(body)


def _kind(part: Any) -> str:
    return str(part.get("type", "part")) if isinstance(part, dict) else "part"


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"key", "from", "to"}] for each changed leaf, by key; nested dicts give dotted keys."""
    flat_before, flat_after = _flatten(before), _flatten(after)
    changes = []
    for key in sorted(flat_before.keys() | flat_after.keys()):
        old, new = flat_before.get(key, _MISSING), flat_after.get(key, _MISSING)
        if old != new:
            changes.append(
                {
                    "key": key,
                    "from": None if old is _MISSING else old,
                    "to": None if new is _MISSING else new,
                }
            )
    return changes


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out.update(_flatten(item, f"{path}."))
        else:
            out[path] = item
    return out
