"""Binance keys come from the same store as Kraken's (`StoredCredentials`), proven usable by Binance's signer."""

from __future__ import annotations

from shared.crypto.secrets_dir import VenueCredentials
from shared.venues.binance.signing import InvalidSecret, signer_for
from shared.venues.kraken.credentials import AccountNotReady


def check_credentials(credentials: VenueCredentials) -> VenueCredentials:
    """The pair, once its secret is an HMAC secret or a readable Ed25519 PEM key (`AccountNotReady` otherwise)."""
    try:
        signer_for(credentials.api_secret).sign("timestamp=0")
    except InvalidSecret as exc:
        raise AccountNotReady(credentials.account_id, str(exc)) from None
    return credentials
