"""Revocations (and key limit changes) told to every replica at once, through Redis.

Each replica caches its active keys (`keys.auth`), so a key revoked on one replica would keep
working on the others until their next refresh (LiteLLM #2149). With `redis_url` set, a
revocation is, after the database commit:

- added to the sorted set `keel:revoked` (member: the key id, score: the key's expiry, or
  +inf for a key that never expires), which late joiners and reconnecting replicas read;
- published on the channel `keel:revocations`, to which every replica subscribes.

A replica that receives it calls `Authenticator.revoked`: the key leaves the cache and joins a
local set of revoked ids that is checked on every request (a set lookup, no I/O). On subscribe
and on every reconnect the replica reads the whole sorted set, so a message sent while it was
disconnected is not lost; one whose publish failed is covered by the periodic refresh from the
database, which stays the source of truth.

The request path never waits on Redis. While Redis is unreachable, cached keys keep working,
keys not cached are read from the database (and fail closed with 503 when it is down, as
without Redis), `publish` logs and returns False (the revocation holds in this process at once
and on the others at their next refresh), and the subscriber retries with backoff.

A change of a key's limits is published too (`publish_change`): the replicas read that key
again, so new limits apply everywhere at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from keel.keys import tokens
from keel.keys.auth import Authenticator

__all__ = ["RevocationFeed"]

log = logging.getLogger("keel.keys")

_ERRORS = (RedisError, OSError, TimeoutError)


class RevocationFeed:
    """Publishes this replica's revocations and applies the others'. One per process.

    `prefix` names the channel (`<prefix>revocations`) and the set (`<prefix>revoked`).
    `timeout` bounds connects and commands; `retry_s` is the first wait before resubscribing
    after a lost connection (doubling up to `max_retry_s`).
    """

    def __init__(
        self,
        redis_url: str,
        authenticator: Authenticator,
        *,
        prefix: str = "keel:",
        timeout: float = 0.5,
        retry_s: float = 0.5,
        max_retry_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channel = f"{prefix}revocations"
        self.revoked_set = f"{prefix}revoked"
        self._url = redis_url
        self._auth = authenticator
        self._timeout = timeout
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._clock = clock
        self._redis: Redis = Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._task: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self.failed_publishes = 0  # revocations other replicas will only see on refresh
        self.received = 0

    @property
    def subscribed(self) -> bool:
        """True while this replica listens (revocations elsewhere reach it at once)."""
        return self._subscribed.is_set()

    async def start(self, wait_s: float | None = None) -> bool:
        """Subscribe in the background; wait up to `wait_s` (default 4 timeouts) for the
        subscription and the first read of the revoked set. False if Redis did not answer in
        time: Keel starts anyway and the subscriber keeps trying."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="keel-revocation-feed")
        wait = self._timeout * 4 if wait_s is None else wait_s
        try:
            await asyncio.wait_for(self._subscribed.wait(), wait)
        except TimeoutError:
            log.warning("revocation feed: Redis not reachable yet; retrying in the background")
            return False
        return True

    async def stop(self) -> None:
        """Unsubscribe and close the connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for reload in list(self._reloads):
            reload.cancel()
        await asyncio.gather(*self._reloads, return_exceptions=True)
        await self._redis.aclose()

    async def publish(self, key_id: str, expires_at: float | None = None) -> bool:
        """Tell every replica that `key_id` is revoked (call after the database commit).

        Applies it in this process first. Never raises: False when Redis could not be told
        (logged; the other replicas then see it at their next refresh)."""
        self._auth.revoked(key_id, expires_at)
        score = math.inf if expires_at is None else expires_at
        message = f"revoke:{key_id}:{'' if expires_at is None else repr(expires_at)}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.revoked_set, {key_id: score})
                # ids of keys that expired since are of no use to anyone any more
                pipe.zremrangebyscore(self.revoked_set, "-inf", f"({self._clock()!r}")
                pipe.publish(self.channel, message)
                await pipe.execute()
        except _ERRORS as exc:
            self.failed_publishes += 1
            log.warning(
                "revocation of key %s not published (%s): other replicas see it at their "
                "next refresh",
                key_id,
                type(exc).__name__,
            )
            return False
        return True

    async def publish_change(self, key_id: str) -> bool:
        """Tell every replica to read `key_id` again (its limits changed). Never raises."""
        try:
            await self._redis.publish(self.channel, f"change:{key_id}")
        except _ERRORS as exc:
            log.warning("change of key %s not published (%s)", key_id, type(exc).__name__)
            return False
        return True

    async def _run(self) -> None:
        delay = self._retry_s
        while True:
            client: Redis = Redis.from_url(
                self._url,
                decode_responses=True,
                socket_connect_timeout=self._timeout,
                client_name="keel-revocations",  # tells operators what the connection is
                health_check_interval=15,  # a ping on a quiet connection finds it dead
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._sync(client)  # after subscribing: nothing falls in between
                self._subscribed.set()
                delay = self._retry_s
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message.get("data"))
            except _ERRORS as exc:
                if self._subscribed.is_set():
                    log.warning(
                        "revocation feed lost Redis (%s); resubscribing", type(exc).__name__
                    )
                self._subscribed.clear()
            except Exception:  # a bug must not end revocations for the life of the process
                log.exception("revocation feed failed; resubscribing")
                self._subscribed.clear()
            finally:
                await _close(pubsub, client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_s)

    async def _sync(self, client: Redis) -> None:
        """Apply every revocation in the set whose key has not expired."""
        now = self._clock()
        entries = await client.zrangebyscore(self.revoked_set, f"({now!r}", "+inf", withscores=True)
        pairs = cast(list[tuple[str, float]], entries)
        for key_id, score in pairs:
            if tokens.is_key_id(key_id):
                self._auth.revoked(key_id, None if math.isinf(score) else float(score))

    def _handle(self, data: Any) -> None:
        if not isinstance(data, str):
            return
        kind, _, rest = data.partition(":")
        key_id, _, expiry = rest.partition(":")
        if not tokens.is_key_id(key_id):
            return
        self.received += 1
        if kind == "revoke":
            try:
                expires_at = float(expiry) if expiry else None
            except ValueError:
                expires_at = None
            self._auth.revoked(key_id, expires_at)
        elif kind == "change" and not self._auth.is_revoked(key_id):
            task = asyncio.create_task(self._auth.reload(key_id))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)


async def _close(pubsub: Any, client: Redis) -> None:
    for close in (pubsub.aclose, client.aclose):
        with contextlib.suppress(*_ERRORS):
            await close()
