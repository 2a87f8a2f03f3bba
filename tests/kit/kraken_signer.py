"""One signing process for the nonce test: `python -m tests.kit.kraken_signer URL SECRETS_DIR ACCOUNT REDIS_URL N`.

Makes its own `KrakenVenue` (own HTTP and Redis connections), asks the account's balances N times concurrently and
prints how many answers it got and the error types it met, as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path

from redis.asyncio import Redis

from shared.domain.types import AccountId
from shared.venues.kraken.adapter import KrakenVenue
from shared.venues.kraken.credentials import StoredCredentials
from shared.venues.kraken.rate_limit import CounterLimit


async def main(url: str, secrets_dir: str, account: str, redis_url: str, calls: int) -> None:
    """Sign and send `calls` BalanceEx requests at once; print {"answers", "errors"}."""
    redis = Redis.from_url(redis_url)
    venue = KrakenVenue(
        StoredCredentials(None, None, Path(secrets_dir)),
        redis,
        base_url=url,
        rest_limit=CounterLimit(Decimal(10_000), Decimal(100)),
        timeout_s=10.0,
    )
    try:
        results = await asyncio.gather(
            *(venue.balances(AccountId(account)) for _ in range(calls)), return_exceptions=True
        )
    finally:
        await venue.close()
        await redis.aclose()
    errors = [type(r).__name__ + ": " + str(r) for r in results if isinstance(r, BaseException)]
    print(json.dumps({"answers": len(results) - len(errors), "errors": errors}))  # noqa: T201


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
