"""Binance SIGNED request signing (developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security).

The payload is the exact query string (and, for a POST, the form body appended to it) that is sent, `timestamp`
and `recvWindow` included. HMAC keys sign it with HMAC-SHA256 (hex); Ed25519 keys sign its ASCII bytes with the
private key (base64). An Ed25519 secret is a PEM private key ("-----BEGIN PRIVATE KEY-----"); anything else is an
HMAC secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

PEM_MARKER = "-----BEGIN"


class InvalidSecret(ValueError):
    """The API secret cannot sign (never includes the secret in the message)."""


def encode_params(params: Mapping[str, str]) -> str:
    """The query string / form body, in the order given (the signature covers these exact bytes)."""
    return urlencode(list(params.items()))


class Signer(Protocol):
    def sign(self, payload: str) -> str:
        """The `signature` parameter for `payload`."""
        ...


class HmacSigner:
    """HMAC-SHA256 over the payload, hex encoded."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise InvalidSecret("the Binance API secret is empty")
        self._secret = secret.encode()

    def sign(self, payload: str) -> str:
        """The hex HMAC-SHA256 of `payload`."""
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()


class Ed25519Signer:
    """Ed25519 over the payload's ASCII bytes, base64 encoded."""

    def __init__(self, private_key_pem: str) -> None:
        try:
            key = load_pem_private_key(private_key_pem.encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidSecret("the Binance Ed25519 private key is not a readable unencrypted PEM key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidSecret("the Binance private key is not an Ed25519 key")
        self._key = key

    def sign(self, payload: str) -> str:
        """The base64 Ed25519 signature of `payload`."""
        return base64.b64encode(self._key.sign(payload.encode("ascii"))).decode()


def signer_for(secret: str) -> Signer:
    """An Ed25519 signer for a PEM private key, else an HMAC signer (`InvalidSecret` when unusable)."""
    if secret.lstrip().startswith(PEM_MARKER):
        return Ed25519Signer(secret)
    return HmacSigner(secret)


def verify_hmac(payload: str, secret: str, signature: str) -> bool:
    """Whether `signature` is the HMAC signature of `payload` (case-insensitive hex, constant-time compare)."""
    return hmac.compare_digest(HmacSigner(secret).sign(payload), signature.lower())


def verify_ed25519(payload: str, public_key_pem: str, signature: str) -> bool:
    """Whether `signature` (base64) is the Ed25519 signature of `payload` under the PEM public key."""
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), payload.encode("ascii"))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
