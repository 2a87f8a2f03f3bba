"""Who may call what: the access policy S2 checks every route of every service against.

Written by hand from the issues and docs (not derived from the code under test): a route missing here fails S2,
so a new route cannot ship without a stated policy.

`roles`: the roles that pass (the principal holds at least one); None marks a public route.
`scope`: the scope the token must carry besides the role (docs/security.md); None: any signed-in caller.
`account`: where the route names the account it acts on: "path" (`{account_id}`), "query" (`?account_id=`),
"body" (`account_id` in the JSON body), "object" (an object of that account in the path, seeded by the test),
or None (no account: global or per-principal).
`foreign`: the status a principal gets for another account's data: 403, or 404 where the API hides existence.
`body`: a valid JSON body for the account (so that the account check, not body validation, decides); a
builder taking a second argument also gets the seeded object (e.g. an approval request's payload hash).
`prepare`: a request (method, path, body) sent with an all-powerful token before each cell, to put the account
in the state the route starts from (trading-state transitions depend on the current state).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.auth.roles import Role

Body = Callable[..., dict[str, Any]]
Prepare = Callable[[str], tuple[str, str, dict[str, Any]]]

EVERYONE = frozenset(Role)
READERS = frozenset({Role.VIEWER, Role.OPERATOR, Role.RISK, Role.DIRECTOR, Role.ADMIN, Role.AUDITOR, Role.SERVICE})


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role] | None
    scope: str | None = None
    account: str | None = None
    foreign: int = 403
    body: Body | None = None
    query: dict[str, str] = field(default_factory=dict)
    prepare: Prepare | None = None


def _order(account: str) -> dict[str, Any]:
    return {
        "account_id": account,
        "client_order_id": f"s2-{account}",
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": "0.001",
        "limit_price": "1000",
    }


BACKTESTERS = frozenset({Role.OPERATOR, Role.DIRECTOR})


def _backtest(account: str) -> dict[str, Any]:
    """Past authorization a business rule refuses it (no such strategy): S2 starts no run."""
    return {"strategy": "s2-none", "source": {"bar_files": ["none.csv"]}}


def info(service: str) -> dict[tuple[str, str], Rule]:
    """`GET /<service>/info`: any authenticated principal."""
    return {("GET", f"/{service}/info"): Rule(EVERYONE)}


OMS: dict[tuple[str, str], Rule] = {
    **info("oms"),
    ("POST", "/orders"): Rule(
        frozenset({Role.OPERATOR, Role.SERVICE}), scope="orders:write", account="body", body=_order
    ),
    ("GET", "/orders"): Rule(READERS, scope="orders:read", account="query"),
    ("GET", "/orders/{order_id}"): Rule(READERS, scope="orders:read", account="object", foreign=404),
    ("POST", "/orders/{order_id}/cancel"): Rule(
        frozenset({Role.OPERATOR, Role.SERVICE}), scope="orders:write", account="object", foreign=404
    ),
    ("GET", "/fills"): Rule(READERS, scope="orders:read", account="query"),
    ("GET", "/positions"): Rule(READERS, scope="accounts:read", account="query"),
    ("GET", "/balances"): Rule(READERS, scope="accounts:read", account="query"),
    ("POST", "/accounts/{account_id}/paper/deposits"): Rule(
        frozenset({Role.OPERATOR, Role.ADMIN}),
        scope="funds:write",
        account="path",
        body=lambda account: {"asset": "USD", "amount": "10", "reference": uuid.uuid4().hex},
    ),
    ("POST", "/accounts/{account_id}/paper/withdrawals"): Rule(
        frozenset({Role.OPERATOR, Role.ADMIN}),
        scope="funds:write",
        account="path",
        body=lambda account: {"asset": "USD", "amount": "10", "reference": uuid.uuid4().hex},
    ),
}

HEDGE_STEWARDS = frozenset({Role.RISK, Role.DIRECTOR})
HEDGE_POLICY = {
    "vol_weight": "0.5",
    "drawdown_weight": "0.5",
    "vol_saturation": "0.02",
    "drawdown_saturation": "0.2",
    "floor": "0",
    "cap": "0.8",
    "band": "0.05",
    "pause_drawdown": "0.05",
    "reduce_only_drawdown": "0.1",
    "flatten_drawdown": "0.2",
    "rearm_hysteresis": "0.02",
    "reason": "s2 check",
}

HEDGE: dict[tuple[str, str], Rule] = {
    **info("hedge"),
    ("GET", "/hedge/status"): Rule(READERS, scope="hedge:read"),
    ("GET", "/hedge/status/{account_id}"): Rule(READERS, scope="hedge:read", account="path"),
    ("PUT", "/hedge/overrides/{account_id}"): Rule(
        HEDGE_STEWARDS,
        scope="hedge:write",
        account="path",
        body=lambda account: {"target_fraction": "0.2", "reason": "s2 check", "expires_at": "2099-01-01T00:00:00Z"},
    ),
    ("DELETE", "/hedge/overrides/{account_id}"): Rule(
        HEDGE_STEWARDS, scope="hedge:write", account="path", body=lambda account: {"reason": "s2 check"}
    ),
    ("GET", "/hedge/overrides/{account_id}/history"): Rule(READERS, scope="hedge:read", account="path"),
    ("GET", "/hedge/recommendations"): Rule(READERS, scope="hedge:read"),
    ("POST", "/hedge/recommendations/{account_id}/rearm"): Rule(
        HEDGE_STEWARDS, scope="hedge:write", account="path", body=lambda account: {"reason": "s2 check"}
    ),
    ("GET", "/hedge/policies/{account_id}"): Rule(READERS, scope="hedge:read", account="path"),
    ("PUT", "/hedge/policies/{account_id}"): Rule(
        HEDGE_STEWARDS, scope="hedge:write", account="path", body=lambda account: HEDGE_POLICY
    ),
}

HITL_GOVERNORS = frozenset({Role.DIRECTOR, Role.ADMIN})
HITL_REQUESTERS = frozenset({Role.OPERATOR, Role.RISK, Role.SERVICE, Role.DIRECTOR, Role.ADMIN})
HITL_READERS = frozenset({Role.DIRECTOR, Role.ADMIN, Role.AUDITOR})


def _vote(seed: dict[str, str]) -> dict[str, Any]:
    return {"payload_hash": seed["payload_hash"], "reason": "s2 check"}


HITL: dict[tuple[str, str], Rule] = {
    **info("hitl"),
    ("GET", "/hitl/policies/{account_id}"): Rule(HITL_GOVERNORS, scope="approvals:read", account="path"),
    ("PUT", "/hitl/policies/{account_id}"): Rule(
        HITL_GOVERNORS, scope="approval_policies:write", account="path", body=lambda account: {"quorum": 1}
    ),
    ("POST", "/hitl/policies/{account_id}/evaluate"): Rule(
        HITL_REQUESTERS,
        scope="approvals:request",
        account="path",
        body=lambda account: {"kind": "order", "notional": "10"},
    ),
    ("POST", "/hitl/requests"): Rule(
        HITL_REQUESTERS,
        scope="approvals:request",
        account="body",
        body=lambda account: {
            "subject_type": "manual_trade",
            "subject_id": f"s2-{account}",
            "account_id": account,
            "payload": {"s2": True},
        },
    ),
    ("GET", "/hitl/requests"): Rule(HITL_READERS, scope="approvals:read", account="query"),
    # Seeded by the test: one request per account, raised by another principal (no self-approval).
    ("GET", "/hitl/requests/{request_id}"): Rule(HITL_READERS, scope="approvals:read", account="object", foreign=404),
    # Voting: a director (tokens carry a fresh TOTP proof); the seeded request's payload hash.
    ("POST", "/hitl/requests/{request_id}/approve"): Rule(
        frozenset({Role.DIRECTOR}),
        scope="approvals:write",
        account="object",
        foreign=404,
        body=lambda account, seed: _vote(seed),
    ),
    ("POST", "/hitl/requests/{request_id}/reject"): Rule(
        frozenset({Role.DIRECTOR}),
        scope="approvals:write",
        account="object",
        foreign=404,
        body=lambda account, seed: _vote(seed),
    ),
    ("GET", "/hitl/notifications"): Rule(EVERYONE),
}

ADMIN_ONLY = frozenset({Role.ADMIN})
KEY_HOLDERS = frozenset({Role.ADMIN, Role.DIRECTOR})
ACCOUNTS: dict[tuple[str, str], Rule] = {
    **info("accounts"),
    ("POST", "/auth/login"): Rule(None),
    ("POST", "/auth/refresh"): Rule(None),
    ("POST", "/auth/service-token"): Rule(None),
    ("POST", "/auth/logout"): Rule(EVERYONE),
    ("POST", "/auth/step-up"): Rule(EVERYONE),
    ("POST", "/auth/totp/enroll"): Rule(EVERYONE),
    ("POST", "/auth/totp/confirm"): Rule(EVERYONE),
    ("GET", "/users"): Rule(ADMIN_ONLY, scope="users:read"),
    ("POST", "/users"): Rule(ADMIN_ONLY, scope="users:write"),
    ("GET", "/users/{user_id}"): Rule(ADMIN_ONLY, scope="users:read"),
    ("PUT", "/users/{user_id}/roles"): Rule(ADMIN_ONLY, scope="users:write"),
    ("POST", "/users/{user_id}/grants"): Rule(ADMIN_ONLY, scope="users:write"),
    ("DELETE", "/users/{user_id}/grants/{account_id}"): Rule(ADMIN_ONLY, scope="users:write"),
    ("POST", "/service-identities"): Rule(ADMIN_ONLY, scope="users:write"),
    ("POST", "/accounts"): Rule(ADMIN_ONLY, scope="accounts:write"),
    ("GET", "/accounts"): Rule(READERS, scope="accounts:read"),
    ("GET", "/accounts/{account_id}"): Rule(READERS, scope="accounts:read", account="path", foreign=404),
    ("PUT", "/accounts/{account_id}/credentials"): Rule(
        KEY_HOLDERS,
        scope="keys:write",
        account="path",
        body=lambda account: {"api_key": "s2-key-0001", "api_secret": "s2-secret-0001"},
    ),
    ("GET", "/accounts/{account_id}/credentials"): Rule(KEY_HOLDERS, scope="keys:read", account="path"),
}

# Limits and trading state (docs/risk.md): readers see them, `risk` sets limits, risk/director switch; leaving
# HALTED is for directors only, so each switch starts from a known state.
SWITCHERS = frozenset({Role.RISK, Role.DIRECTOR})


def _switch(account: str) -> dict[str, Any]:
    return {"scope": "account", "account_id": account, "reason": "s2 check"}


def _from(route: str) -> Prepare:
    return lambda account: ("POST", route, _switch(account))


RISK_STATE: dict[tuple[str, str], Rule] = {
    ("GET", "/risk/limits/{account_id}"): Rule(READERS, scope="risk:read", account="path"),
    ("PUT", "/risk/limits/{account_id}"): Rule(
        frozenset({Role.RISK}), scope="risk:write", account="path", body=lambda account: {"reason": "s2 check"}
    ),
    ("GET", "/risk/trading-state"): Rule(READERS, scope="risk:read"),
    ("POST", "/risk/kill-switch"): Rule(
        SWITCHERS, scope="kill_switch:write", account="body", body=_switch, prepare=_from("/risk/resume")
    ),
    ("POST", "/risk/safe-mode"): Rule(
        SWITCHERS, scope="kill_switch:write", account="body", body=_switch, prepare=_from("/risk/resume")
    ),
    # From REDUCING: risk or director may resume (from HALTED only a director: tests/integration/test_risk_api.py).
    ("POST", "/risk/resume"): Rule(
        SWITCHERS, scope="kill_switch:write", account="body", body=_switch, prepare=_from("/risk/safe-mode")
    ),
}

# Exit brackets (docs/exits.md): readers see them, operators/risk move stops (lowering needs risk), risk sets policies.
RISK_EXITS: dict[tuple[str, str], Rule] = {
    ("GET", "/risk/exits"): Rule(READERS, scope="risk:read", account="query"),
    ("GET", "/risk/exits/{bracket_id}"): Rule(READERS, scope="risk:read", account="object", foreign=404),
    ("PATCH", "/risk/exits/{bracket_id}"): Rule(
        frozenset({Role.OPERATOR, Role.RISK}),
        scope="exits:write",
        account="object",
        foreign=404,
        body=lambda account: {"stop_loss": "1"},
    ),
    ("GET", "/risk/exit-policy/{account_id}"): Rule(READERS, scope="risk:read", account="path"),
    ("PUT", "/risk/exit-policy/{account_id}"): Rule(
        frozenset({Role.RISK}), scope="risk:write", account="path", body=lambda account: {}
    ),
}

# The paper venue process: the OMS's service identity alone (`venue:trade`), for the accounts its token grants.
VENUE = frozenset({Role.SERVICE})
PAPER: dict[tuple[str, str], Rule] = {
    **info("paper"),
    ("POST", "/v1/orders"): Rule(VENUE, scope="venue:trade", account="body", body=_order),
    ("GET", "/v1/accounts/{account_id}/orders/{client_order_id}"): Rule(VENUE, scope="venue:trade", account="path"),
    ("DELETE", "/v1/accounts/{account_id}/orders/{client_order_id}"): Rule(VENUE, scope="venue:trade", account="path"),
    ("GET", "/v1/accounts/{account_id}/open-orders"): Rule(VENUE, scope="venue:trade", account="path"),
    ("GET", "/v1/accounts/{account_id}/fills"): Rule(VENUE, scope="venue:trade", account="path"),
    ("GET", "/v1/accounts/{account_id}/balances"): Rule(VENUE, scope="venue:trade", account="path"),
    ("POST", "/v1/accounts/{account_id}/deposits"): Rule(
        VENUE,
        scope="venue:trade",
        account="path",
        body=lambda account: {"asset": "USD", "amount": "10", "reference": f"s2-{uuid.uuid4().hex}"},
    ),
    ("POST", "/v1/accounts/{account_id}/withdrawals"): Rule(
        VENUE,
        scope="venue:trade",
        account="path",
        body=lambda account: {"asset": "USD", "amount": "10", "reference": f"s2-{uuid.uuid4().hex}"},
    ),
    # Both ends must be granted to the token; the destination here is the path's account (refused by the venue
    # as a transfer to itself, after the access check this matrix is about).
    ("POST", "/v1/accounts/{account_id}/transfers"): Rule(
        VENUE,
        scope="venue:trade",
        account="path",
        body=lambda account: {
            "to_account_id": account,
            "asset": "USD",
            "amount": "10",
            "reference": f"s2-{uuid.uuid4().hex}",
        },
    ),
}

REPORT_DAYS = {"from": "2026-01-04", "to": "2026-01-05"}

POLICY: dict[str, dict[tuple[str, str], Rule]] = {
    "oms": OMS,
    "risk": {**info("risk"), **RISK_STATE, **RISK_EXITS},
    "hedge": HEDGE,
    "accounts": ACCOUNTS,
    "hitl": HITL,
    "reports": {
        **info("reports"),
        # The audit log and its anchors: auditors only (admins make the audited changes; docs/audit.md).
        ("GET", "/audit"): Rule(frozenset({Role.AUDITOR}), scope="audit:read"),
        ("GET", "/audit/anchors"): Rule(frozenset({Role.AUDITOR}), scope="audit:read"),
        # Reports of an account: any reader granted it (docs/reports.md); the firm view (no account) is for directors.
        **{
            ("GET", path): Rule(READERS, scope="reports:read", account="query", query=REPORT_DAYS)
            for path in ("/reports/pnl/daily_pct", "/reports/nav", "/reports/pnl", "/reports/fees")
        },
        ("GET", "/reports/ui/nav"): Rule(
            frozenset({Role.DIRECTOR}), scope="reports:read", account="query", query=REPORT_DAYS
        ),
        # Capital allocation (docs/reports.md): directors read it; setting targets and asking for a check also
        # needs the approval-policy scope, like the other settings that decide what directors must approve.
        ("GET", "/reports/allocation"): Rule(frozenset({Role.DIRECTOR}), scope="reports:read"),
        ("PUT", "/reports/allocation/targets"): Rule(
            frozenset({Role.DIRECTOR}),
            scope="approval_policies:write",
            body=lambda account: {
                "targets": [
                    {"account_id": account, "target_share": "0.5", "band": "0.05"},
                    {"account_id": f"{account}-other", "target_share": "0.5", "band": "0.05"},
                ]
            },
        ),
        ("POST", "/reports/allocation/check"): Rule(frozenset({Role.DIRECTOR}), scope="approval_policies:write"),
    },
    "analytics": {
        **info("analytics"),
        # Stored market data: every reader role with `market_data:read` (docs/marketdata.md).
        ("GET", "/analytics/candles"): Rule(READERS, scope="market_data:read", query={"symbol": "BTC/USD"}),
        ("GET", "/analytics/trades"): Rule(READERS, scope="market_data:read", query={"symbol": "BTC/USD"}),
        ("GET", "/analytics/book-snapshots"): Rule(READERS, scope="market_data:read", query={"symbol": "BTC/USD"}),
        ("GET", "/analytics/market-data/health"): Rule(READERS, scope="market_data:read"),
        # Market-wide anomalies for every reader; account-scoped ones (none are produced yet) by the token's grants.
        ("GET", "/analytics/anomalies"): Rule(READERS, scope="market_data:read"),
        ("GET", "/analytics/correlations"): Rule(READERS, scope="market_data:read", query={"symbols": "BTC/USD"}),
        ("GET", "/analytics/features"): Rule(
            READERS,
            scope="market_data:read",
            query={
                "symbol": "BTC/USD",
                "venue": "synthetic",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-01-02T00:00:00Z",
            },
        ),
    },
    "backtest": {
        **info("backtest"),
        # Backtests (docs/backtest.md): traders and directors submit, every reader reads.
        ("POST", "/v1/backtests"): Rule(BACKTESTERS, scope="backtests:write", body=_backtest),
        ("POST", "/v1/sweeps"): Rule(
            BACKTESTERS, scope="backtests:write", body=lambda account: {**_backtest(account), "grid": {"fast": [3]}}
        ),
        ("GET", "/v1/backtests/compare"): Rule(
            READERS, scope="backtests:read", query={"ids": f"{'0' * 32},{'1' * 32}"}
        ),
        **{
            ("GET", path): Rule(READERS, scope="backtests:read")
            for path in (
                "/v1/backtests/{run_id}",
                "/v1/backtests/{run_id}/result",
                "/v1/backtests/{run_id}/report",
                "/v1/sweeps/{sweep_id}",
            )
        },
    },
    "paper": PAPER,
}
