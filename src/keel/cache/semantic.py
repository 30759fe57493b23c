"""The semantic cache: a near-identical question in the same conversation gets the cached answer.

The text compared is the last user message, embedded by a configured embedding model (the
gateway passes an async `embed(text)`). Vectors live in scopes, and a lookup compares only
against its own scope, which is the hash of:

- the tenant (the same as the exact cache's: a vector never matches across tenants);
- the provider model(s) of the plan;
- everything else in the request that shapes the answer: all earlier messages (so the system
  prompt, and the history a short reply like "yes" refers to), tools, response format, `n`,
  `max_tokens`, ... — every normalised field except the last user message and the sampling
  knobs in `_SAMPLING`.

A match is the stored vector of highest cosine similarity at or above the threshold; it points
at an exact-cache key, whose entry holds the answer (one copy of each answer, one TTL).

Similarity is computed in Python, with no numpy and no Redis modules: the memory index keeps
at most `max_per_scope` vectors in each of `max_scopes` scopes; the Redis index keeps the
`max_per_scope` most recent vectors of a scope in one list and a lookup fetches the whole list.
Cost is linear in the scope's size: 1,000 vectors of 1,536 floats is about 70 ms of CPU, the
default 256 about 18 ms. Keep `max_per_scope` small where embeddings are large; scopes are
narrow (one tenant, model and conversation context), so a small cap rarely loses useful entries.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import struct
import sys
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from keel.cache.keys import normalise, scope_key

__all__ = [
    "Embed",
    "MemorySemanticIndex",
    "RedisSemanticIndex",
    "SemanticIndex",
    "SemanticQuery",
    "cosine",
    "semantic_query",
    "unit",
]

logger = logging.getLogger("keel.cache")

Embed = Callable[[str], Awaitable[Sequence[float]]]

# Knobs that vary the wording, not the kind of answer: a semantic match may ignore them.
_SAMPLING = frozenset({"temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"})
_CANDIDATES = 3  # best matches returned, in case the best one's entry has expired
_INLINE_WORK = 200_000  # multiplications done on the event loop; more go to a thread


@dataclass(frozen=True, slots=True)
class SemanticQuery:
    """A request that can use the semantic cache: its scope and the text to embed."""

    scope: str
    text: str


def _text(content: Any) -> str | None:
    """A message's text, or None when it holds anything but text (an image, audio, a file)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                return None
            value = part.get("text")
            if not isinstance(value, str):
                return None
            parts.append(value)
        return "\n".join(parts)
    return None


