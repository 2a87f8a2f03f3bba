"""Hedge service against real PostgreSQL and Kafka, what people set: overrides that survive a restart with
their history and audit, who may set them, bad overrides refused naming the field; per-account policies,
versioned and audited, contradictions refused.

Recommendations, hedge commands and the NAV are in test_hedge_api_signals.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.auth.roles import Role
from tests.kit.auth import token
from tests.kit.factories import account_id
from tests.kit.hedge import DIRECTOR, OPERATOR, RISK, T0, VIEWER, HedgeFactory

# --- overrides ---------------------------------------------------------------------------------------------


async def test_override_survives_a_restart_with_its_history_and_audit(
    start_hedge: HedgeFactory, hedge_database_url: str
) -> None:
    account = account_id()
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    async with start_hedge() as hedge:
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "100")
        first = {"target_fraction": "0.3", "reason": "event risk into FOMC", "expires_at": expires}
        response = await hedge.client.put(f"/hedge/overrides/{account}", json=first, headers=RISK)
        assert response.status_code == 200, response.text
        second = {**first, "target_fraction": "0.45", "reason": "widen before the print"}
        response = await hedge.client.put(f"/hedge/overrides/{account}", json=second, headers=DIRECTOR)
        assert response.status_code == 200, response.text
        assert response.json()["effective_target"] == "0.45"

    async with start_hedge() as hedge:  # a new app on the same database
        status = await hedge.status(account)
        assert status["override"]["target_fraction"] == "0.45"
        assert status["override"]["active"] is True
        assert status["override"]["set_by"] == "user:alice"
        assert status["effective_target"] == "0.45"
        assert status["peak_nav"] == "10000"
        assert status["computed_target"] == "0"

        response = await hedge.client.request(
            "DELETE", f"/hedge/overrides/{account}", json={"reason": "print is out"}, headers=RISK
        )
        assert response.status_code == 200, response.text
        assert response.json()["override"] is None
        assert response.json()["effective_target"] == "0"
        history = (await hedge.client.get(f"/hedge/overrides/{account}/history", headers=VIEWER)).json()

    assert [(h["action"], h["target_fraction"], h["previous_fraction"]) for h in history] == [
        ("clear", None, "0.45"),
        ("set", "0.45", "0.3"),
        ("set", "0.3", None),
    ]
    assert [h["reason"] for h in history] == ["print is out", "widen before the print", "event risk into FOMC"]
    assert all(h["actor"] == "user:alice" for h in history)
    engine = create_async_engine(hedge_database_url)
    try:
        async with engine.connect() as conn:
            actions = (
                await conn.execute(
                    text("SELECT action FROM audit.audit_log WHERE chain = :chain ORDER BY position"),
                    {"chain": f"hedge:{account}"},
                )
            ).scalars()
            assert [a for a in actions if a.startswith("hedge.override")] == [
                "hedge.override_set",
                "hedge.override_set",
                "hedge.override_clear",
            ]
    finally:
        await engine.dispose()


async def test_overrides_need_risk_or_director_and_a_granted_account(start_hedge: HedgeFactory) -> None:
    account = account_id()
    body = {
        "target_fraction": "0.2",
        "reason": "test run",
        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    async with start_hedge() as hedge:
        for headers in (OPERATOR, VIEWER, token(Role.ADMIN)):
            response = await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=headers)
            assert response.status_code == 403
        foreign = token(Role.RISK, accounts=("someone-else",))
        assert (await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=foreign)).status_code == 403
        assert (await hedge.client.get(f"/hedge/status/{account}", headers=foreign)).status_code == 403
        assert (await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=RISK)).status_code == 200
        listed = (await hedge.client.get("/hedge/status", headers=token(Role.AUDITOR, accounts=(account,)))).json()
        assert [row["account_id"] for row in listed] == [account]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"target_fraction": "1.5"}, "target_fraction"),
        ({"target_fraction": "-0.1"}, "target_fraction"),
        ({"target_fraction": 0.2}, "target_fraction"),
        ({"reason": ""}, "reason"),
        ({"expires_at": "2020-01-01T00:00:00+00:00"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"surprise": "x"}, "surprise"),
    ],
)
async def test_bad_overrides_are_422_naming_the_field(
    start_hedge: HedgeFactory, change: dict[str, Any], field: str
) -> None:
    body = {"target_fraction": "0.2", "reason": "test run", "expires_at": "2099-01-01T00:00:00+00:00", **change}
    async with start_hedge() as hedge:
        response = await hedge.client.put(f"/hedge/overrides/{account_id()}", json=body, headers=RISK)
    assert response.status_code == 422, response.text
    assert field in response.text


# --- per-account policy ------------------------------------------------------------------------------------

POLICY = {
    "vol_weight": "0.5",
    "drawdown_weight": "0.5",
    "vol_saturation": "0.02",
    "drawdown_saturation": "0.2",
    "floor": "0.3",
    "cap": "0.6",
    "band": "0.05",
    "pause_drawdown": "0.05",
    "reduce_only_drawdown": "0.1",
    "flatten_drawdown": None,
    "rearm_hysteresis": "0.02",
    "reason": "tighter for the treasury account",
}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        # A value out of its own range breaks the schema (request validation); a contradiction between two
        # schema-valid fields is the domain's `invalid_policy`.
        ({"floor": "0.7", "cap": "0.6"}, "cap", "invalid_policy"),
        ({"vol_weight": "-1"}, "vol_weight", "validation_error"),
        ({"drawdown_saturation": "0"}, "drawdown_saturation", "validation_error"),
        ({"band": "1"}, "band", "validation_error"),
        ({"pause_drawdown": "0.2", "reduce_only_drawdown": "0.1"}, "reduce_only_drawdown", "invalid_policy"),
        ({"flatten_drawdown": "0.08"}, "flatten_drawdown", "invalid_policy"),
        ({"cap": "1.2"}, "cap", "validation_error"),
    ],
)
async def test_contradicting_policies_are_422_naming_the_field(
    start_hedge: HedgeFactory, change: dict[str, Any], field: str, code: str
) -> None:
    account = account_id()
    async with start_hedge() as hedge:
        response = await hedge.client.put(f"/hedge/policies/{account}", json={**POLICY, **change}, headers=RISK)
        assert response.status_code == 422, response.text
        policy = (await hedge.client.get(f"/hedge/policies/{account}", headers=RISK)).json()
    error = response.json()["error"]
    assert (error["code"], error["details"]["field"]) == (code, field)
    assert policy["version"] == 0


async def test_account_policy_is_versioned_audited_and_drives_the_target(
    start_hedge: HedgeFactory, hedge_database_url: str
) -> None:
    account = account_id()
    async with start_hedge(orders_enabled=False) as hedge:
        default = (await hedge.client.get(f"/hedge/policies/{account}", headers=VIEWER)).json()
        assert (default["version"], default["floor"], default["cap"]) == (0, "0", "0.8")
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "10")
        assert (await hedge.status(account))["computed_target"] == "0"
        assert (await hedge.client.put(f"/hedge/policies/{account}", json=POLICY, headers=OPERATOR)).status_code == 403
        response = await hedge.client.put(f"/hedge/policies/{account}", json=POLICY, headers=RISK)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1
        status = await hedge.status(account)
        assert (status["computed_target"], status["policy_version"]) == ("0.3", 1)
        response = await hedge.client.put(
            f"/hedge/policies/{account}", json={**POLICY, "band": "0.1"}, headers=DIRECTOR
        )
        assert response.json()["version"] == 2
    async with start_hedge(orders_enabled=False) as hedge:
        policy = (await hedge.client.get(f"/hedge/policies/{account}", headers=VIEWER)).json()
        assert (policy["version"], policy["band"], policy["set_by"]) == (2, "0.1", "user:alice")
        assert (await hedge.status(account))["rebalance_band"] == "0.1"
    engine = create_async_engine(hedge_database_url)
    try:
        async with engine.connect() as conn:
            details = (
                await conn.execute(
                    text(
                        "SELECT details FROM audit.audit_log WHERE chain = :chain AND action = 'hedge.policy_set'"
                        " ORDER BY position"
                    ),
                    {"chain": f"hedge:{account}"},
                )
            ).scalars()
            assert [(d["version"], d["policy"]["band"], (d["previous"] or {}).get("band")) for d in details] == [
                (1, "0.05", None),
                (2, "0.1", "0.05"),
            ]
    finally:
        await engine.dispose()
