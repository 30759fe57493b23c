"""The prompt registry as the faces and the gateway use it: `PromptService`.

It owns the rules (names, labels, protection, validation before anything is saved) and the
in-memory cache behind `resolve`, which the gateway calls on every request that names a prompt.
Versions are immutable, so they are cached until evicted; a label's target is cached for a second,
and this process forgets it at once when it moves the label itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from keel.prompts import diff as diffing
from keel.prompts import labels, render, store
from keel.prompts.model import (
    LabelMove,
    PromptContent,
    PromptSummary,
    PromptVersion,
    check_label,
    check_name,
)
from keel.storage.database import Database

__all__ = ["DEFAULT_LABEL", "PromptService"]

DEFAULT_LABEL = "production"
_VERSION_CACHE_SIZE = 1000
_LABEL_CACHE_SIZE = 4096
_LABEL_TTL = 1.0  # seconds another process's label move may take to reach this one


class PromptService:
    """Prompts, versions, labels and events on one database. Errors are PromptError."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        label_ttl: float = _LABEL_TTL,
    ) -> None:
        self.db = db
        self._clock = clock
        self._label_ttl = label_ttl
        self._versions: OrderedDict[tuple[str, int], PromptVersion] = OrderedDict()
        self._labels: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    async def push(
        self, name: str, content: PromptContent, *, message: str | None, author: str
    ) -> tuple[PromptVersion, bool]:
        """Save `content` as the next version of `name` (created if new); (version, created).

        Content identical to an existing version (same content hash) returns that version and
        writes nothing. Templates are validated first, so nothing unsafe is ever stored.
        """
        check_name(name)
        render.validate(content)
        return await store.push(
            self.db, name, content, message=message, author=author, now=self._clock()
        )

    async def list_prompts(self) -> list[PromptSummary]:
        return await store.list_summaries(self.db)

    async def get_prompt(self, name: str) -> tuple[PromptSummary, list[PromptVersion]]:
        """The prompt's summary and its versions, newest first (404 if unknown)."""
        return await store.get_prompt(self.db, name)

    async def get_version(self, name: str, version: int) -> PromptVersion:
        """One version with the labels pointing at it now (404 if unknown)."""
        return await store.get_version(self.db, name, version)

    async def resolve(
        self, name: str, *, label: str | None = None, version: int | None = None
    ) -> PromptVersion:
        """The version to serve: `version` if given, else the one `label` (production) names.

        Served from memory when possible (the gateway's hot path). `labels` on the result holds
        only the label it was resolved through, if any.
        """
        if version is not None:
            return await self._version(name, version)
        label = check_label(label if label is not None else DEFAULT_LABEL)
        number = await self._label_target(name, label)
        return dataclasses.replace(await self._version(name, number), labels=(label,))

    async def _version(self, name: str, version: int) -> PromptVersion:
        key = (name, version)
        found = self._versions.get(key)
        if found is not None:
            self._versions.move_to_end(key)
            return found
        found = dataclasses.replace(await store.get_version(self.db, name, version), labels=())
        self._versions[key] = found
        if len(self._versions) > _VERSION_CACHE_SIZE:
            self._versions.popitem(last=False)
        return found

    async def _label_target(self, name: str, label: str) -> int:
        key = (name, label)
        now = time.monotonic()
        cached = self._labels.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        number = await labels.label_target(self.db, name, label)
        self._labels[key] = (number, now + self._label_ttl)
        self._labels.move_to_end(key)
        if len(self._labels) > _LABEL_CACHE_SIZE:
            self._labels.popitem(last=False)
        return number

    async def move_label(
        self,
        name: str,
        label: str,
        version: int,
        *,
        actor: str,
        is_admin: bool,
        protect: bool | None = None,
    ) -> LabelMove:
        """Point `label` at `version` ("promote"); a protected label needs the admin key (403).

        Setting `protect` needs the admin key too. Moving a label to the version it already
        points at records nothing and returns a move with from_version == to_version.
        """
        check_label(label)
        try:
            return await labels.move_label(
                self.db,
                name,
                label,
                version,
                actor=actor,
                is_admin=is_admin,
                protect=protect,
                now=self._clock(),
            )
        finally:
            self._labels.pop((name, label), None)

    async def rollback(self, name: str, label: str, *, actor: str, is_admin: bool) -> LabelMove:
        """Move `label` back to where it pointed before its latest move (409 if nowhere).

        A second rollback undoes the first: the latest move is then the rollback itself.
        """
        check_label(label)
        try:
            return await labels.move_label(
                self.db,
                name,
                label,
                None,
                actor=actor,
                is_admin=is_admin,
                protect=None,
                now=self._clock(),
            )
        finally:
            self._labels.pop((name, label), None)

    async def history(self, name: str, label: str | None = None) -> list[LabelMove]:
        """Label moves of `name` (of one label if given), newest first."""
        return await labels.history(self.db, name, label)

    async def diff(self, name: str, a: int, b: int) -> dict[str, Any]:
        """Template, configuration and variables changes from version `a` to version `b`."""
        older = await self._version(name, a)
        newer = await self._version(name, b)
        return diffing.diff_versions(name, older, newer)

    async def events(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Events newest first and the cursor of the next page (None on the last page)."""
        return await store.list_events(self.db, limit=limit, cursor=cursor)
