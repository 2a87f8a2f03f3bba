"""The Binance adapter against its protocol fake, for tests: keys mounted as files (HMAC or Ed25519)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import AetherSettings
from shared.domain.types import AccountId
from shared.venues.binance.adapter import BinanceVenue
from shared.venues.binance.credentials import check_credentials
from shared.venues.kraken.credentials import StoredCredentials
from shared.venues.paper import PaperVenue
from tests.fakes.binance import BinanceFake


@dataclass
class BinanceKit:
    """The served fake, the mounted secrets folder and the adapters made over them (the last is `adapter`)."""

    fake: BinanceFake
    secrets_dir: Path
    adapter_options: dict[str, Any] = field(default_factory=dict)
    adapters: list[BinanceVenue] = field(default_factory=list)

    @property
    def adapter(self) -> BinanceVenue:
        return self.adapters[-1]

    def ensure_account(self, account_id: AccountId, *, ed25519: bool = False) -> None:
        """Give the account an API key at the fake and mount it as AETHER_ACCOUNT_SECRETS_DIR/<account>/..."""
        folder = self.secrets_dir / account_id
        if folder.exists():
            return
        api_key, secret = self.fake.register(account_id, ed25519=ed25519)
        folder.mkdir()
        (folder / "api_key").write_text(api_key)
        (folder / "api_secret").write_text(secret)

    async def new_adapter(self, **options: Any) -> BinanceVenue:
        """A started adapter with its own HTTP connections (a process of its own)."""
        merged = {"timeout_s": 5.0, **self.adapter_options, **options}
        credentials = StoredCredentials(None, None, self.secrets_dir, check=check_credentials)
        adapter = BinanceVenue(credentials, base_url=self.fake.url, **merged)
        await adapter.start()
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def binance_kit(venue: PaperVenue, settings: AetherSettings, **fake_options: Any) -> AsyncIterator[BinanceKit]:
    """Serve a Binance fake over `venue` and make one adapter for it."""
    fake = BinanceFake(venue, **fake_options)
    with tempfile.TemporaryDirectory(prefix="binance-secrets-") as folder:
        async with fake.serve():
            kit = BinanceKit(fake, Path(folder))
            try:
                await kit.new_adapter()
                yield kit
            finally:
                for adapter in kit.adapters:
                    await adapter.close()
