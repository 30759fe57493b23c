"""Routes for the prompt registry, mounted under `/api/v1`: versions, labels, diff, render, events.

Any authenticated caller may use them (admin, virtual key, open mode); protected labels and the
event log are for the admin. The routes decode, call `app.state.prompts` (a PromptService) and
encode; rendering goes through `keel.prompts.render` only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.api.auth import ApiError, require_admin, require_principal
from keel.keys.auth import Principal
from keel.prompts import files, render
from keel.prompts.model import (
    LabelMove,
    PromptContent,
    PromptError,
    PromptSummary,
    PromptVersion,
)
from keel.prompts.service import PromptService

__all__ = ["MoveOut", "PromptOut", "SummaryOut", "VersionOut", "router"]

router = APIRouter(tags=["prompts"])

Variables = list[str] | dict[str, Any]
Caller = Annotated[Principal, Depends(require_principal)]


class ContentFields(BaseModel):
    """A prompt's content as in a prompt file: `messages` (chat) or `template` (text)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["chat", "text"] | None = Field(None, description="Implied by messages/template.")
    description: str | None = None
    messages: list[dict[str, Any]] | None = Field(None, description="Chat messages (templates).")
    template: str | None = Field(None, description="A text template.")
    variables: Variables | None = Field(
        None, description="Declared variables: a list of names or a JSON schema object."
    )
    config: dict[str, Any] | None = Field(
        None, description="Model configuration: model, temperature, max_tokens, tools, ..."
    )

    def content(self) -> PromptContent:
        return files.content_from_json(self.model_dump(exclude_none=True))


class PushRequest(ContentFields):
    """A version to push; identical content to an existing version creates nothing."""

    name: str = Field(min_length=1, max_length=200)
    message: str | None = Field(None, max_length=2000, description="What changed, like a commit.")

    def content(self) -> PromptContent:
        fields = self.model_dump(exclude_none=True, exclude={"name", "message"})
        return files.content_from_json(fields)


class MoveLabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    protected: bool | None = Field(
        None, description="Protect (true) or unprotect (false) the label; admin key only."
    )


