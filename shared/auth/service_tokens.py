"""A worker's own identity: short-lived `service` tokens from the accounts service (client credentials).

The hedge and risk workers hold no signing key (shared.auth.signing). They hold a service identity's client id
and secret (`AETHER_SERVICE_CLIENT_ID` / `AETHER_SERVICE_CLIENT_SECRET`, provisioned by `aether up` or an
operator) and exchange them at `POST <accounts_url>/auth/service-token` for a token carrying only their
identity's scopes, fetched again before it expires. Their commands to the OMS carry it (the outbox relay adds
it at publish time); the OMS verifies it like any bearer token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

import httpx
from pydantic import BaseModel, Field, SecretStr

from shared.app_factory import ServiceRuntime
from shared.observability.logging import get_logger
from shared.readiness import DependencyCheck

log = get_logger(__name__)

# Fetch a new token once this fraction of the old one's lifetime has passed: well before it expires.
REFRESH_AT_FRACTION = 0.5
TOKEN_REQUEST_TIMEOUT_S = 5.0


class ServiceIdentitySettings(BaseModel):
    """Mixed into the settings of a worker that authenticates as a service identity."""

    accounts_url: str = Field(default="http://127.0.0.1:8004", description="base URL of the accounts service")
    service_client_id: str | None = Field(default=None, min_length=1, max_length=100)
    service_client_secret: SecretStr | None = None


class ServiceTokenUnavailable(Exception):
    """No token: the accounts service refused the credentials or could not be reached."""


class ServiceTokenSource:
    """The current token of one service identity; `token()` fetches a fresh one before the last one expires."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        client_id: str,
        client_secret: SecretStr,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceIdentitySettings) -> ServiceTokenSource | None:
        """The source of the configured identity; None when the worker has none (its commands are then refused)."""
        if settings.service_client_id is None or settings.service_client_secret is None:
            return None
        client = httpx.AsyncClient(base_url=settings.accounts_url, timeout=TOKEN_REQUEST_TIMEOUT_S)
        return cls(client, settings.service_client_id, settings.service_client_secret)

    async def token(self) -> str:
        """A token valid for at least half its lifetime; ServiceTokenUnavailable when none can be had."""
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, lifetime_s = await self._fetch()
                self._refresh_at = self._clock() + lifetime_s * REFRESH_AT_FRACTION
            return self._token

    async def ready(self) -> None:
        """Readiness probe: a token can be had."""
        await self.token()

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def _fetch(self) -> tuple[str, float]:
        body = {"client_id": self.client_id, "client_secret": self._secret.get_secret_value()}
        try:
            answer = await self.client.post("/auth/service-token", json=body)
        except httpx.HTTPError as exc:
            raise ServiceTokenUnavailable(f"accounts service unreachable: {type(exc).__name__}") from None
        if answer.status_code != httpx.codes.OK:
            raise ServiceTokenUnavailable(f"service token refused for {self.client_id}: {answer.status_code}")
        issued = answer.json()
        return str(issued["access_token"]), float(issued["expires_in"])


def authenticate_commands(runtime: ServiceRuntime, settings: ServiceIdentitySettings, topics: Collection[str]) -> None:
    """Publish the worker's messages on `topics` with its identity's token; readiness waits for a token. Without
    an identity they go out unauthenticated, and the OMS refuses them (logged here once)."""
    source = ServiceTokenSource.from_settings(settings)
    if source is None:
        # Info, not a warning: tests and tools run workers without one; the OMS's refusals are warned and audited.
        log.info("service_identity_missing", service=runtime.name, topics=sorted(topics), effect="commands refused")
        return
    runtime.relay.authenticate(topics, source.token)
    runtime.checks.append(DependencyCheck("service_token", source.ready))
    runtime.closers.append(source.close)
