"""Who may command the OMS over Kafka: a service identity's bearer token, carried in the record's `authorization`
header (added by the producer's outbox relay at publish time), with the `service` role, the `orders:write` scope
and the command's account among its accounts. Anything else is refused (CommandRejected `unauthenticated` or
`forbidden`, audited): a command is never trusted for the topic it arrived on or the producer it names.

The token is verified with the platform's public key like a REST bearer token, with a wider expiry leeway
(`AETHER_COMMAND_TOKEN_LEEWAY_S`): a command the OMS reads late (it was down, the topic lagged) was published
with a token that was valid then.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from services.oms.config import OmsSettings
from services.oms.errors import CommandForbidden, CommandUnauthenticated
from shared.auth.revocation import redis_revocation_check
from shared.auth.roles import Role, Scope
from shared.auth.tokens import InvalidToken, Principal, TokenVerifier
from shared.config import ConfigurationError, env_name

COMMAND_SCOPE = Scope.ORDERS_WRITE


@dataclass(frozen=True, slots=True)
class CommandCredentials:
    """The verifier of the OMS and the `authorization` header of the command being handled."""

    verifier: TokenVerifier
    authorization: str | None

    async def principal(self) -> Principal:
        """The verified service identity that may write orders; CommandUnauthenticated / CommandForbidden."""
        scheme, _, token = (self.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise CommandUnauthenticated("the command carries no bearer token of a service identity")
        try:
            principal = await self.verifier.verify(token)  # RevocationUnavailable: retried by the consumer
        except InvalidToken as exc:
            raise CommandUnauthenticated(f"the command's token is not valid: {exc.reason}") from None
        if Role.SERVICE not in principal.roles or not principal.has_scopes(COMMAND_SCOPE):
            raise CommandForbidden(f"{principal.subject} is not a service identity with {COMMAND_SCOPE}")
        return principal


def authorize_account(principal: Principal, account_id: str) -> None:
    """CommandForbidden unless the identity's accounts include `account_id`."""
    if not principal.can_access_account(account_id):
        raise CommandForbidden(f"{principal.subject} may not command account {account_id}")


def service_actor(principal: Principal) -> str:
    """The audit actor of a command: the authenticated identity, never the producer the envelope names."""
    return f"service:{principal.subject}"


def command_verifier(settings: OmsSettings, redis: Redis) -> TokenVerifier:
    """The OMS's verifier for command tokens (revocations honored)."""
    if settings.jwt_public_key is None:
        raise ConfigurationError(f"{env_name('jwt_public_key')}: required to verify command tokens")
    verifier = TokenVerifier(
        settings.jwt_public_key.get_secret_value().encode(),
        settings.jwt_issuer,
        settings.jwt_audience,
        leeway_s=settings.command_token_leeway_s,
    )
    return verifier.with_revocation(redis_revocation_check(redis))