class RenderRequest(BaseModel):
    """A stored prompt (`name` with `label` or `version`) or inline `content`, and the values."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    label: str | None = None
    version: int | None = Field(None, ge=1)
    content: ContentFields | None = Field(None, description="Inline content instead of `name`.")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values to render with.")

    @model_validator(mode="after")
    def _one_source(self) -> RenderRequest:
        if (self.name is None) == (self.content is None):
            raise ValueError("give `name` (with `label` or `version`) or `content`")
        if self.label is not None and self.version is not None:
            raise ValueError("give `label` or `version`, not both")
        return self


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class VersionOut(BaseModel):
    """An immutable version; `messages` is set for chat prompts, `template` for text ones."""

    prompt: str
    version: int
    content_hash: str = Field(description="sha256 of what renders and configures.")
    kind: Literal["chat", "text"]
    messages: list[dict[str, Any]] | None
    template: str | None
    variables: Variables | None
    config: dict[str, Any]
    description: str | None
    message: str | None
    author: str = Field(description='"admin", "open" or the id of the key that pushed it.')
    created_at: str
    labels: list[str] = Field(description="Labels pointing at this version when it was read.")

    @classmethod
    def of(cls, v: PromptVersion) -> VersionOut:
        c = v.content
        return cls(
            prompt=v.prompt,
            version=v.version,
            content_hash=v.content_hash,
            kind=c.kind,
            messages=list(c.messages) if c.messages is not None else None,
            template=c.template,
            variables=c.variables,
            config=c.config,
            description=c.description,
            message=v.message,
            author=v.author,
            created_at=_iso(v.created_at),
            labels=list(v.labels),
        )


class MoveOut(BaseModel):
    """One move of a label."""

    prompt: str
    label: str
    from_version: int | None
    to_version: int
    actor: str
    at: str
    action: Literal["promote", "rollback"]

    @classmethod
    def of(cls, m: LabelMove) -> MoveOut:
        return cls(
            prompt=m.prompt,
            label=m.label,
            from_version=m.from_version,
            to_version=m.to_version,
            actor=m.actor,
            at=_iso(m.at),
            action=m.action,
        )


class SummaryOut(BaseModel):
    name: str
    description: str | None
    latest_version: int
    labels: dict[str, int] = Field(description="label -> version")
    protected_labels: list[str]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, s: PromptSummary) -> SummaryOut:
        return cls(
            name=s.name,
            description=s.description,
            latest_version=s.latest_version,
            labels=dict(s.labels),
            protected_labels=list(s.protected_labels),
            created_at=_iso(s.created_at),
            updated_at=_iso(s.updated_at),
        )


class PromptOut(SummaryOut):
    versions: list[VersionOut] = Field(description="Newest first.")


class PromptList(BaseModel):
    data: list[SummaryOut]


class PushOut(BaseModel):
    version: VersionOut
    created: bool = Field(description="False when identical content already was a version.")


class MoveList(BaseModel):
    data: list[MoveOut]


class ConfigChange(BaseModel):
    key: str
    from_: Any = Field(alias="from")
    to: Any


class DiffOut(BaseModel):
    prompt: str
    from_: int = Field(alias="from")
    to: int
    template: str = Field(description="A unified diff of the template or messages.")
    config: list[ConfigChange]
    variables: dict[str, Any] | None = Field(description="Declared variables, when they changed.")


class RenderOut(BaseModel):
    prompt: str | None
    version: int | None
    messages: list[dict[str, Any]]
    config: dict[str, Any] = Field(description="The version's model configuration.")


class EventList(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None


def _service(request: Request) -> PromptService:
    service: PromptService = request.app.state.prompts
    return service


def _actor(principal: Principal) -> tuple[str, bool]:
    """Who is acting, as recorded ("admin", "open" or the key id), and whether as the admin."""
    if principal.kind == "key":
        return principal.key_id or "key", False
    return principal.kind, True


def _fail(exc: PromptError) -> ApiError:
    return ApiError(exc.status, exc.message)


@router.get("/prompts", dependencies=[Depends(require_principal)])
async def list_prompts(request: Request) -> PromptList:
    """Every prompt with its latest version and labels, by name."""
    summaries = await _service(request).list_prompts()
    return PromptList(data=[SummaryOut.of(s) for s in summaries])


@router.post("/prompts", status_code=201)
async def push_prompt(
    body: PushRequest,
    request: Request,
    response: Response,
    principal: Caller,
) -> PushOut:
    """Push a version (201); content identical to an existing version answers 200, unchanged."""
    author, _ = _actor(principal)
    try:
        version, created = await _service(request).push(
            body.name, body.content(), message=body.message, author=author
        )
    except PromptError as exc:
        raise _fail(exc) from None
    if not created:
        response.status_code = 200
    return PushOut(version=VersionOut.of(version), created=created)


@router.post("/prompts/render", dependencies=[Depends(require_principal)])
async def render_prompt(body: RenderRequest, request: Request) -> RenderOut:
    """Render a stored or inline prompt to messages (a preview: nothing is called or saved)."""
    name: str | None = None
    number: int | None = None
    try:
        if body.content is not None:
            content = body.content.content()
            render.validate(content)
        else:
            assert body.name is not None
            found = await _service(request).resolve(
                body.name, label=body.label, version=body.version
            )
            name, number, content = found.prompt, found.version, found.content
        messages = render.render(content, body.variables)
    except PromptError as exc:
        raise _fail(exc) from None
    return RenderOut(prompt=name, version=number, messages=messages, config=content.config)


@router.get("/prompts/{name}", dependencies=[Depends(require_principal)])
async def get_prompt(name: str, request: Request) -> PromptOut:
    """A prompt: its summary, labels and every version, newest first."""
    try:
        summary, versions = await _service(request).get_prompt(name)
    except PromptError as exc:
        raise _fail(exc) from None
    head = SummaryOut.of(summary).model_dump()
    return PromptOut(**head, versions=[VersionOut.of(v) for v in versions])


@router.get("/prompts/{name}/versions/{version}", dependencies=[Depends(require_principal)])
async def get_version(name: str, version: int, request: Request) -> VersionOut:
    """One version."""
    try:
        return VersionOut.of(await _service(request).get_version(name, version))
    except PromptError as exc:
        raise _fail(exc) from None


@router.get("/prompts/{name}/resolve", dependencies=[Depends(require_principal)])
async def resolve_prompt(
    name: str,
    request: Request,
    label: str | None = Query(None, description="Default `production`."),
    version: int | None = Query(None, ge=1),
) -> VersionOut:
    """The version a label points at (default `production`), or a version by number."""
    if label is not None and version is not None:
        raise ApiError(400, "give `label` or `version`, not both")
    try:
        return VersionOut.of(await _service(request).resolve(name, label=label, version=version))
    except PromptError as exc:
        raise _fail(exc) from None


@router.get("/prompts/{name}/diff", dependencies=[Depends(require_principal)])
async def diff_versions(
    name: str,
    request: Request,
    from_: int = Query(alias="from", ge=1),
    to: int = Query(ge=1),
) -> DiffOut:
    """Template (unified diff), configuration and variables changes between two versions."""
    try:
        return DiffOut.model_validate(await _service(request).diff(name, from_, to))
    except PromptError as exc:
        raise _fail(exc) from None


@router.put("/prompts/{name}/labels/{label}")
async def move_label(
    name: str,
    label: str,
    body: MoveLabelRequest,
    request: Request,
    principal: Caller,
) -> MoveOut:
    """Point a label at a version (recorded in its history); protect it with `protected`."""
    actor, is_admin = _actor(principal)
    try:
        move = await _service(request).move_label(
            name, label, body.version, actor=actor, is_admin=is_admin, protect=body.protected
        )
    except PromptError as exc:
        raise _fail(exc) from None
    return MoveOut.of(move)


@router.post("/prompts/{name}/labels/{label}/rollback")
async def rollback_label(name: str, label: str, request: Request, principal: Caller) -> MoveOut:
    """Move a label back to the version it pointed at before its last move."""
    actor, is_admin = _actor(principal)
    try:
        move = await _service(request).rollback(name, label, actor=actor, is_admin=is_admin)
    except PromptError as exc:
        raise _fail(exc) from None
    return MoveOut.of(move)


@router.get("/prompts/{name}/history", dependencies=[Depends(require_principal)])
async def label_history(name: str, request: Request, label: str | None = None) -> MoveList:
    """Every label move of a prompt (or of one label), newest first."""
    try:
        moves = await _service(request).history(name, label)
    except PromptError as exc:
        raise _fail(exc) from None
    return MoveList(data=[MoveOut.of(m) for m in moves])


@router.get("/events", dependencies=[Depends(require_admin)], tags=["events"])
async def list_events(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> EventList:
    """The append-only event log (version creations and label moves)."""
    try:
        events, next_cursor = await _service(request).events(limit=limit, cursor=cursor)
    except PromptError as exc:
        raise _fail(exc) from None
    return EventList(data=events, next_cursor=next_cursor)
