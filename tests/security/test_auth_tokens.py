"""RELIABILITY S5: every bad bearer token is refused with 401; valid tokens pass role and scope checks.

A tiny FastAPI app carries the real dependencies and the real verifier on `app.state`, and the platform's
error handlers; requests go through httpx's ASGI transport. Writes reports/reliability/S5-bad-tokens.json.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from services.accounts.app import create_app as create_accounts_app
from services.accounts.config import AccountsSettings
from shared.auth.dependencies import CurrentPrincipal, require_roles, require_scopes
from shared.auth.keys import generate_private_key, key_fingerprint, private_key_pem, public_key_pem
from shared.auth.revocation import redis_revocation_check, revoke_jti, revoked_key
from shared.auth.roles import Role, Scope, default_scopes
from shared.auth.tokens import Principal, TokenIssuer, TokenVerifier
from shared.config import AetherSettings
from shared.errors import install_error_handlers
from tests.reliability.conftest import RecordWriter

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = REPO_ROOT / "reports" / "reliability" / "S5-bad-tokens.json"
ISSUER = "aether-test"
AUDIENCE = "aether-platform-test"
PRIVATE_KEY = generate_private_key()
PRIVATE_PEM = private_key_pem(PRIVATE_KEY)
PUBLIC_PEM = public_key_pem(PRIVATE_KEY.public_key())
KID = key_fingerprint(PRIVATE_KEY.public_key())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": os.urandom(8).hex(),
        "roles": ["operator"],
        "scopes": ["orders:write"],
        "accounts": ["*"],
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def unsigned_token(alg: str, signature: str = "") -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(valid_claims())}.{signature}"


def hmac_token(secret: bytes, alg: str = "HS256") -> str:
    # Algorithm confusion: HMAC keyed with the verifier's public key bytes; PyJWT refuses to build this, so by hand.
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': KID})}.{b64json(valid_claims())}"
    signature = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def signed_with_our_key(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, PRIVATE_KEY, algorithm="EdDSA", headers={"kid": KID})


def tampered_token(issuer: TokenIssuer) -> str:
    header, _, signature = issuer.issue("eve", [Role.VIEWER]).split(".")
    return f"{header}.{b64json(valid_claims(sub='eve', roles=['operator', 'admin']))}.{signature}"


@dataclass(frozen=True)
class RevocationList:
    """Hand-written stand-in for the Redis revocation store (the accounts service owns the real one)."""

    revoked: set[str]

    async def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked


def build_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.token_verifier = verifier

    @app.get("/orders")
    async def list_orders(principal: Annotated[Principal, Depends(require_roles(Role.OPERATOR))]) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.post("/orders", dependencies=[Depends(require_scopes(Scope.ORDERS_WRITE))])
    async def place_order(principal: CurrentPrincipal) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PRIVATE_PEM, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def revocations() -> RevocationList:
    return RevocationList(set())


@pytest.fixture
async def client(revocations: RevocationList) -> AsyncIterator[httpx.AsyncClient]:
    verifier = TokenVerifier(PUBLIC_PEM, issuer=ISSUER, audience=AUDIENCE, is_revoked=revocations.is_revoked)
    transport = httpx.ASGITransport(app=build_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://aether.test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bad_token_cases(issuer: TokenIssuer, revocations: RevocationList) -> dict[str, dict[str, str]]:
    """Name -> request headers; every one must be answered 401."""
    now = datetime.now(UTC)
    other_key = generate_private_key()
    stranger = TokenIssuer(private_key_pem(other_key), issuer=ISSUER, audience=AUDIENCE)
    revoked = issuer.issue("revoked-op", [Role.OPERATOR])
    revocations.revoked.add(jwt.decode(revoked, options={"verify_signature": False})["jti"])
    rsa_key = rsa.generate_private_key(public_exponent=65_537, key_size=2_048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    forged_kid = jwt.encode(valid_claims(), other_key, algorithm="EdDSA", headers={"kid": KID})
    cases: dict[str, dict[str, str]] = {
        "no token": {},
        "empty bearer": {"Authorization": "Bearer "},
        "other scheme": {"Authorization": "Basic b3BlcmF0b3I6aHVudGVyMg=="},
        "no scheme": {"Authorization": issuer.issue("op", [Role.OPERATOR])},
        "malformed garbage": bearer("not-a-jwt"),
        "malformed three parts": bearer("a.b.c"),
        "malformed json header": bearer(f"{b64url(b'{oops')}.{b64json(valid_claims())}.sig"),
        "oversized token": bearer("a" * 10_000),
        "alg none": bearer(unsigned_token("none")),
        "alg None": bearer(unsigned_token("None")),
        "alg none with signature": bearer(unsigned_token("none", b64url(b"x" * 64))),
        "signature stripped": bearer(issuer.issue("op", [Role.OPERATOR]).rsplit(".", 1)[0] + "."),
        "HS256 keyed with public PEM": bearer(hmac_token(PUBLIC_PEM)),
        "HS256 keyed with stripped public PEM": bearer(hmac_token(PUBLIC_PEM.strip())),
        "HS512 keyed with public PEM": bearer(hmac_token(PUBLIC_PEM, "HS512")),
        "RS256 with another key": bearer(jwt.encode(valid_claims(), rsa_key, algorithm="RS256")),
        "ES256 with another key": bearer(jwt.encode(valid_claims(), ec_key, algorithm="ES256")),
        "EdDSA with another key": bearer(stranger.issue("op", [Role.OPERATOR])),
        "EdDSA with another key and our kid": bearer(forged_kid),
        "payload tampered": bearer(tampered_token(issuer)),
        "expired": bearer(issuer.issue("op", [Role.OPERATOR], ttl_s=60, now=now - timedelta(hours=2))),
        "not yet valid": bearer(issuer.issue("op", [Role.OPERATOR], now=now + timedelta(hours=1))),
        "wrong audience": bearer(TokenIssuer(PRIVATE_PEM, ISSUER, "another-platform").issue("op", [Role.OPERATOR])),
        "wrong issuer": bearer(TokenIssuer(PRIVATE_PEM, "evil-issuer", AUDIENCE).issue("op", [Role.OPERATOR])),
        "audience list": bearer(signed_with_our_key(valid_claims(aud=[AUDIENCE, "other"]))),
        "unknown role": bearer(signed_with_our_key(valid_claims(roles=["operator", "superuser"]))),
        "roles not a list": bearer(signed_with_our_key(valid_claims(roles="operator"))),
        "revoked jti": bearer(revoked),
    }
    for claim in ("exp", "aud", "iss", "sub", "iat", "jti", "roles"):
        cases[f"missing {claim}"] = bearer(signed_with_our_key(valid_claims(**{claim: None})))
    return cases


def is_proper_401(response: httpx.Response) -> bool:
    return (
        response.status_code == 401
        and response.json()["error"]["code"] == "unauthorized"
        and response.headers.get("www-authenticate", "").startswith("Bearer ")
    )


async def test_s5_bad_tokens_are_all_refused(
    client: httpx.AsyncClient, issuer: TokenIssuer, revocations: RevocationList
) -> None:
    # Control first: a harness that refused everything would make the 401s below meaningless.
    control = await client.get("/orders", headers=bearer(issuer.issue("op", [Role.OPERATOR])))
    assert control.status_code == 200, control.text

    results: dict[str, int] = {}
    violations: list[str] = []
    for name, headers in bad_token_cases(issuer, revocations).items():
        response = await client.get("/orders", headers=headers)
        results[name] = response.status_code
        if not is_proper_401(response):
            violations.append(f"{name}: {response.status_code} {response.text[:200]}")
    accepted = sum(1 for status in results.values() if 200 <= status < 300)

    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    report = {"id": "S5-bad-tokens", "cases": len(results), "accepted": accepted, "violations": len(violations)}
    REPORT_PATH.write_text(json.dumps(report) + "\n")

    assert len(results) >= 30
    assert accepted == 0, violations
    assert violations == []


async def test_missing_token_challenge_has_no_error_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="aether"'
    assert response.json() == {"error": {"code": "unauthorized", "message": "missing bearer token"}}


async def test_invalid_token_answer_is_short_and_generic(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    expired = issuer.issue("op", [Role.OPERATOR], ttl_s=60, now=datetime.now(UTC) - timedelta(hours=1))
    response = await client.get("/orders", headers=bearer(expired))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="aether", error="invalid_token"'
    assert response.json() == {"error": {"code": "unauthorized", "message": "token expired"}}


async def test_valid_token_without_the_role_is_forbidden(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    for roles in ([Role.VIEWER], [Role.ADMIN], [Role.DIRECTOR, Role.RISK]):
        response = await client.get("/orders", headers=bearer(issuer.issue("someone", roles)))
        assert response.status_code == 403, roles
        assert response.json()["error"] == {"code": "forbidden", "message": "requires role: operator"}


async def test_valid_token_with_the_role_passes(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    response = await client.get("/orders", headers=bearer(issuer.issue("op-7", [Role.VIEWER, Role.OPERATOR])))
    assert response.status_code == 200
    assert response.json() == {"subject": "op-7"}


async def test_scope_check(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    without = await client.post("/orders", headers=bearer(issuer.issue("op", [Role.OPERATOR], scopes=["orders:read"])))
    assert without.status_code == 403
    assert (
        without.headers["www-authenticate"] == 'Bearer realm="aether", error="insufficient_scope", scope="orders:write"'
    )
    allowed = await client.post("/orders", headers=bearer(issuer.issue("op", [Role.OPERATOR], scopes=["orders:write"])))
    assert allowed.status_code == 200


async def test_revocation_check_failure_fails_closed(issuer: TokenIssuer) -> None:
    async def unreachable_store(jti: str) -> bool:
        raise ConnectionError("redis down")

    verifier = TokenVerifier(PUBLIC_PEM, issuer=ISSUER, audience=AUDIENCE).with_revocation(unreachable_store)
    transport = httpx.ASGITransport(app=build_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://aether.test") as client:
        response = await client.get("/orders", headers=bearer(issuer.issue("op", [Role.OPERATOR])))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.auth.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_keygen_and_token_produce_a_token_the_verifier_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "AETHER_JWT_ISSUER": "cli-issuer", "AETHER_JWT_AUDIENCE": "cli-audience"}
    keygen = run_cli("keygen", "--out-dir", str(tmp_path), env=env)
    assert keygen.returncode == 0, keygen.stderr
    private_path, public_path = tmp_path / "private.pem", tmp_path / "public.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    private_body = "".join(private_path.read_text().splitlines()[1:-1])
    assert private_body not in keygen.stdout + keygen.stderr
    assert str(public_path) in keygen.stdout

    again = run_cli("keygen", "--out-dir", str(tmp_path), env=env)
    assert again.returncode != 0
    assert "".join(private_path.read_text().splitlines()[1:-1]) == private_body

    minted = run_cli(
        "token",
        *("--subject", "bootstrap-admin", "--role", "admin", "--role", "operator"),
        *("--scope", "orders:write", "--no-default-scopes", "--account", "*", "--ttl-s", "120"),
        *("--private-key-file", str(private_path)),
        env=env,
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n"  # the token and nothing else on stdout
    verifier = TokenVerifier(public_path.read_bytes(), issuer="cli-issuer", audience="cli-audience")
    principal = await verifier.verify(token)
    assert principal.subject == "bootstrap-admin"
    assert principal.roles == frozenset({Role.ADMIN, Role.OPERATOR})
    assert principal.scopes == frozenset({"orders:write"})
    assert principal.can_access_account("any-account")
    assert 100 <= (principal.expires_at - datetime.now(UTC)).total_seconds() <= 130


def test_cli_token_refuses_unknown_role(tmp_path: Path) -> None:
    assert run_cli("keygen", "--out-dir", str(tmp_path), env=dict(os.environ)).returncode == 0
    minted = run_cli(
        "token",
        "--subject",
        "x",
        "--role",
        "root",
        "--private-key-file",
        str(tmp_path / "private.pem"),
        env=dict(os.environ),
    )
    assert minted.returncode != 0
    assert minted.stdout == ""


# --- Revocation through Redis (the accounts service's store) and refresh-token reuse detection -------------------


async def test_token_revoked_in_redis_is_refused_and_expires_with_the_token(
    issuer: TokenIssuer, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    try:
        verifier = TokenVerifier(PUBLIC_PEM, issuer=ISSUER, audience=AUDIENCE).with_revocation(
            redis_revocation_check(redis)
        )
        transport = httpx.ASGITransport(app=build_app(verifier))
        token = issuer.issue("op", [Role.OPERATOR], ttl_s=300)
        principal = verifier.verify_without_revocation(token)
        async with httpx.AsyncClient(transport=transport, base_url="http://aether.test") as client:
            assert (await client.get("/orders", headers=bearer(token))).status_code == 200
            await revoke_jti(redis, principal.token_id, principal.expires_at)
            refused = await client.get("/orders", headers=bearer(token))
            other = await client.get("/orders", headers=bearer(issuer.issue("op", [Role.OPERATOR])))
        assert is_proper_401(refused)
        assert refused.json()["error"]["message"] == "token revoked"
        assert other.status_code == 200  # revocation is per jti, not per subject
        ttl = await redis.ttl(revoked_key(principal.token_id))
        assert 300 <= ttl <= 300 + 61  # kept as long as the token could still verify (lifetime + leeway)
    finally:
        await redis.aclose()


@pytest.fixture
async def accounts_client(settings: AetherSettings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    accounts_settings = AccountsSettings(
        **settings.model_dump(
            exclude={
                "jwt_public_key",
                "jwt_private_key",
                "jwt_issuer",
                "jwt_audience",
                "service_name",
                "log_level",
                "local_kek_file",
            }
        ),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_public_key=SecretStr(PUBLIC_PEM.decode()),
        jwt_private_key=SecretStr(PRIVATE_PEM.decode()),
        local_kek_file=tmp_path / "kek.json",
        log_level="WARNING",
    )
    app = create_accounts_app(accounts_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as client:
            yield client


async def test_s5_refresh_reuse_and_logout_revoke_across_services(
    accounts_client: httpx.AsyncClient,
    issuer: TokenIssuer,
    redis_url: str,
    write_reliability_record: RecordWriter,
    reliability_seed: int,
) -> None:
    admin = bearer(issuer.issue("s5-admin", [Role.ADMIN], scopes=default_scopes([Role.ADMIN]), accounts=["*"]))
    username = f"s5-{os.urandom(4).hex()}"
    password = "S5 horse battery 77"
    created = await accounts_client.post(
        "/users", json={"username": username, "password": password, "roles": ["operator"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    login_body = {"username": username, "password": password}
    first = (await accounts_client.post("/auth/login", json=login_body)).json()
    second = (await accounts_client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    reuse = await accounts_client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    after_reuse = await accounts_client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    third = (await accounts_client.post("/auth/login", json=login_body)).json()
    logout = await accounts_client.post(
        "/auth/logout", json={"refresh_token": third["refresh_token"]}, headers=bearer(third["access_token"])
    )
    assert logout.status_code == 204
    # another service (its own app, the shared Redis) refuses every token of the dead sessions
    redis = Redis.from_url(redis_url)
    try:
        verifier = TokenVerifier(PUBLIC_PEM, ISSUER, AUDIENCE).with_revocation(redis_revocation_check(redis))
        transport = httpx.ASGITransport(app=build_app(verifier))
        async with httpx.AsyncClient(transport=transport, base_url="http://oms.test") as oms:
            revoked_tokens = [first["access_token"], second["access_token"], third["access_token"]]
            answers = [(await oms.get("/orders", headers=bearer(token))).status_code for token in revoked_tokens]
            live = (await accounts_client.post("/auth/login", json=login_body)).json()["access_token"]
            control = (await oms.get("/orders", headers=bearer(live))).status_code
    finally:
        await redis.aclose()
    cases = {
        "reused refresh token": reuse.status_code,
        "refresh token of a revoked family": after_reuse.status_code,
        **{f"revoked access token {index}": status for index, status in enumerate(answers)},
    }
    accepted = sum(1 for status in cases.values() if status != 401)
    write_reliability_record(
        {"id": "S5-revocation", "seed": reliability_seed, "cases": len(cases), "violations": accepted, "results": cases}
    )
    assert control == 200
    assert accepted == 0, cases
