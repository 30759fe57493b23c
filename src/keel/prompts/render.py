"""Prompt rendering: the one place a prompt's templates are checked and turned into messages.

Saving a version, the playground and the gateway all call `validate` and `render` here, so a
sandbox-escape payload is refused on every path. The sandbox itself is `keel.prompts.sandbox`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
from jinja2 import TemplateError, TemplateSyntaxError, meta
from jsonschema.exceptions import best_match

from keel.prompts import sandbox
from keel.prompts.model import PromptContent, RenderError, content_hash

__all__ = ["declared_variables", "render", "validate"]

_VALIDATED_MAX = 4096
_validated: OrderedDict[str, None] = OrderedDict()  # content hashes that passed `validate`


def validate(content: PromptContent) -> None:
    """Raise RenderError when `content` may not be saved or rendered (see the module docs)."""
    key = content_hash(content)
    if key in _validated:
        _validated.move_to_end(key)
        return
    declared = declared_variables(content)
    for where, source in _sources(content):
        _, used = _compile(where, source)
        if declared is not None and not used <= declared:
            unknown = ", ".join(sorted(used - declared))
            raise RenderError(
                f"{where}: uses undeclared variables: {unknown} (declared: {_names(declared)})"
            )
    _validated[key] = None
    if len(_validated) > _VALIDATED_MAX:
        _validated.popitem(last=False)


def declared_variables(content: PromptContent) -> frozenset[str] | None:
    """The variable names `content` declares, or None when it does not restrict them."""
    variables = content.variables
    if variables is None:
        return None
    if isinstance(variables, list):
        if not all(isinstance(v, str) for v in variables):
            raise RenderError("variables: a list of variables must hold only names")
        return frozenset(variables)
    try:
        jsonschema.Draft202012Validator.check_schema(variables)
    except jsonschema.SchemaError as exc:
        raise RenderError(f"variables: not a valid JSON schema: {exc.message}") from None
    properties = variables.get("properties")
    return frozenset(properties) if isinstance(properties, dict) else None


def render(content: PromptContent, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages of `content` with `variables` filled in (a text prompt: one user message)."""
    validate(content)
    _check_variables(content, variables)
    values = dict(variables)
    budget = [sandbox.MAX_OUTPUT]  # what is left of the output cap, shared by all messages
    if content.kind == "text":
        assert content.template is not None  # validate checked it
        return [{"role": "user", "content": _run("template", content.template, values, budget)}]
    assert content.messages is not None
    return [_render_message(i, m, values, budget) for i, m in enumerate(content.messages)]


def _render_message(
    index: int, message: dict[str, Any], values: dict[str, Any], budget: list[int]
) -> dict[str, Any]:
    out = dict(message)
    body = message.get("content")
    where = f"messages[{index}].content"
    if isinstance(body, str):
        out["content"] = _run(where, body, values, budget)
    elif isinstance(body, list):
        out["content"] = [
            {**part, "text": _run(f"{where}[{j}].text", part["text"], values, budget)}
            if _is_text_part(part)
            else part
            for j, part in enumerate(body)
        ]
    return out


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _sources(content: PromptContent) -> Iterator[tuple[str, str]]:
    if content.kind == "text":
        if content.template is None or content.messages is not None:
            raise RenderError("a text prompt has a template and no messages")
        yield "template", content.template
        return
    if content.messages is None or content.template is not None:
        raise RenderError("a chat prompt has messages and no template")
    for i, message in enumerate(content.messages):
        body = message.get("content")
        if isinstance(body, str):
            yield f"messages[{i}].content", body
        elif isinstance(body, list):
            for j, part in enumerate(body):
                if _is_text_part(part):
                    yield f"messages[{i}].content[{j}].text", part["text"]


@functools.lru_cache(maxsize=2048)
def _compile(where: str, source: str) -> tuple[Any, frozenset[str]]:
    # Cached by source: the gateway renders the same few templates over and over.
    try:
        tree = sandbox.environment.parse(source)
    except TemplateSyntaxError as exc:
        raise RenderError(
            f"{where}: line {exc.lineno}: template syntax error: {exc.message}"
        ) from None
    try:
        sandbox.check(tree)
    except RenderError as exc:
        raise RenderError(f"{where}: {exc.message}") from None
    try:
        used = frozenset(meta.find_undeclared_variables(tree)) - set(sandbox.environment.globals)
        return sandbox.compile_checked(tree), used
    except TemplateError as exc:  # an unknown filter or test, for instance
        lineno = getattr(exc, "lineno", None)
        line = f"line {lineno}: " if lineno else ""
        raise RenderError(f"{where}: {line}{exc.message or type(exc).__name__}") from None


def _run(where: str, source: str, values: dict[str, Any], budget: list[int]) -> str:
    template, _ = _compile(where, source)
    chunks: list[str] = []
    try:
        with sandbox.Budget():
            for chunk in template.generate(values):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    limit = sandbox.MAX_OUTPUT
                    raise RenderError(f"{where}: the rendered prompt is over {limit} characters")
                chunks.append(chunk)
    except RenderError:
        raise
    except TemplateError as exc:  # SecurityError and UndefinedError are TemplateErrors
        raise RenderError(f"{where}: {exc.message or type(exc).__name__}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def _check_variables(content: PromptContent, variables: Mapping[str, Any]) -> None:
    declared = content.variables
    if isinstance(declared, list):
        missing = [name for name in declared if name not in variables]
        if missing:
            raise RenderError(f"missing variable {missing[0]!r} (declared: {_names(declared)})")
        unknown = sorted(set(variables) - set(declared))
        if unknown:
            raise RenderError(f"unknown variable {unknown[0]!r} (declared: {_names(declared)})")
    elif isinstance(declared, dict):
        validator = _validator(content_hash(content), declared)
        error = best_match(validator.iter_errors(dict(variables)))
        if error is not None:
            path = "/" + "/".join(str(p) for p in error.absolute_path)
            raise RenderError(f"variables do not match the schema at {path!r}: {error.message}")


_validators: OrderedDict[str, jsonschema.Draft202012Validator] = OrderedDict()


def _validator(key: str, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    found = _validators.get(key)
    if found is None:
        found = _validators[key] = jsonschema.Draft202012Validator(schema)
        if len(_validators) > _VALIDATED_MAX:
            _validators.popitem(last=False)
    return found


def _names(names: Any) -> str:
    return ", ".join(sorted(names)) or "none"