def semantic_query(body: Mapping[str, Any], *, tenant: str, model_key: str) -> SemanticQuery | None:
    """The query for `body`, or None when the request is not a fit for semantic matching:
    the last message must be the user's, in text only (a tool result or an image is not)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    if not text or not text.strip():
        return None
    shape = {k: v for k, v in normalise(body).items() if k not in _SAMPLING}
    shape["messages"] = messages[:-1]
    shape["last_user_name"] = last.get("name")
    return SemanticQuery(scope_key(tenant, model_key, shape), text)


def unit(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to length 1, so a dot product is the cosine similarity."""
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("an embedding of length 0 or with non-finite values")
    return [v / norm for v in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product of two unit vectors (their cosine similarity)."""
    return float(sum(map(operator.mul, a, b)))


def _best(
    query: Sequence[float], items: Sequence[tuple[Sequence[float], str]], threshold: float
) -> list[tuple[float, str]]:
    scored = [
        (cosine(query, vec), key) for vec, key in items if len(vec) == len(query)
    ]  # a vector of another length came from another embedding model: not comparable
    scored = [s for s in scored if s[0] >= threshold]
    scored.sort(key=operator.itemgetter(0), reverse=True)
    return scored[:_CANDIDATES]


class SemanticIndex(Protocol):
    """Vectors by scope, each pointing at an exact-cache key. Methods may raise."""

    async def search(
        self, scope: str, vector: Sequence[float], *, threshold: float
    ) -> list[tuple[float, str]]:
        """Up to three (similarity, key) at or above `threshold`, best first. `vector` is unit."""
        ...

    async def add(self, scope: str, vector: Sequence[float], key: str, *, ttl_s: int) -> None: ...

    async def close(self) -> None: ...


class MemorySemanticIndex:
    """Per scope a bounded deque of recent vectors; scopes themselves bounded, least recently
    used dropped first. For one process, tests, and small caps (see the module docstring)."""

    def __init__(
        self, max_per_scope: int, max_scopes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_per_scope = max_per_scope
        self.max_scopes = max_scopes
        self._clock = clock
        self._scopes: OrderedDict[str, deque[tuple[tuple[float, ...], str, float]]] = OrderedDict()

    async def search(
        self, scope: str, vector: Sequence[float], *, threshold: float
    ) -> list[tuple[float, str]]:
        items = self._scopes.get(scope)
        if not items:
            return []
        self._scopes.move_to_end(scope)
        now = self._clock()
        live = [(vec, key) for vec, key, until in items if until > now]
        return _best(vector, live, threshold)

    async def add(self, scope: str, vector: Sequence[float], key: str, *, ttl_s: int) -> None:
        items = self._scopes.get(scope)
        if items is None:
            items = self._scopes[scope] = deque(maxlen=self.max_per_scope)
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
        self._scopes.move_to_end(scope)
        items.append((tuple(vector), key, self._clock() + ttl_s))

    async def close(self) -> None:
        self._scopes.clear()


_HEAD = struct.Struct("<dH")  # expires_at, key length; then the key, then float32s


def _pack(vector: Sequence[float], key: str, expires_at: float) -> bytes:
    floats = array("f", vector)
    if sys.byteorder == "big":  # stored little-endian whatever the replica's CPU
        floats.byteswap()
    raw_key = key.encode()
    return _HEAD.pack(expires_at, len(raw_key)) + raw_key + floats.tobytes()


def _unpack(raw: bytes) -> tuple[array[float], str, float]:
    expires_at, size = _HEAD.unpack_from(raw)
    start = _HEAD.size + size
    floats = array("f")
    floats.frombytes(raw[start:])
    if sys.byteorder == "big":
        floats.byteswap()
    return floats, raw[_HEAD.size : start].decode(), expires_at


class RedisSemanticIndex:
    """A scope is the Redis list `<prefix>s:<scope>`, newest first, trimmed to `max_per_scope`
    and expiring `ttl_s` after its latest write. Items are packed float32 vectors (6 KB for
    1,536 dimensions), each with its exact key and its own expiry time."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "keel:cache:",
        max_per_scope: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis  # shared with RedisCache, which closes it
        self._prefix = prefix + "s:"
        self.max_per_scope = max_per_scope
        self._clock = clock

    async def search(
        self, scope: str, vector: Sequence[float], *, threshold: float
    ) -> list[tuple[float, str]]:
        raw_items = await self.redis.lrange(self._prefix + scope, 0, self.max_per_scope - 1)
        now = self._clock()
        live = []
        for raw in raw_items:
            if not isinstance(raw, bytes):  # only a client made with decode_responses=True
                raise TypeError("the cache's Redis client must return bytes")
            vec, key, until = _unpack(raw)
            if until > now:
                live.append((vec, key))
        if len(live) * len(vector) < _INLINE_WORK:
            return _best(vector, live, threshold)
        # Tens of milliseconds of arithmetic: in a thread, the event loop keeps getting the GIL
        # at switch intervals and other requests keep moving.
        return await asyncio.to_thread(_best, vector, live, threshold)

    async def add(self, scope: str, vector: Sequence[float], key: str, *, ttl_s: int) -> None:
        name = self._prefix + scope
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(name, _pack(vector, key, self._clock() + ttl_s))
        pipe.ltrim(name, 0, self.max_per_scope - 1)
        pipe.expire(name, ttl_s)
        await pipe.execute()

    async def close(self) -> None:
        return None
