"""Settings of the one place that signs tokens (the accounts service, and the `aether auth token` tool).

Every other service verifies with the public key alone: `AetherSettings` has no private key field, so a worker
process cannot read one from its environment, and a compromised worker cannot mint a token. Workers get
short-lived tokens of a service identity from the accounts service instead (`shared.auth.service_tokens`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from shared.config import AetherSettings


class TokenSigningSettings(AetherSettings):
    """`AetherSettings` plus the Ed25519 signing key (`AETHER_JWT_PRIVATE_KEY` or `AETHER_JWT_PRIVATE_KEY_FILE`)."""

    jwt_private_key: SecretStr | None = None

    secret_fields: ClassVar[tuple[str, ...]] = (*AetherSettings.secret_fields, "jwt_private_key")
