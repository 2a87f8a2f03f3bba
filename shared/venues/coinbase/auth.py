"""CDP API key authentication for Coinbase Advanced Trade: one short-lived JWT per request (docs/venues.md, "Coinbase").

A REST JWT carries the header `{alg, kid: <key name>, nonce: <random hex>, typ: JWT}` and the claims
`{iss: "cdp", sub: <key name>, nbf: now, exp: now + 120, uri: "<METHOD> <host><path>"}`; a WebSocket JWT is the same
without `uri`. ES256 keys are PEM EC (P-256) private keys; Ed25519 keys are base64 of 64 bytes (seed + public key),
signed as EdDSA. `verify_jwt` is what the protocol fake checks.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

JWT_LIFETIME_S = 120
ISSUER = "cdp"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class InvalidKey(ValueError):
    """The API key secret is neither a PEM EC private key nor a base64 Ed25519 key."""


class JwtRefused(ValueError):
    """A JWT that does not authenticate the request (the fake answers 401 with this message)."""


def load_private_key(secret: str) -> PrivateKey:
    """The signing key of an API key secret (PEM EC P-256 or base64 Ed25519); `InvalidKey` otherwise."""
    text = secret.strip().replace("\\n", "\n")
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidKey("the API secret is not a readable PEM private key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key
        raise InvalidKey("the API secret is not an EC P-256 or Ed25519 key")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("the API secret is neither PEM nor base64") from None
    if len(raw) not in (32, 64):
        raise InvalidKey("an Ed25519 API secret is 32 or 64 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])


def algorithm(key: PrivateKey | PublicKey) -> str:
    """ES256 for EC keys, EdDSA for Ed25519 keys."""
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) else "EdDSA"


def request_uri(method: str, host: str, path: str) -> str:
    """The `uri` claim: `GET api.coinbase.com/api/v3/brokerage/accounts` (no scheme, no query string)."""
    return f"{method.upper()} {host}{path.split('?', 1)[0]}"


@dataclass(frozen=True, slots=True)
class JwtSigner:
    """Signs JWTs for one API key; the secret stays in this object (`repr` shows only the key name)."""

    key_name: str
    private_key: PrivateKey
    clock: Callable[[], float] = time.time

    @classmethod
    def of(cls, key_name: str, secret: str, clock: Callable[[], float] = time.time) -> JwtSigner:
        """A signer from the key name and its secret as Coinbase hands them out."""
        return cls(key_name, load_private_key(secret), clock)

    def __repr__(self) -> str:
        return f"JwtSigner(key_name={self.key_name!r})"

    def rest(self, method: str, host: str, path: str) -> str:
        """The JWT for one REST request."""
        return self._sign({"uri": request_uri(method, host, path)})

    def websocket(self) -> str:
        """The JWT for a WebSocket subscribe message (no `uri`)."""
        return self._sign({})

    def _sign(self, extra: dict[str, Any]) -> str:
        now = int(self.clock())
        claims = {"iss": ISSUER, "sub": self.key_name, "nbf": now, "exp": now + JWT_LIFETIME_S, **extra}
        headers = {"kid": self.key_name, "nonce": secrets.token_hex(16), "typ": "JWT"}
        return jwt.encode(claims, self.private_key, algorithm=algorithm(self.private_key), headers=headers)


def unverified_kid(token: str) -> str:
    """The `kid` of a JWT before its signature is checked (to find the key to check it with)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise JwtRefused(f"unreadable JWT ({type(exc).__name__})") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwtRefused("the JWT header has no kid")
    if not isinstance(header.get("nonce"), str) or not header["nonce"]:
        raise JwtRefused("the JWT header has no nonce")
    return kid


def verify_jwt(token: str, public_key: PublicKey, *, uri: str | None, now: float | None = None) -> dict[str, Any]:
    """The claims of a JWT signed by `public_key`, unexpired, for `uri` (None: a WebSocket JWT); `JwtRefused` else."""
    kid = unverified_kid(token)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[algorithm(public_key)],
            issuer=ISSUER,
            options={"require": ["exp", "nbf", "sub", "iss"], "verify_exp": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise JwtRefused(f"JWT refused ({type(exc).__name__})") from None
    at = time.time() if now is None else now
    if not isinstance(claims["exp"], int) or not isinstance(claims["nbf"], int):
        raise JwtRefused("exp and nbf must be integers")
    if at >= claims["exp"]:
        raise JwtRefused("the JWT has expired")
    if at < claims["nbf"] - 5:
        raise JwtRefused("the JWT is not valid yet")
    if claims["exp"] - claims["nbf"] > JWT_LIFETIME_S:
        raise JwtRefused("the JWT lives longer than two minutes")
    if claims["sub"] != kid:
        raise JwtRefused("sub and kid differ")
    if uri is not None and claims.get("uri") != uri:
        raise JwtRefused("the JWT was signed for another request")
    return claims


def public_key_of(key: PrivateKey) -> PublicKey:
    """The public half (what Coinbase keeps to check signatures)."""
    return key.public_key()


def new_ec_secret() -> str:
    """A fresh ES256 API secret in Coinbase's PEM form (for tests and the fake)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def new_ed25519_secret() -> str:
    """A fresh Ed25519 API secret in Coinbase's base64 form (seed followed by the public key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + public).decode()
