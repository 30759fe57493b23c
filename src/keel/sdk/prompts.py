"""Fetch prompts from Keel in an application: cached, resilient to Keel being down, rendered here.

`PromptClient.get(name, label="production")` asks `GET /api/v1/prompts/{name}/resolve` at most
once per `ttl` seconds per (name, label). When Keel cannot be reached or answers 5xx, the last
version it served keeps being used (one warning is logged per outage) and Keel is asked again
after another `ttl`; only a prompt never fetched raises `PromptUnavailable`. A version asked for
by number never changes, so it is cached for the client's lifetime.

Imports only httpx, the standard library and keel.prompts.render/model: nothing of the server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from keel.prompts import render as _render
from keel.prompts.model import PromptContent

__all__ = [
    "AsyncPromptClient",
    "KeelError",
    "Prompt",
    "PromptClient",
    "PromptNotFound",
    "PromptUnavailable",
]

log = logging.getLogger("keel.sdk")

DEFAULT_URL = "http://127.0.0.1:4000"


class KeelError(Exception):
    """Keel refused the request (bad key, bad arguments); `status` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PromptNotFound(KeelError, LookupError):
    """No such prompt, version, or label on that prompt (HTTP 404)."""


class PromptUnavailable(KeelError):
    """Keel could not be reached (or failed) and no earlier version of the prompt is known."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One version of a prompt, ready to render. `label` is the label it was asked by, if any."""

    name: str
    version: int
    label: str | None
    content: PromptContent = field(repr=False)
    config: dict[str, Any]

    def render(self, **variables: Any) -> list[dict[str, Any]]:
        """The chat messages, rendered in Keel's sandbox (RenderError for bad variables)."""
        return _render.render(self.content, variables)

    def openai_kwargs(self, **variables: Any) -> dict[str, Any]:
        """`{"messages": [...], **config}` for `client.chat.completions.create(**...)`."""
        return {"messages": self.render(**variables), **self.config}


def prompt_from_json(data: dict[str, Any], label: str | None) -> Prompt:
    """A Prompt from a version as the API shows it."""
    messages = data.get("messages")
    content = PromptContent(
        kind=data["kind"],
        messages=tuple(messages) if messages is not None else None,
        template=data.get("template"),
        variables=data.get("variables"),
        config=dict(data.get("config") or {}),
        description=data.get("description"),
    )
    return Prompt(data["prompt"], int(data["version"]), label, content, content.config)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"Keel answered HTTP {response.status_code}"


@dataclass
class _Entry:
    prompt: Prompt
    expires: float
    warned: bool = False


class _Cache:
    """What both clients share: the request to make, the cache, and what to do with an answer."""

    def __init__(
        self, url: str | None, api_key: str | None, ttl: float, clock: Callable[[], float]
    ) -> None:
        self.base = (url or os.environ.get("KEEL_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("KEEL_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.ttl = ttl
        self.clock = clock
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(name: str, label: str, version: int | None) -> tuple[str, str]:
        return (name, f"version:{version}" if version is not None else f"label:{label}")

    def fresh(self, key: tuple[str, str]) -> Prompt | None:
        with self.lock:
            entry = self.entries.get(key)
        if entry is not None and entry.expires > self.clock():
            return entry.prompt
        return None

    def request(self, name: str, label: str, version: int | None) -> tuple[str, dict[str, str]]:
        params = {"version": str(version)} if version is not None else {"label": label}
        return f"{self.base}/api/v1/prompts/{quote(name, safe='')}/resolve", params

    def answer(self, key: tuple[str, str], response: httpx.Response, label: str | None) -> Prompt:
        """The prompt in an answer; raise for a 4xx; the last known one for a 5xx or garbage."""
        if response.status_code == 404:
            raise PromptNotFound(_error_message(response), 404)
        if response.is_error and response.status_code < 500:
            raise KeelError(_error_message(response), response.status_code)
        try:
            prompt = prompt_from_json(response.json(), label) if response.is_success else None
        except (ValueError, KeyError, TypeError):
            prompt = None
        if prompt is None:
            return self.stale(key, f"HTTP {response.status_code}")
        # a version never changes: keep it for good
        expires = float("inf") if key[1].startswith("version:") else self.clock() + self.ttl
        with self.lock:
            self.entries[key] = _Entry(prompt, expires)
        return prompt

    def stale(self, key: tuple[str, str], why: str) -> Prompt:
        """The last known version while Keel is down; asked again after another ttl."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                raise PromptUnavailable(f"cannot fetch prompt {key[0]!r} from {self.base}: {why}")
            entry.expires = self.clock() + self.ttl
            warn, entry.warned = not entry.warned, True
        if warn:
            log.warning(
                "cannot fetch prompt %r from %s (%s); serving its last known version %d",
                key[0],
                self.base,
                why,
                entry.prompt.version,
            )
        return entry.prompt


class PromptClient:
    """Fetches prompts from Keel (`url`, `api_key` default to KEEL_URL, KEEL_API_KEY)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        ttl: float = 60.0,
        timeout: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = _Cache(url, api_key, ttl, clock)
        self._http = httpx.Client(timeout=timeout, headers=self._cache.headers)

    def get(self, name: str, *, label: str = "production", version: int | None = None) -> Prompt:
        """The version `label` points at, or version `version`; from the cache within ttl."""
        key = self._cache.key(name, label, version)
        cached = self._cache.fresh(key)
        if cached is not None:
            return cached
        url, params = self._cache.request(name, label, version)
        try:
            response = self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            return self._cache.stale(key, type(exc).__name__)
        return self._cache.answer(key, response, None if version is not None else label)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PromptClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPromptClient:
    """`PromptClient` for asyncio code: the same cache and fallback, `await client.get(...)`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        ttl: float = 60.0,
        timeout: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = _Cache(url, api_key, ttl, clock)
        self._http = httpx.AsyncClient(timeout=timeout, headers=self._cache.headers)

    async def get(
        self, name: str, *, label: str = "production", version: int | None = None
    ) -> Prompt:
        """The version `label` points at, or version `version`; from the cache within ttl."""
        key = self._cache.key(name, label, version)
        cached = self._cache.fresh(key)
        if cached is not None:
            return cached
        url, params = self._cache.request(name, label, version)
        try:
            response = await self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            return self._cache.stale(key, type(exc).__name__)
        return self._cache.answer(key, response, None if version is not None else label)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPromptClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
