"""Prompts as code: the YAML prompt file (one prompt a file) and the API's JSON body.

The documented shape (docs/prompts.md):

    name: summarize
    description: Summaries for the support inbox
    messages:                       # or `template: "..."` for a text prompt
      - {role: system, content: "You write summaries for {{ audience }}."}
      - {role: user, content: "{{ text }}"}
    variables: [audience, text]     # or a JSON schema object
    config: {model: fast, temperature: 0.2, max_tokens: 300}

`content_from_json` checks the same fields (without `name`) for the HTTP API; errors name the
field, and for files the file too. Templates themselves are checked by `keel.prompts.render`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from keel.prompts.model import Kind, PromptContent, PromptError, check_name

__all__ = ["content_from_json", "dump", "load_dir", "load_file"]

_FIELDS = ("kind", "description", "messages", "template", "variables", "config")


def _bad(field: str, problem: str) -> PromptError:
    return PromptError(400, f"field {field!r}: {problem}")


def content_from_json(obj: Mapping[str, Any]) -> PromptContent:
    """The content in an API body or a parsed file (`name` excluded); PromptError 400 naming
    the field otherwise. `kind` is optional and, when given, must agree with the fields."""
    if not isinstance(obj, Mapping):
        raise PromptError(400, "a prompt must be an object")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        raise _bad(unknown[0], f"unknown field; the fields are {', '.join(_FIELDS)}")
    messages, template = obj.get("messages"), obj.get("template")
    if (messages is None) == (template is None):
        raise PromptError(400, "a prompt has exactly one of 'messages' and 'template'")
    kind: Kind = "chat" if messages is not None else "text"
    if obj.get("kind", kind) != kind:
        has = "messages" if kind == "chat" else "a template"
        raise _bad("kind", f"must be {kind!r} for a prompt with {has}")
    if template is not None and not isinstance(template, str):
        raise _bad("template", "must be a string")
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        raise _bad("description", "must be a string")
    config = obj.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise _bad("config", "must be an object with string keys")
    return PromptContent(
        kind=kind,
        messages=_messages(messages) if messages is not None else None,
        template=template,
        variables=_variables(obj.get("variables")),
        config=config,
        description=description,
    )


def _messages(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of messages")
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, "must be an object with 'role' and 'content'")
        if not isinstance(message.get("role"), str) or not message["role"]:
            raise _bad(f"{where}.role", "must be a non-empty string")
        body = message.get("content")
        if body is not None and not isinstance(body, str | list):
            raise _bad(f"{where}.content", "must be a string or a list of content parts")
        for j, part in enumerate(body if isinstance(body, list) else ()):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}.content[{j}]", "must be an object with a 'type'")
    return tuple(dict(m) for m in value)


def _variables(value: Any) -> list[str] | dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad("variables", "must be a list of names or a JSON schema object")
    if len(set(value)) != len(value):
        raise _bad("variables", "names a variable twice")
    return list(value)


def load_file(path: str | Path) -> tuple[str, PromptContent]:
    """(name, content) of one prompt file; PromptError 400 naming the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptError(400, f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PromptError(400, f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PromptError(400, f"{path}: a prompt file holds one mapping with 'name' and more")
    name = data.pop("name", None)
    try:
        if not isinstance(name, str):
            raise _bad("name", "is required and must be a string")
        return check_name(name), content_from_json(data)
    except PromptError as exc:
        raise PromptError(400, f"{path}: {exc.message}") from None


def load_dir(path: str | Path) -> list[tuple[str, PromptContent, Path]]:
    """Every *.yaml and *.yml file in the folder (not its subfolders), by file name."""
    folder = Path(path)
    if not folder.is_dir():
        raise PromptError(400, f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    seen: dict[str, Path] = {}
    out = []
    for file in files:
        name, content = load_file(file)
        if name in seen:
            raise PromptError(400, f"prompt {name!r} is defined in both {seen[name]} and {file}")
        seen[name] = file
        out.append((name, content, file))
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as block scalars, which read like the prompt they hold."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(name: str, content: PromptContent) -> str:
    """The prompt file for (name, content): `load_file` reads it back to equal content."""
    data: dict[str, Any] = {"name": name}
    if content.description is not None:
        data["description"] = content.description
    if content.messages is not None:
        data["messages"] = [_ordered(m) for m in content.messages]
    else:
        data["template"] = content.template
    if content.variables is not None:
        data["variables"] = content.variables
    if content.config:
        data["config"] = content.config
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096, indent=2
    )


def _ordered(message: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = {k: message[k] for k in ("role", "content") if k in message}
    return {**first, **{k: v for k, v in message.items() if k not in first}}
