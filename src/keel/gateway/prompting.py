"""Gateway step: a chat request that references a registry prompt gets it rendered.

`"prompt": {"name": ..., "label": ... | "version": ..., "variables": {...}}` in the body (the
OpenAI SDK sends it with `extra_body`). The rendered messages come before any messages of the
request; the version's model configuration fills every field the request does not set.
Rendering goes through keel.prompts.render, the one place that renders.
"""

from __future__ import annotations

from typing import Any, Protocol

from keel.gateway.errors import GatewayError
from keel.prompts.model import PromptError, PromptVersion
from keel.prompts.render import render

__all__ = ["PromptResolver", "apply_prompt"]


class PromptResolver(Protocol):
    async def resolve(
        self, name: str, *, label: str | None = None, version: int | None = None
    ) -> PromptVersion: ...


def _reference(raw: Any) -> tuple[str, str | None, int | None, dict[str, Any]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise GatewayError(400, "`prompt` must be an object with a `name`", param="prompt")
    label, version, variables = raw.get("label"), raw.get("version"), raw.get("variables", {})
    if label is not None and not isinstance(label, str):
        raise GatewayError(400, "`prompt.label` must be a string", param="prompt.label")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise GatewayError(400, "`prompt.version` must be an integer", param="prompt.version")
    if not isinstance(variables, dict):
        raise GatewayError(400, "`prompt.variables` must be an object", param="prompt.variables")
    return raw["name"], label, version, variables


async def apply_prompt(resolver: PromptResolver, body: dict[str, Any]) -> PromptVersion | None:
    """Render the referenced prompt into `body` (in place); None when the body references none."""
    if "prompt" not in body:
        return None
    name, label, version, variables = _reference(body.pop("prompt"))  # Keel's field: not sent on
    try:
        found = await resolver.resolve(name, label=label, version=version)
        messages = render(found.content, variables)
    except PromptError as exc:
        status = exc.status if exc.status in (400, 403, 404) else 400
        code = "prompt_not_found" if status == 404 else "prompt_error"
        raise GatewayError(status, exc.message, code=code, param="prompt") from None
    extra = body.get("messages") or []
    if not isinstance(extra, list):
        raise GatewayError(400, "`messages` must be a list", param="messages")
    body["messages"] = messages + extra
    for key, value in found.content.config.items():
        body.setdefault(key, value)  # the request's own fields win
    return found
