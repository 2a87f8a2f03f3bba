"""Which client a credential attempt comes from: the key of its rate-limit counters.

The peer address, as the ASGI server gives it (rewritten from X-Forwarded-For only by the proxy-headers middleware,
and only for the proxies listed in `AETHER_TRUSTED_PROXIES`). A service that relays a person's login (the director
inbox) names that person's address in `X-Aether-Client-Address` and proves it may with a service token holding
`auth:relay_client` in `X-Aether-Relay-Token`; a relayed address without a valid relay token is refused (401).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from services.accounts.errors import InvalidClientRelay
from shared.auth.roles import Role
from shared.auth.tokens import InvalidToken, RevocationUnavailable, TokenVerifier
from shared.web import CLIENT_ADDRESS_HEADER, RELAY_SCOPE, RELAY_TOKEN_HEADER


async def client_address(request: Request) -> str:
    """The address the attempt is counted against (see the module docstring)."""
    peer = request.client.host if request.client else "unknown"
    relayed = request.headers.get(CLIENT_ADDRESS_HEADER)
    if relayed is None:
        return peer
    token = request.headers.get(RELAY_TOKEN_HEADER, "")
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        principal = await verifier.verify(token)
    except (InvalidToken, RevocationUnavailable):
        raise InvalidClientRelay(
            f"{CLIENT_ADDRESS_HEADER}: needs a valid relay token in {RELAY_TOKEN_HEADER}"
        ) from None
    if not (principal.has_any_role(Role.SERVICE) and principal.has_scopes(RELAY_SCOPE)):
        raise InvalidClientRelay(f"{RELAY_TOKEN_HEADER}: the token lacks the {RELAY_SCOPE} scope")
    try:
        return str(ipaddress.ip_address(relayed.strip()))
    except ValueError:
        raise InvalidClientRelay(f"{CLIENT_ADDRESS_HEADER}: not an IP address") from None


ClientAddress = Annotated[str, Depends(client_address)]
