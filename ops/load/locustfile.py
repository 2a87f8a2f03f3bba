"""Load test of the local platform with Locust: orders, cancels, reads and approvals (README "Load test").

    aether up &                                   # the platform on its catalog ports
    locust -f ops/load/locustfile.py --headless -u 20 -r 5 -t 60s

Tokens are minted with the local signing key (`$AETHER_HOME/keys/private.pem`, which `aether up` creates): an
operator for orders and reads, a director with a fresh TOTP proof for approvals. Each route is named by its
template, so Locust's table and the summary printed at the end (RPS, p50, p99 per route) group them.
`AETHER_LOAD_ACCOUNT` picks the paper account (default desk-1, as in the README walkthrough), funded once
with the bootstrap admin token (`$AETHER_HOME/admin.token`). Every user is
one principal: keep the users within the rate limits (`AETHER_RATE_LIMIT_*`) or expect 429s, which are reported
as failures.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

from shared.auth.roles import Role, default_scopes
from shared.auth.tokens import TokenIssuer
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.service_catalog import service

ACCOUNT = os.environ.get("AETHER_LOAD_ACCOUNT", "desk-1")
TOKEN_TTL_S = 3_600


def _home() -> Path:
    return Path(os.environ.get("AETHER_HOME") or Path(__file__).resolve().parents[2] / ".aether")


def _issuer() -> TokenIssuer:
    settings = AetherSettings()
    key = (_home() / "keys" / "private.pem").read_bytes()
    return TokenIssuer(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def _bearer(subject: str, role: Role, *, otp: bool = False) -> dict[str, str]:
    roles = [role]
    now = utc_now()
    extra: dict[str, Any] = {"amr": ["pwd", "otp"], "auth_time": now, "now": now} if otp else {}
    token = _issuer().issue(
        subject, roles, scopes=default_scopes(roles), accounts=[ACCOUNT], ttl_s=TOKEN_TTL_S, **extra
    )
    return {"Authorization": f"Bearer {token}"}


class Trader(HttpUser):
    """Places limit orders far from the market, cancels some, and reads orders, positions and balances."""

    host = service("oms").local_url
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.headers = _bearer(f"load-trader-{uuid.uuid4().hex[:8]}", Role.OPERATOR)
        self.open_orders: list[str] = []
        # The paper account exists from its first deposit; one reference, so every user's call deposits once.
        admin = {"Authorization": f"Bearer {(_home() / 'admin.token').read_text().strip()}"}
        deposit = {"asset": "USD", "amount": "100000000", "reference": "load-seed"}
        self.client.post(
            f"/accounts/{ACCOUNT}/paper/deposits", json=deposit, headers=admin, name="POST paper deposit (setup)"
        )

    @task(4)
    def place(self) -> None:
        body = {
            "account_id": ACCOUNT,
            "client_order_id": f"load-{uuid.uuid4().hex}",
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "limit",
            "quantity": "0.001",
            "limit_price": str(random.randint(1_000, 2_000)),  # noqa: S311 - a price, not a secret
        }
        with self.client.post(
            "/orders", json=body, headers=self.headers, name="POST /orders", catch_response=True
        ) as r:
            if r.status_code in (200, 201):
                self.open_orders.append(r.json()["order_id"])
                r.success()

    @task(2)
    def cancel(self) -> None:
        if not self.open_orders:
            return
        order_id = self.open_orders.pop(0)
        self.client.post(f"/orders/{order_id}/cancel", headers=self.headers, name="POST /orders/{id}/cancel")

    @task(4)
    def read(self) -> None:
        self.client.get(f"/orders?account_id={ACCOUNT}", headers=self.headers, name="GET /orders")
        self.client.get(f"/positions?account_id={ACCOUNT}", headers=self.headers, name="GET /positions")
        self.client.get(f"/balances?account_id={ACCOUNT}", headers=self.headers, name="GET /balances")


class Director(HttpUser):
    """Lists pending approval requests and approves the first with the payload hash it was shown."""

    host = service("hitl").local_url
    wait_time = between(0.2, 0.5)

    def on_start(self) -> None:
        self.headers = _bearer(f"load-director-{uuid.uuid4().hex[:8]}", Role.DIRECTOR, otp=True)

    @task
    def approve(self) -> None:
        answer = self.client.get("/hitl/requests?status=pending", headers=self.headers, name="GET /hitl/requests")
        if answer.status_code != 200:
            return
        pending = answer.json().get("items", [])
        if pending:
            request = pending[0]
            self.client.post(
                f"/hitl/requests/{request['request_id']}/approve",
                json={"payload_hash": request["payload_hash"], "reason": "load test"},
                headers=self.headers,
                name="POST /hitl/requests/{id}/approve",
            )


def _summary(environment: Environment, **_: Any) -> None:
    """One line per route: requests, RPS, p50 and p99 in ms, failures."""
    stats = environment.stats
    print(f"{'route':45} {'requests':>9} {'rps':>8} {'p50_ms':>8} {'p99_ms':>8} {'failures':>9}")  # noqa: T201
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        print(  # noqa: T201
            f"{entry.name:45} {entry.num_requests:>9} {entry.total_rps:>8.1f} "
            f"{entry.get_response_time_percentile(0.5):>8.0f} {entry.get_response_time_percentile(0.99):>8.0f} "
            f"{entry.num_failures:>9}"
        )


events.quitting.add_listener(_summary)  # type: ignore[no-untyped-call]  # locust is untyped here
