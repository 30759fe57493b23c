"""The prompt pages: list, one prompt (versions, labels, history), side-by-side diff, playground.

Pages read through the PromptService (`runtime.prompts`); changes (push, promote, rollback) are
made by the pages' scripts through the `/api/v1/prompts` routes with the page's API token.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keel.prompts.diff import source_text
from keel.prompts.model import PromptContent, PromptError, PromptVersion
from keel.prompts.service import PromptService
from keel.runtime import Runtime
from keel.ui.diffview import side_by_side
from keel.ui.templating import render

__all__ = ["PromptPages"]

_DEFAULT_MESSAGES = ({"role": "system", "content": ""}, {"role": "user", "content": ""})
_ROLES = ("system", "user", "assistant")


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"status": status, "message": message}, status)


def _int_param(request: Request, name: str) -> int | None:
    """A positive integer query parameter; None when absent; PromptError(400) when malformed."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise PromptError(400, f"`{name}` must be a version number")
    return int(raw)


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def _variable_values(variables: list[str] | dict[str, Any] | None) -> str:
    """The playground's starting variables: each declared name with an empty value."""
    if isinstance(variables, dict):
        names = list((variables.get("properties") or {}).keys())
    else:
        names = list(variables or [])
    return json.dumps(dict.fromkeys(names, ""), indent=2, ensure_ascii=False)


class PromptPages:
    """The endpoints of the prompt pages, reading through the runtime's PromptService."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _service(self) -> PromptService:
        service = self.runtime.prompts
        if service is None:
            raise PromptError(503, "the prompt registry is not running")
        return service

    async def list(self, request: Request) -> Response:
        """`/prompts`: every prompt with its latest version and labels."""
        try:
            prompts = await self._service().list_prompts()
        except PromptError as exc:
            return _error(request, exc.status, exc.message)
        return render(request, "prompts/list.html", {"prompts": prompts})

    async def detail(self, request: Request) -> Response:
        """`/prompts/{name}`: versions, the selected version's content, labels and history."""
        name = request.path_params["name"]
        try:
            wanted = _int_param(request, "version")
            summary, versions = await self._service().get_prompt(name)
            history = await self._service().history(name)
        except PromptError as exc:
            return _error(request, exc.status, exc.message)
        versions = sorted(versions, key=lambda v: v.version, reverse=True)
        selected = versions[0] if wanted is None else _find(versions, wanted)
        if selected is None:
            return _error(request, 404, f"prompt {name!r} has no version {wanted}")
        context = {
            "summary": summary,
            "versions": versions,
            "selected": selected,
            "history": history,
            "pretty": _pretty,
        }
        return render(request, "prompts/detail.html", context)

    async def diff(self, request: Request) -> Response:
        """`/prompts/{name}/diff?from=A&to=B`: two columns, changed lines marked; config table."""
        name = request.path_params["name"]
        try:
            summary, versions = await self._service().get_prompt(name)
            latest = summary.latest_version
            a = _int_param(request, "from") or max(latest - 1, 1)
            b = _int_param(request, "to") or latest
            old, new = _find(versions, a), _find(versions, b)
            if old is None or new is None:
                raise PromptError(404, f"prompt {name!r} has no version {a if old is None else b}")
            changes = await self._service().diff(name, a, b)
        except PromptError as exc:
            return _error(request, exc.status, exc.message)
        context = {
            "summary": summary,
            "versions": sorted(versions, key=lambda v: v.version, reverse=True),
            "old": old,
            "new": new,
            "rows": side_by_side(source_text(old.content), source_text(new.content)),
            "config_changes": changes.get("config") or [],
            "variables_change": changes.get("variables"),
            "pretty": _pretty,
        }
        return render(request, "prompts/diff.html", context)

    async def playground(self, request: Request) -> Response:
        """`/playground` (a new prompt) or `/prompts/{name}/playground?version=N`."""
        name = request.path_params.get("name")
        version: PromptVersion | None = None
        if name is not None:
            try:
                wanted = _int_param(request, "version")
                _, versions = await self._service().get_prompt(name)
            except PromptError as exc:
                return _error(request, exc.status, exc.message)
            versions = sorted(versions, key=lambda v: v.version, reverse=True)
            version = versions[0] if wanted is None else _find(versions, wanted)
            if version is None:
                return _error(request, 404, f"prompt {name!r} has no version {wanted}")
        return render(request, "prompts/playground.html", _playground_context(name, version))


def _find(versions: list[PromptVersion], number: int) -> PromptVersion | None:
    return next((v for v in versions if v.version == number), None)


def _playground_context(name: str | None, version: PromptVersion | None) -> dict[str, Any]:
    content = version.content if version is not None else PromptContent(kind="chat")
    config = dict(content.config)
    messages = [
        {"role": str(m.get("role", "user")), "content": _pretty(m.get("content", ""))}
        for m in (content.messages if content.messages is not None else _DEFAULT_MESSAGES)
    ]
    return {
        "name": name,
        "version": version,
        "kind": content.kind,
        "description": content.description or "",
        "messages": messages,
        "template": content.template or "",
        "roles": _ROLES,
        "variables": _variable_values(content.variables),
        # a JSON schema of variables is kept as it is when saving; a list follows the values
        "schema": json.dumps(content.variables) if isinstance(content.variables, dict) else "",
        "model": str(config.pop("model", "mock/echo")),
        "temperature": config.pop("temperature", ""),
        "max_tokens": config.pop("max_tokens", ""),
        "extra_config": json.dumps(config, ensure_ascii=False) if config else "",
    }
