"""One signing key for every test, and the one way to mint a token with it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from pydantic import SecretStr

from services.accounts.service_identities import WORKER_IDENTITIES
from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem
from shared.auth.roles import Role, default_scopes
from shared.auth.tokens import TokenIssuer, TokenVerifier
from shared.clock import utc_now
from shared.events.envelope import HEADER_AUTHORIZATION

KEY = generate_private_key()
PRIVATE_PEM = private_key_pem(KEY)
PUBLIC_PEM = public_key_pem(KEY.public_key()).decode()
ISSUER = TokenIssuer(PRIVATE_PEM, "aether", "aether-platform")
# Tests mint tokens at import time (module constants): they must outlive a whole suite run on a slow machine.
SUITE_TOKEN_TTL_S = 4 * 3600
# The settings fields that make a service trust (and, for accounts, sign with) the test key.
JWT_FIELDS = frozenset({"jwt_public_key", "jwt_private_key"})


def jwt_settings(*, private: bool = False) -> dict[str, SecretStr]:
    """`jwt_public_key` (and `jwt_private_key` when `private`) for a service's settings."""
    fields = {"jwt_public_key": SecretStr(PUBLIC_PEM)}
    if private:
        fields["jwt_private_key"] = SecretStr(PRIVATE_PEM.decode())
    return fields


def bearer(
    *roles: Role,
    subject: str = "alice",
    accounts: Iterable[str] = ("*",),
    otp: bool = False,
    scopes: Iterable[str] | None = None,
) -> str:
    """A signed access token with the roles' default scopes (what a login gives) unless `scopes` is given; every
    role is granted `accounts`; `otp` adds a TOTP proof made just now (what fresh-OTP routes demand)."""
    granted = default_scopes(roles) if scopes is None else scopes
    if not otp:
        return ISSUER.issue(subject, list(roles), scopes=granted, accounts=list(accounts), ttl_s=SUITE_TOKEN_TTL_S)
    now = utc_now()  # a TOTP proof is fresh only for minutes: mint these where they are used
    return ISSUER.issue(
        subject, list(roles), scopes=granted, accounts=list(accounts), amr=["pwd", "otp"], auth_time=now, now=now
    )


def token(
    *roles: Role,
    subject: str = "alice",
    accounts: Iterable[str] = ("*",),
    otp: bool = False,
    scopes: Iterable[str] | None = None,
) -> dict[str, str]:
    """Request headers carrying `bearer(...)`."""
    return {"Authorization": f"Bearer {bearer(*roles, subject=subject, accounts=accounts, otp=otp, scopes=scopes)}"}


@dataclass
class TotpClock:
    """The accounts service's TOTP clock in tests: real time plus whole 30-second steps, so that each code a
    test asks for lies in a step newer than the last accepted one (a code is accepted once) without waiting."""

    steps_ahead: int = 0

    def __call__(self) -> datetime:
        return utc_now() + timedelta(seconds=30 * self.steps_ahead)

    def current(self, totp: pyotp.TOTP) -> str:
        """The code of the current (test) step: what a replay would send again."""
        return str(totp.at(self()))

    def next_code(self, totp: pyotp.TOTP) -> str:
        """Move one step on and return that step's code."""
        self.steps_ahead += 1
        return self.current(totp)


VERIFIER = TokenVerifier(PUBLIC_PEM, "aether", "aether-platform")


def worker_bearer(service: str, *, scopes: Iterable[str] | None = None, accounts: Iterable[str] | None = None) -> str:
    """The token the accounts service gives the worker identity of `service` (hedge, risk), minted with the suite key
    (`scopes` / `accounts` replace the identity's, to test a narrower or wrong one)."""
    identity = WORKER_IDENTITIES[service]
    return ISSUER.issue(
        f"svc_{identity.name}",
        [Role.SERVICE],
        scopes=identity.scopes if scopes is None else scopes,
        accounts=identity.accounts if accounts is None else accounts,
        ttl_s=SUITE_TOKEN_TTL_S,
    )


def worker_authorization(service: str) -> tuple[str, bytes]:
    """The Kafka header a worker's outbox relay adds to its commands."""
    return HEADER_AUTHORIZATION, f"Bearer {worker_bearer(service)}".encode()
