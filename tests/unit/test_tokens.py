"""Unit tests of shared.auth: roles, scopes, keys, token issue/verify round trip."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from shared.auth.keys import (
    InvalidKey,
    generate_private_key,
    key_fingerprint,
    load_private_key_file,
    load_public_key,
    load_public_key_file,
    private_key_pem,
    public_key_pem,
    write_key_pair,
)
from shared.auth.roles import (
    DEFAULT_SCOPES,
    Role,
    Scope,
    UnknownRole,
    default_scopes,
    is_valid_scope,
    parse_role,
    parse_roles,
)
from shared.auth.tokens import (
    Grants,
    InvalidToken,
    Principal,
    TokenIssuer,
    TokenRejection,
    TokenVerifier,
    freeze_grants,
)
from shared.web import DUTIES

ISSUER = "aether-test"
AUDIENCE = "aether-platform-test"


@pytest.fixture(scope="module")
def key_pems() -> tuple[bytes, bytes]:
    key = generate_private_key()
    return private_key_pem(key), public_key_pem(key.public_key())


@pytest.fixture(scope="module")
def issuer(key_pems: tuple[bytes, bytes]) -> TokenIssuer:
    return TokenIssuer(key_pems[0], issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def verifier(key_pems: tuple[bytes, bytes]) -> TokenVerifier:
    return TokenVerifier(key_pems[1], issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize("role", list(Role))
def test_each_role_parses_from_its_wire_name(role: Role) -> None:
    assert parse_role(role.value) is role
    assert parse_roles([role.value, role.value]) == frozenset({role})


@pytest.mark.parametrize("name", ["Admin", "superuser", "", " operator", "root"])
def test_unknown_role_names_are_refused(name: str) -> None:
    with pytest.raises(UnknownRole):
        parse_role(name)


def test_role_set_is_the_documented_one() -> None:
    assert {role.value for role in Role} == {"viewer", "operator", "risk", "director", "admin", "auditor", "service"}


def test_scopes_are_resource_action_strings() -> None:
    assert Scope.ORDERS_WRITE.value == "orders:write"
    assert Scope.AUDIT_READ.value == "audit:read"
    assert all(is_valid_scope(scope) for scope in Scope)
    for bad in ("orders", "orders:", ":write", "orders:write:all", "Orders:Write", "orders write"):
        assert not is_valid_scope(bad)


def test_every_role_has_default_scopes_and_admin_gets_no_orders_write() -> None:
    assert set(DEFAULT_SCOPES) == set(Role)
    assert "orders:write" in default_scopes([Role.OPERATOR])
    assert "orders:write" not in default_scopes([Role.ADMIN])
    assert default_scopes([Role.SERVICE]) == frozenset()
    assert default_scopes([Role.OPERATOR, Role.DIRECTOR]) >= {"orders:write", "approvals:write"}


async def test_issue_and_verify_round_trip(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    now = datetime.now(UTC)
    token = issuer.issue(
        "alice",
        [Role.OPERATOR, "viewer"],
        scopes=[Scope.ORDERS_WRITE, "orders:read"],
        accounts=["acc-1", "acc-2"],
        ttl_s=600,
        now=now,
    )
    principal = await verifier.verify(token)
    assert principal.subject == "alice"
    assert principal.roles == frozenset({Role.OPERATOR, Role.VIEWER})
    assert principal.scopes == frozenset({"orders:write", "orders:read"})
    assert principal.accounts == frozenset({"acc-1", "acc-2"})
    assert principal.expires_at == datetime.fromtimestamp(int(now.timestamp()) + 600, tz=UTC)
    assert principal.expires_at.tzinfo is not None
    assert len(principal.token_id) >= 16
    assert verifier.verify_without_revocation(token) == principal


def test_token_header_and_claims(issuer: TokenIssuer, key_pems: tuple[bytes, bytes]) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = issuer.issue("svc-oms", [Role.SERVICE], ttl_s=60, now=now)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": key_fingerprint(load_public_key(key_pems[1]))}
    claims = jwt.decode(token, options={"verify_signature": False})
    iat = int(now.timestamp())
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "svc-oms"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (iat, iat, iat + 60)
    assert claims["roles"] == ["service"]
    assert claims["scopes"] == []
    assert claims["grants"] == {"service": []}
    assert isinstance(claims["jti"], str)


def test_every_token_gets_a_fresh_jti(issuer: TokenIssuer) -> None:
    ids = {
        jwt.decode(issuer.issue("bob", [Role.VIEWER]), options={"verify_signature": False})["jti"] for _ in range(20)
    }
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subject": "", "roles": [Role.VIEWER]}, "subject"),
        ({"subject": "a", "roles": ["wizard"]}, "unknown role"),
        ({"subject": "a", "roles": [Role.VIEWER], "ttl_s": 0}, "ttl_s"),
        ({"subject": "a", "roles": [Role.VIEWER], "scopes": ["orders"]}, "resource:action"),
        ({"subject": "a", "roles": [Role.VIEWER], "accounts": [""]}, "empty account"),
        ({"subject": "a", "roles": [Role.VIEWER], "now": datetime(2030, 1, 1)}, "timezone"),  # noqa: DTZ001
    ],
)
def test_issue_refuses_bad_input(issuer: TokenIssuer, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        issuer.issue(**kwargs)  # type: ignore[arg-type]


def grants_of(role: Role, *accounts: str) -> Grants:
    return freeze_grants({role: accounts})


def test_grants_are_per_role_and_a_route_sees_only_the_roles_it_admitted(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.issue(
        "op-aud", [Role.OPERATOR, Role.AUDITOR], grants={Role.OPERATOR: ["acc-a"], Role.AUDITOR: ["*"]}
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["grants"] == {"auditor": ["*"], "operator": ["acc-a"]}
    assert "accounts" not in claims
    principal = verifier.verify_without_revocation(token)
    assert principal.can_access_account("acc-b")  # through the auditor role
    trading = principal.acting_as({Role.OPERATOR, Role.SERVICE})
    assert trading.roles == frozenset({Role.OPERATOR})
    assert trading.accounts == frozenset({"acc-a"})
    assert trading.can_access_account("acc-a")
    assert not trading.can_access_account("acc-b")
    assert principal.acting_as({Role.ADMIN}).accounts == frozenset()


def test_grants_name_only_roles_the_token_carries(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    with pytest.raises(ValueError, match="grants name a role"):
        issuer.issue("op", [Role.OPERATOR], grants={Role.ADMIN: ["*"]})
    forged = {"grants": {"admin": ["*"]}, "roles": ["operator"]}
    with pytest.raises(InvalidToken) as refused:
        verifier.verify_without_revocation(_signed_claims(issuer, forged))
    assert refused.value.reason is TokenRejection.BAD_CLAIM


def test_a_token_without_grants_reaches_no_account(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    legacy = {"accounts": ["*"], "roles": ["operator"]}  # the old flat claim is not read
    principal = verifier.verify_without_revocation(_signed_claims(issuer, legacy))
    assert principal.accounts == frozenset()
    assert not principal.can_access_account("acc-a")


def _signed_claims(issuer: TokenIssuer, extra: dict[str, object]) -> str:
    base = jwt.decode(issuer.issue("x", [Role.VIEWER]), options={"verify_signature": False})
    del base["grants"]
    return jwt.encode({**base, **extra}, issuer._key, algorithm="EdDSA", headers={"kid": issuer.key_id})


def test_principal_account_access() -> None:
    expires_at = datetime.now(UTC) + timedelta(minutes=5)
    some = Principal("op", frozenset({Role.OPERATOR}), frozenset(), grants_of(Role.OPERATOR, "acc-1"), "j1", expires_at)
    every = Principal("adm", frozenset({Role.ADMIN}), frozenset(), grants_of(Role.ADMIN, "*"), "jti-2", expires_at)
    assert some.can_access_account("acc-1")
    assert not some.can_access_account("acc-2")
    assert every.can_access_account("acc-2")
    assert some.has_any_role(Role.OPERATOR, Role.ADMIN)
    assert not some.has_any_role(Role.ADMIN)
    assert not every.has_any_role(Role.OPERATOR)  # admin implies nothing


async def test_verifier_refuses_token_for_other_audience(issuer: TokenIssuer, key_pems: tuple[bytes, bytes]) -> None:
    other = TokenVerifier(key_pems[1], issuer=ISSUER, audience="someone-else")
    with pytest.raises(InvalidToken) as caught:
        await other.verify(issuer.issue("alice", [Role.VIEWER]))
    assert caught.value.reason is TokenRejection.WRONG_AUDIENCE


def test_leeway_accepts_slightly_expired_tokens(
    issuer: TokenIssuer, verifier: TokenVerifier, key_pems: tuple[bytes, bytes]
) -> None:
    issued = datetime.now(UTC) - timedelta(seconds=65)
    token = issuer.issue("alice", [Role.VIEWER], ttl_s=60, now=issued)  # expired 5 s ago, leeway 10 s
    assert verifier.verify_without_revocation(token).subject == "alice"
    strict = TokenVerifier(key_pems[1], issuer=ISSUER, audience=AUDIENCE, leeway_s=0)
    with pytest.raises(InvalidToken) as caught:
        strict.verify_without_revocation(token)
    assert caught.value.reason is TokenRejection.EXPIRED


def test_key_pair_files_round_trip_and_permissions(tmp_path: Path) -> None:
    files = write_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(files.private_path.stat().st_mode) == 0o600
    private = load_private_key_file(files.private_path)
    public = load_public_key_file(files.public_path)
    assert key_fingerprint(private.public_key()) == key_fingerprint(public) == files.fingerprint
    assert b"PRIVATE" not in files.public_path.read_bytes()


def test_key_pair_is_not_overwritten_without_force(tmp_path: Path) -> None:
    first = write_key_pair(tmp_path)
    before = first.private_path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_pair(tmp_path)
    assert first.private_path.read_bytes() == before
    second = write_key_pair(tmp_path, force=True)
    assert second.private_path.read_bytes() != before
    assert stat.S_IMODE(second.private_path.stat().st_mode) == 0o600
    assert second.fingerprint != first.fingerprint


def test_non_ed25519_or_garbage_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidKey):
        TokenVerifier(ec_public, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(InvalidKey):
        TokenIssuer(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", issuer=ISSUER, audience=AUDIENCE)


def test_fingerprint_matches_rfc7638_thumbprint_of_pyjwt_jwk(key_pems: tuple[bytes, bytes]) -> None:
    import base64
    import hashlib
    import json

    from jwt.algorithms import OKPAlgorithm

    jwk = json.loads(OKPAlgorithm.to_jwk(load_public_key(key_pems[1])))
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert key_fingerprint(load_public_key(key_pems[1])) == expected


@pytest.mark.parametrize("duty", sorted(DUTIES))
def test_every_role_a_duty_admits_holds_its_scope_by_default(duty: str) -> None:
    # A user token carries default_scopes(roles): the scope half of a duty must never lock out a role it admits.
    roles, scope = DUTIES[duty]
    assert [role for role in roles if role is not Role.SERVICE and scope not in DEFAULT_SCOPES[role]] == []


def test_the_enrollment_marker_is_in_no_default_scope() -> None:
    assert all(Scope.TOTP_ENROLL not in scopes for scopes in DEFAULT_SCOPES.values())
