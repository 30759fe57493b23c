"""One "replica" for the two-process budget race: waits for its peer on a Redis barrier, then
reserves `n` times concurrently and prints how many were admitted.

Usage: python -m tests.limits.reserve_worker URL PREFIX N LIMIT_USD AMOUNT_USD
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

from keel.limits import BudgetExceeded, BudgetLedger, BudgetSpec, RedisState

PEERS = 2


async def _barrier(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.incr(prefix + "barrier")
    await client.expire(prefix + "barrier", 60)
    deadline = time.monotonic() + 15
    while int(await client.get(prefix + "barrier") or 0) < PEERS:
        if time.monotonic() > deadline:
            raise SystemExit("peer never arrived")
        await asyncio.sleep(0.005)
    await client.aclose()


async def main(url: str, prefix: str, n: int, limit_usd: float, amount_usd: float) -> int:
    state = RedisState(url, prefix=prefix)
    ledger = BudgetLedger(state)
    spec = [BudgetSpec("customer", "acme", limit_usd, "month")]
    await state.ping()  # connect before the race, as a serving replica would be
    await _barrier(url, prefix)

    async def one() -> bool:
        try:
            await ledger.reserve(spec, amount_usd)
        except BudgetExceeded:
            return False
        return True

    admitted = sum(await asyncio.gather(*(one() for _ in range(n))))
    await state.close()
    return admitted


if __name__ == "__main__":
    url, prefix, n, limit, amount = sys.argv[1:6]
    print(asyncio.run(main(url, prefix, int(n), float(limit), float(amount))))
