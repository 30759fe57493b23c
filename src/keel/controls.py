"""The cost and access controls of one process: the shared state (Redis, or in-process memory),
rate limits, budgets, limit policies, revocations across replicas, and the response cache.

With `redis_url` set, every replica sees the same counters, budgets, revocations and cache;
without it, one process keeps them in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson

from keel.cache import Cache
from keel.cache.semantic import Embed
from keel.config import Settings
from keel.costs.pricing import Pricer
from keel.gateway.limiting import LimitStep
from keel.gateway.models import ModelRouter
from keel.keys.auth import Authenticator
from keel.keys.revocation import RevocationFeed
from keel.limits import BudgetLedger, LimitPolicies, MemoryState, RateLimiter, RedisState
from keel.limits.state import SharedState
from keel.limits.store import load_policies
from keel.providers.base import CallContext
from keel.providers.client import Timeouts, UpstreamClient
from keel.storage.database import Database

__all__ = ["Controls"]

log = logging.getLogger(__name__)


class Controls:
    def __init__(self, settings: Settings, pricer: Pricer) -> None:
        s = self.settings = settings
        self.state: SharedState = (
            RedisState(s.redis_url, timeout=s.limits_redis_timeout_s)
            if s.redis_url
            else MemoryState()
        )
        self.rates = RateLimiter(self.state, fail_open=s.limits_fail_open)
        self.budgets = BudgetLedger(
            self.state, fail_open=s.limits_fail_open, reservation_ttl=s.limits_reservation_ttl_s
        )
        self.policies = LimitPolicies(s.limits)
        self.limit_step = LimitStep(
            self.policies, self.rates, self.budgets, pricer, s.limits_default_max_tokens
        )
        self.revocations: RevocationFeed | None = None
        self.cache: Cache | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(
        self,
        db: Database,
        authenticator: Authenticator,
        router: ModelRouter,
        client: UpstreamClient,
        timeouts: Timeouts,
    ) -> None:
        s = self.settings
        self.policies.replace_api(await load_policies(db.engine))
        self._refresher = asyncio.create_task(self._refresh_policies(db))
        if s.redis_url:
            self.revocations = RevocationFeed(
                s.redis_url, authenticator, timeout=s.limits_redis_timeout_s
            )
            if not await self.revocations.start():
                log.warning("Redis did not answer at start; revocations sync once it does")
        self.cache = Cache.from_config(
            s.cache, redis_url=s.redis_url, embed=self._embedder(router, client, timeouts)
        )

    def _embedder(
        self, router: ModelRouter, client: UpstreamClient, timeouts: Timeouts
    ) -> Embed | None:
        """The semantic cache's embedding call: the configured model, through its provider."""
        model = self.settings.cache.semantic.embedding_model
        if model is None:
            return None

        async def embed(text: str) -> list[float]:
            target = router.resolve(model)[0]
            ctx = CallContext(session=client, timeout=timeouts, request_id="cache-embedding")
            body = {"model": target.model, "input": text, "encoding_format": "float"}
            result = await target.provider.embeddings(body, ctx)
            vector: list[float] = orjson.loads(result.body)["data"][0]["embedding"]
            return vector

        return embed

    def counters(self) -> list[tuple[str, str, tuple[str, ...], float]]:
        """The cache's and the limits' counters, for /metrics."""
        out: list[tuple[str, str, tuple[str, ...], float]] = [
            (
                "keel_limits_failed_open",
                "Requests admitted unchecked: shared state unreachable.",
                (),
                float(self.rates.failed_open + self.budgets.failed_open),
            ),
            (
                "keel_limits_lost_updates",
                "Token counts or budget charges that were not recorded.",
                (),
                float(self.rates.lost_updates + self.budgets.lost_settles),
            ),
        ]
        if self.cache is not None:
            st = self.cache.stats
            for status, value in (
                ("hit", st.hits),
                ("semantic-hit", st.semantic_hits),
                ("miss", st.misses),
                ("bypass", st.bypasses),
                ("refresh", st.refreshes),
            ):
                out.append(
                    ("keel_cache_requests", "Cache lookups by outcome.", (status,), float(value))
                )
            out += [
                ("keel_cache_stores", "Answers stored in the cache.", (), float(st.stores)),
                ("keel_cache_too_large", "Answers too large to cache.", (), float(st.too_large)),
                (
                    "keel_cache_errors",
                    "Cache backend or embedding failures (served as misses).",
                    (),
                    float(st.errors),
                ),
                (
                    "keel_cache_cost_saved_usd",
                    "What cache hits saved, in USD.",
                    (),
                    st.cost_saved_usd,
                ),
            ]
        return out

    async def _refresh_policies(self, db: Database) -> None:
        # Policies set through another replica's API apply here within this interval.
        while True:
            await asyncio.sleep(self.settings.limits_refresh_s)
            try:
                self.policies.replace_api(await load_policies(db.engine))
            except Exception as exc:  # the database may be down: keep the policies we have
                log.warning("could not refresh limit policies: %s", type(exc).__name__)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.revocations is not None:
            await self.revocations.stop()
        if self.cache is not None:
            await self.cache.close()
        await self.state.close()
