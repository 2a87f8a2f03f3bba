"""The Kraken adapter against its protocol fake, for tests: keys mounted as files, Redis for nonces and counters."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from shared.config import AetherSettings
from shared.domain.types import AccountId
from shared.venues.kraken.adapter import KrakenVenue
from shared.venues.kraken.credentials import StoredCredentials
from shared.venues.kraken.rate_limit import Tier
from shared.venues.paper import PaperVenue
from tests.fakes.kraken_rest import KrakenRestFake


@dataclass
class KrakenKit:
    """The served fake, the mounted secrets folder and the adapters made over them (the last is `adapter`)."""

    fake: KrakenRestFake
    secrets_dir: Path
    redis_url: str
    adapter_options: dict[str, Any] = field(default_factory=dict)
    adapters: list[KrakenVenue] = field(default_factory=list)
    redis_clients: list[Redis] = field(default_factory=list)

    @property
    def adapter(self) -> KrakenVenue:
        return self.adapters[-1]

    def ensure_account(self, account_id: AccountId) -> None:
        """Give the account an API key at the fake and mount it as AETHER_ACCOUNT_SECRETS_DIR/<account>/..."""
        folder = self.secrets_dir / account_id
        if folder.exists():
            return
        api_key, secret = self.fake.register(account_id)
        folder.mkdir()
        (folder / "api_key").write_text(api_key)
        (folder / "api_secret").write_text(secret)

    async def new_adapter(self, **options: Any) -> KrakenVenue:
        """A started adapter with its own HTTP connections and Redis connection (a process of its own)."""
        redis = Redis.from_url(self.redis_url)
        self.redis_clients.append(redis)
        merged = {"tier": Tier.PRO, "timeout_s": 5.0, **self.adapter_options, **options}
        adapter = KrakenVenue(StoredCredentials(None, None, self.secrets_dir), redis, base_url=self.fake.url, **merged)
        await adapter.start()
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def kraken_kit(venue: PaperVenue, settings: AetherSettings, **fake_options: Any) -> AsyncIterator[KrakenKit]:
    """Serve a Kraken fake over `venue` and make one adapter for it."""
    fake = KrakenRestFake(venue, **fake_options)
    with tempfile.TemporaryDirectory(prefix="kraken-secrets-") as folder:
        async with fake.serve():
            kit = KrakenKit(fake, Path(folder), settings.redis_url.get_secret_value())
            try:
                await kit.new_adapter()
                yield kit
            finally:
                for adapter in kit.adapters:
                    await adapter.close()
                for redis in kit.redis_clients:
                    await redis.aclose()
