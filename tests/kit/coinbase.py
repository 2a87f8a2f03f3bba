"""The Coinbase adapter against its protocol fake, for tests: ES256 keys mounted as files per account."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.domain.types import AccountId
from shared.venues.coinbase.adapter import CoinbaseVenue, check_credentials
from shared.venues.coinbase.auth import new_ec_secret
from shared.venues.kraken.credentials import StoredCredentials
from shared.venues.paper import PaperVenue
from tests.fakes.coinbase import CoinbaseFake


@dataclass
class CoinbaseKit:
    """The served fake, the mounted secrets folder and the adapters made over them (the last is `adapter`)."""

    fake: CoinbaseFake
    secrets_dir: Path
    adapter_options: dict[str, Any] = field(default_factory=dict)
    adapters: list[CoinbaseVenue] = field(default_factory=list)

    @property
    def adapter(self) -> CoinbaseVenue:
        return self.adapters[-1]

    def ensure_account(self, account_id: AccountId, secret: str | None = None) -> None:
        """Give the account an API key at the fake and mount it as AETHER_ACCOUNT_SECRETS_DIR/<account>/..."""
        folder = self.secrets_dir / account_id
        if folder.exists():
            return
        secret = secret or new_ec_secret()
        name = self.fake.register(account_id, secret)
        folder.mkdir()
        (folder / "api_key").write_text(name)
        (folder / "api_secret").write_text(secret)

    async def new_adapter(self, **options: Any) -> CoinbaseVenue:
        """A started adapter with its own HTTP connections (a process of its own)."""
        merged = {"timeout_s": 5.0, **self.adapter_options, **options}
        credentials = StoredCredentials(None, None, self.secrets_dir, check=check_credentials)
        adapter = CoinbaseVenue(credentials, base_url=self.fake.url, **merged)
        await adapter.start()
        self.adapters.append(adapter)
        return adapter


@contextlib.asynccontextmanager
async def coinbase_kit(venue: PaperVenue, **fake_options: Any) -> AsyncIterator[CoinbaseKit]:
    """Serve a Coinbase fake over `venue` and make one adapter for it."""
    fake = CoinbaseFake(venue, **fake_options)
    with tempfile.TemporaryDirectory(prefix="coinbase-secrets-") as folder:
        async with fake.serve():
            kit = CoinbaseKit(fake, Path(folder))
            try:
                await kit.new_adapter()
                yield kit
            finally:
                for adapter in kit.adapters:
                    await adapter.close()
