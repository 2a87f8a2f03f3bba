"""Kraken spot REST request signing (docs.kraken.com/api/docs/guides/spot-rest-auth).

API-Sign = base64(HMAC-SHA512(key=base64decode(secret), msg=uri_path + SHA256(nonce + postdata))).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode


class InvalidSecret(ValueError):
    """The API secret is not base64 (never includes the secret in the message)."""


def encode_payload(fields: Mapping[str, str]) -> str:
    """The form-encoded POST body, in the order given (the signature covers these exact bytes)."""
    return urlencode(list(fields.items()))


def api_sign(uri_path: str, nonce: str, postdata: str, secret_b64: str) -> str:
    """The API-Sign header for a private call to `uri_path` (e.g. /0/private/AddOrder)."""
    try:
        secret = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("the Kraken API secret is not valid base64") from None
    digest = hashlib.sha256((nonce + postdata).encode()).digest()
    mac = hmac.new(secret, uri_path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def verify_sign(uri_path: str, nonce: str, postdata: str, secret_b64: str, signature: str) -> bool:
    """Whether `signature` is the API-Sign of this request (constant-time compare)."""
    return hmac.compare_digest(api_sign(uri_path, nonce, postdata, secret_b64), signature)
