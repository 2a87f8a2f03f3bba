"""CDP JWT authentication: ES256 and Ed25519 tokens built per request and verified as Coinbase does."""

from __future__ import annotations

import jwt
import pytest

from shared.venues.coinbase.auth import (
    JWT_LIFETIME_S,
    InvalidKey,
    JwtRefused,
    JwtSigner,
    load_private_key,
    new_ec_secret,
    new_ed25519_secret,
    request_uri,
    verify_jwt,
)

KEY = "organizations/0b7c/apiKeys/9f1e"
HOST = "api.coinbase.com"
PATH = "/api/v3/brokerage/orders"
NOW = 1_772_452_800.0


@pytest.fixture(params=["ES256", "EdDSA"])
def signer(request: pytest.FixtureRequest) -> JwtSigner:
    secret = new_ec_secret() if request.param == "ES256" else new_ed25519_secret()
    return JwtSigner.of(KEY, secret, clock=lambda: NOW)


def test_a_rest_jwt_carries_the_documented_header_and_claims(signer: JwtSigner) -> None:
    token = signer.rest("POST", HOST, PATH)

    header = jwt.get_unverified_header(token)
    claims = verify_jwt(token, signer.private_key.public_key(), uri=f"POST {HOST}{PATH}", now=NOW + 1)

    assert header["kid"] == KEY
    assert header["typ"] == "JWT"
    assert len(header["nonce"]) == 32
    assert header["alg"] in ("ES256", "EdDSA")
    assert claims == {"iss": "cdp", "sub": KEY, "nbf": int(NOW), "exp": int(NOW) + JWT_LIFETIME_S, "uri": claims["uri"]}
    assert claims["uri"] == "POST api.coinbase.com/api/v3/brokerage/orders"


def test_every_token_has_its_own_nonce(signer: JwtSigner) -> None:
    nonces = {jwt.get_unverified_header(signer.rest("GET", HOST, PATH))["nonce"] for _ in range(20)}
    assert len(nonces) == 20


def test_an_expired_token_is_refused(signer: JwtSigner) -> None:
    token = signer.rest("GET", HOST, PATH)
    with pytest.raises(JwtRefused, match="expired"):
        verify_jwt(token, signer.private_key.public_key(), uri=f"GET {HOST}{PATH}", now=NOW + JWT_LIFETIME_S)


def test_a_token_for_another_request_is_refused(signer: JwtSigner) -> None:
    token = signer.rest("GET", HOST, "/api/v3/brokerage/accounts")
    with pytest.raises(JwtRefused, match="another request"):
        verify_jwt(token, signer.private_key.public_key(), uri=f"POST {HOST}{PATH}", now=NOW)


def test_a_token_signed_by_another_key_is_refused(signer: JwtSigner) -> None:
    other = JwtSigner.of(KEY, new_ec_secret(), clock=lambda: NOW)
    token = signer.rest("GET", HOST, PATH)
    with pytest.raises(JwtRefused):
        verify_jwt(token, other.private_key.public_key(), uri=f"GET {HOST}{PATH}", now=NOW)


def test_a_tampered_token_is_refused(signer: JwtSigner) -> None:
    head, _body, signature = signer.rest("GET", HOST, PATH).split(".")
    forged = jwt.api_jws.base64url_encode(b'{"iss":"cdp","sub":"x","nbf":1,"exp":9999999999}').decode()
    with pytest.raises(JwtRefused):
        verify_jwt(f"{head}.{forged}.{signature}", signer.private_key.public_key(), uri=None, now=NOW)


def test_a_websocket_token_has_no_uri(signer: JwtSigner) -> None:
    claims = verify_jwt(signer.websocket(), signer.private_key.public_key(), uri=None, now=NOW)
    assert "uri" not in claims


def test_the_uri_claim_drops_the_query_string() -> None:
    assert request_uri("get", HOST, "/api/v3/brokerage/accounts?limit=250") == (
        "GET api.coinbase.com/api/v3/brokerage/accounts"
    )


def test_the_secret_never_shows_in_the_signer_repr() -> None:
    secret = new_ec_secret()
    assert "PRIVATE" not in repr(JwtSigner.of(KEY, secret))
    assert KEY in repr(JwtSigner.of(KEY, secret))


@pytest.mark.parametrize(
    "secret",
    ["", "not a key", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----", "QUJD"],
)
def test_an_unusable_secret_is_refused_with_a_reason(secret: str) -> None:
    with pytest.raises(InvalidKey):
        load_private_key(secret)


def test_a_pem_with_escaped_newlines_loads() -> None:
    assert load_private_key(new_ec_secret().replace("\n", "\\n")) is not None
