"""S2: nobody reaches what is not theirs.

Every route of every service (from each app's OpenAPI document) x every caller and no token x own and foreign
account, against the hand-written policy in tests/security/access_policy.py. Callers: each role alone (granted
the own account; `service` with every scope), every pair of roles a user may hold (granted per role as a login
grants them: admin, auditor and risk every account, the others the own account only), and service identities
with narrowed scopes. Each service runs for real (lifespan, PostgreSQL, Redis, Kafka) so a cell that passes
authorization reaches the handler; what counts is whether the answer is 401, 403 (or the policy's 404 for a
foreign object) or anything else.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem
from shared.auth.roles import Role, Scope, default_scopes
from shared.auth.tokens import TokenIssuer
from shared.config import AetherSettings
from tests.helpers import eventually, own_database
from tests.kit.controls import open_controls
from tests.reliability.conftest import RecordWriter
from tests.security.access_policy import POLICY, Rule

KEY = generate_private_key()
OWN, FOREIGN = "s2-own", "s2-foreign"
PUBLIC_PROBES = {"/healthz", "/readyz", "/metrics"}
REDIS_DB = 14  # trading-state and limit keys written by the matrix stay away from the other tests' keys


HUMAN_ROLES = tuple(role for role in Role if role is not Role.SERVICE)
# Written from docs/security.md, not read from the issuer: the roles whose login grants reach every account.
EVERY_ACCOUNT_ROLES = frozenset({Role.ADMIN, Role.AUDITOR, Role.RISK})
ROUTE_SCOPES = frozenset(str(scope) for scope in Scope if scope is not Scope.TOTP_ENROLL)


@dataclass(frozen=True)
class Caller:
    """Who calls: roles, the scopes the token carries, and the roles granted every account (the rest: OWN)."""

    label: str
    roles: tuple[Role, ...]
    scopes: frozenset[str]
    wide: frozenset[Role] = frozenset()

    def headers(self) -> dict[str, str]:
        grants = {role: ("*",) if role in self.wide else (OWN,) for role in self.roles}
        return bearer_headers(*self.roles, subject=f"s2-{self.label}", scopes=self.scopes, grants=grants)


def _callers() -> list[Caller]:
    alone = [
        Caller(str(role), (role,), ROUTE_SCOPES if role is Role.SERVICE else default_scopes([role])) for role in Role
    ]
    pairs = [
        Caller("+".join(pair), pair, default_scopes(pair), EVERY_ACCOUNT_ROLES.intersection(pair))
        for pair in itertools.combinations(HUMAN_ROLES, 2)
    ]
    narrowed = [
        Caller(f"service[{' '.join(scopes)}]", (Role.SERVICE,), frozenset(scopes))
        for scopes in (("market_data:read",), ("orders:read", "accounts:read"), ("orders:write",))
    ]
    return [*alone, *pairs, *narrowed]


CALLERS = _callers()


@dataclass(frozen=True)
class Cell:
    service: str
    method: str
    path: str
    role: str | None
    side: str  # "own" | "foreign" | "-"
    expected: str
    actual: int
    # The statuses the route's OpenAPI operation declares.
    documented: frozenset[int] = frozenset()

    @property
    def matches(self) -> bool:
        if self.expected == "allowed":
            # Past authorization: a success, or a refusal the route documents (never a 5xx, an undocumented 404
            # of a missing route, or a 401/403).
            return 200 <= self.actual < 300 or (
                400 <= self.actual < 500 and self.actual not in (401, 403) and self.actual in self.documented
            )
        return str(self.actual) == self.expected


@pytest.fixture(scope="module")
def s2_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "s2") as url:
        yield url


def _settings_class(service: str) -> type[AetherSettings]:
    module = importlib.import_module(f"services.{service}.config")
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, AetherSettings) and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"services.{service}.config should define one settings class, found {found}"
    return found[0]


def service_settings(service: str, base: AetherSettings, database_url: str, **extra: Any) -> AetherSettings:
    excluded = {"jwt_public_key", "jwt_private_key", "service_name", "log_level", "database_url", "redis_url"}
    fields = base.model_dump(exclude=excluded)
    redis_url = re.sub(r"/\d+$", f"/{REDIS_DB}", base.redis_url.get_secret_value())
    return _settings_class(service)(
        **fields,
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        # The accounts service signs tokens (login, refresh, service tokens) with the matching private key.
        jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
        log_level="WARNING",
        **extra,
    )


def bearer_headers(
    *roles: Role,
    accounts: tuple[str, ...] = (OWN,),
    subject: str | None = None,
    ttl_s: int = 900,
    scopes: frozenset[str] | None = None,
    grants: Mapping[Role, Iterable[str]] | None = None,
) -> dict[str, str]:
    """A bearer token for `roles` on `accounts` (or per-role `grants`) with the roles' default scopes (or
    `scopes`), as if the user had just passed password + TOTP (so that what is checked is the role, the scope and
    the account, not the freshness of the second factor)."""
    if not roles:
        return {}
    issuer = TokenIssuer(private_key_pem(KEY), "aether", "aether-platform")
    token = issuer.issue(
        subject or f"s2-{'-'.join(roles)}",
        list(roles),
        scopes=default_scopes(roles) if scopes is None else scopes,
        accounts=list(accounts),
        grants=grants,
        amr=["otp", "pwd"],
        auth_time=datetime.now(UTC),
        ttl_s=ttl_s,
    )
    return {"Authorization": f"Bearer {token}"}


SUPERVISOR = (Role.ADMIN, Role.DIRECTOR, Role.RISK, Role.OPERATOR)


@asynccontextmanager
async def _running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started and ready (the paper venue answers 503 until its books are restored, the OMS until it holds
    the controls): what is measured is access, not start-up."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://s2") as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=60, message="service ready before the matrix")
            yield client


Seeds = dict[str, dict[str, dict[str, str]]]  # path parameter -> account -> {"id", ...seed fields}


async def _seed(service: str, client: httpx.AsyncClient) -> Seeds:
    """Objects the matrix addresses by id, one per account, created by a principal outside the matrix."""
    if service == "oms":
        return await _seed_orders(client)
    if service == "hitl":
        return await _seed_approval_requests(client)
    return {}


async def _seed_approval_requests(client: httpx.AsyncClient) -> Seeds:
    requester = bearer_headers(Role.OPERATOR, accounts=("*",), subject="s2-requester")
    seeds: dict[str, dict[str, str]] = {}
    for account in (OWN, FOREIGN):
        body = {"subject_type": "manual_trade", "subject_id": f"s2-seed-{account}", "account_id": account}
        response = await client.post("/hitl/requests", json={**body, "payload": {"s2": account}}, headers=requester)
        assert response.status_code == 201, response.text
        created = response.json()
        seeds[account] = {"id": created["request_id"], "payload_hash": created["payload_hash"]}
    return {"request_id": seeds}


async def _seed_orders(client: httpx.AsyncClient) -> Seeds:
    admin, trader = bearer_headers(Role.ADMIN, accounts=("*",)), bearer_headers(Role.OPERATOR, accounts=("*",))
    order_ids: dict[str, dict[str, str]] = {}
    for account in (OWN, FOREIGN):
        deposit = {"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex}
        response = await client.post(f"/accounts/{account}/paper/deposits", json=deposit, headers=admin)
        assert response.status_code in (200, 201), response.text
        order = {
            "account_id": account,
            "client_order_id": f"s2-seed-{uuid.uuid4().hex[:12]}",
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "limit",
            "quantity": "0.001",
            "limit_price": "1000",
        }
        response = await client.post("/orders", json=order, headers=trader)
        assert response.status_code == 201, response.text
        order_ids[account] = {"id": response.json()["order_id"]}
    return {"order_id": order_ids}


def _expected(rule: Rule, caller: Caller | None, side: str) -> str:
    if rule.roles is None:
        return "allowed"
    if caller is None:
        return "401"
    admitted = rule.roles.intersection(caller.roles)
    if not admitted or (rule.scope is not None and rule.scope not in caller.scopes):
        return "403"
    # Only the roles the route admitted count for the account: another role's wider grant does not widen them.
    if side == "foreign" and admitted.isdisjoint(caller.wide):
        return str(rule.foreign)
    return "allowed"


def _request_parts(
    path: str, rule: Rule, account: str, objects: Seeds
) -> tuple[str, dict[str, str], dict[str, Any] | None]:
    seed: dict[str, str] = {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "account_id":
            return account
        seed.update(objects.get(name, {}).get(account, {"id": uuid.uuid4().hex}))
        return seed["id"]

    url = re.sub(r"\{([a-z_]+)\}", fill, path)
    query = dict(rule.query)
    if rule.account == "query":
        query["account_id"] = account
    body = None
    if rule.body is not None:
        body = rule.body(account, seed) if len(inspect.signature(rule.body).parameters) == 2 else rule.body(account)
    return url, query, body


async def _prepare(client: httpx.AsyncClient, rule: Rule, account: str) -> None:
    if rule.prepare is None:
        return
    method, url, body = rule.prepare(account)
    response = await client.request(method, url, json=body, headers=bearer_headers(*SUPERVISOR, accounts=("*",)))
    assert response.status_code < 300, f"preparing {method} {url}: {response.status_code} {response.text}"


async def _cells(service: str, client: httpx.AsyncClient, app: FastAPI) -> list[Cell]:
    policy = POLICY[service]
    documented = {
        (method.upper(), path): frozenset(int(status) for status in operation.get("responses", {}) if status.isdigit())
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if path not in PUBLIC_PROBES
    }
    routes = set(documented)
    assert routes == set(policy), (
        f"{service}: routes without a policy {sorted(routes - set(policy))}, "
        f"policy for missing routes {sorted(set(policy) - routes)}"
    )
    objects = await _seed(service, client)
    cells: list[Cell] = []
    for method, path in sorted(routes):
        rule = policy[(method, path)]
        sides = ("own", "foreign") if rule.account else ("-",)
        for caller in (None, *CALLERS):
            for side in sides:
                account = FOREIGN if side == "foreign" else OWN
                url, query, body = _request_parts(path, rule, account, objects)
                await _prepare(client, rule, account)
                headers = caller.headers() if caller is not None else {}
                response = await client.request(method, url, params=query, json=body, headers=headers)
                expected = _expected(rule, caller, side)
                label = caller.label if caller is not None else None
                cells.append(
                    Cell(service, method, path, label, side, expected, response.status_code, documented[(method, path)])
                )
    return cells


async def _approval_policy_off(redis: Redis) -> None:
    """Access, not the approval flow, is measured here: the accounts' policies let limit raises and resumes from
    HALTED through at once (without a mirror the risk service holds them for a director: tests/reliability S9)."""
    for account in (OWN, FOREIGN):
        value = {
            "account_id": account,
            "version": 1,
            "created_at": "2026-01-01T00:00:00+00:00",
            "limit_raise": False,
            "resume_from_halted": False,
        }
        await redis.set(f"hitl:policy:account:{account}", json.dumps(value))


async def test_s2_every_route_role_and_account_matches_the_policy(
    settings: AetherSettings, s2_database_url: str, reliability_seed: int, write_reliability_record: RecordWriter
) -> None:
    redis = Redis.from_url(re.sub(r"/\d+$", f"/{REDIS_DB}", settings.redis_url.get_secret_value()))
    await redis.flushdb()
    cells: list[Cell] = []
    try:
        for service in POLICY:
            if service == "risk":
                await _approval_policy_off(redis)
            async with open_controls(settings.kafka_bootstrap) as controls:  # the OMS's, the defaults published
                extra = controls.settings if service == "oms" else {}
                app = importlib.import_module(f"services.{service}.app").create_app(
                    service_settings(service, settings, s2_database_url, **extra)
                )
                async with _running(app) as client:
                    cells.extend(await _cells(service, client, app))
    finally:
        await redis.flushdb()
        await redis.aclose()
    mismatches = [cell for cell in cells if not cell.matches]
    protected = [cell for cell in cells if cell.role is None and cell.expected == "401"]
    write_reliability_record(
        {
            "id": "S2",
            "seed": reliability_seed,
            "cases": len(cells),
            "violations": len(mismatches),
            "routes": len({(cell.service, cell.method, cell.path) for cell in cells}),
            "callers": len(CALLERS),
            "role_pairs": sum("+" in caller.label for caller in CALLERS),
            "narrowed_service_identities": sum(caller.label.startswith("service[") for caller in CALLERS),
            "cells_matching_pct": round(100 * (len(cells) - len(mismatches)) / len(cells), 2),
            "unauthenticated_401_pct": round(100 * sum(c.actual == 401 for c in protected) / len(protected), 2),
            "first_mismatches": [
                f"{c.service} {c.method} {c.path} role={c.role} {c.side}: expected {c.expected}, got {c.actual}"
                for c in mismatches[:20]
            ],
        }
    )
    assert not mismatches, mismatches[:20]
