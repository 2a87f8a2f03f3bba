"""The inbox's calls to the accounts service on a director's behalf, naming the director's own address.

Without it every director would log in from the hitl process's address and share one set of failure counters.
With a service identity configured (`AETHER_ACCOUNTS_CLIENT_ID` / `_SECRET`, scope `auth:relay_client`), each
call carries the browser's address and a cached service token that proves the inbox may relay it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from services.hitl.config import HitlSettings
from shared.web import CLIENT_ADDRESS_HEADER, RELAY_TOKEN_HEADER

REFRESH_MARGIN_S = 60.0


class RelayUnavailable(Exception):
    """The inbox's own service token could not be obtained."""


@dataclass
class AccountsRelay:
    settings: HitlSettings
    _token: str | None = None
    _expires_at: float = 0.0

    async def headers(self, client: httpx.AsyncClient, address: str) -> dict[str, str]:
        """Relay headers for `address` (none when no service identity is configured)."""
        secret = self.settings.accounts_client_secret
        if self.settings.accounts_client_id is None or secret is None:
            return {}
        if self._token is None or time.monotonic() > self._expires_at - REFRESH_MARGIN_S:
            body = {"client_id": self.settings.accounts_client_id, "client_secret": secret.get_secret_value()}
            answer = await client.post("/auth/service-token", json=body)
            if answer.status_code != 200:
                raise RelayUnavailable(f"service token refused: {answer.status_code}")
            issued = answer.json()
            self._token = str(issued["access_token"])
            self._expires_at = time.monotonic() + float(issued.get("expires_in", 300))
        return {CLIENT_ADDRESS_HEADER: address, RELAY_TOKEN_HEADER: self._token}
