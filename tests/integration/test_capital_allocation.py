"""The capital allocator end to end (issue 17, "Allocation"), through Kafka and the real consumers of the OMS
(on the paper venue), the reports service and the approval service, against real PostgreSQL, Redis and Kafka:
a drifted allocation yields exactly one proposal; approved by a director, the transfer is recorded on both
accounts (OMS and venue balances, reports cash flows); rejected, nothing moves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.hitl.app import create_app as create_hitl_app
from services.oms.adapters import OmsAdapters, oms_adapters
from services.reports.app import create_app as create_reports_app
from services.reports.config import ReportsSettings
from shared.auth.keys import write_key_pair
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.domain.money import format_decimal
from shared.domain.types import AccountId
from shared.events.topics import HITL_DECISIONS
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import bearer, hitl_settings, running
from tests.kit.auth import jwt_settings, token
from tests.kit.oms import paper_oms, serving
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR)


def director_headers() -> dict[str, str]:
    """A director's headers with a TOTP proof made now (approving needs one under 120 s old)."""
    return bearer("dora", [Role.DIRECTOR])


# Three services and their Kafka consumer groups on a busy CI machine: joining a group alone can take seconds.
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def databases(database_url: str) -> Iterator[dict[str, str]]:
    with (
        own_database(database_url, "alloc_oms") as oms,
        own_database(database_url, "alloc_reports") as reports,
        own_database(database_url, "alloc_hitl") as hitl,
    ):
        yield {"oms": oms, "reports": reports, "hitl": hitl}


@dataclass
class Firm:
    oms: httpx.AsyncClient
    oms_adapters: OmsAdapters
    reports: httpx.AsyncClient
    hitl: httpx.AsyncClient
    oms_database: str


@pytest.fixture
async def firm(
    settings: AetherSettings,
    databases: dict[str, str],
    paper_market: PaperMarket,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Firm]:
    suffix = uuid.uuid4().hex[:10]
    allocation_topic = f"test.allocation.{suffix}.v1"
    keys = write_key_pair(tmp_path_factory.mktemp("anchor"))
    reports_settings = ReportsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(databases["reports"]),
        **jwt_settings(),
        log_level="WARNING",
        audit_anchor_private_key_file=Path(keys.private_path),
        audit_anchor_public_key_file=Path(keys.public_path),
        allocation_events_topic=allocation_topic,
        allocation_check_interval_s=0.3,
        # Only USD moves here: no marks or orders needed, so none of the earlier tests' backlog on those topics.
        order_events_topic=f"test.alloc-orders.{suffix}.v1",
        marketdata_book_topic=f"test.alloc-books.{suffix}.v1",
        marketdata_trade_topic=f"test.alloc-trades.{suffix}.v1",
    )
    hitl_app = create_hitl_app(
        hitl_settings(
            settings, databases["hitl"], allocation_events_topic=allocation_topic, decisions_topic=HITL_DECISIONS
        )
    )
    async with (
        paper_oms(settings, databases["oms"], paper_market, allocation_events_topic=allocation_topic) as (app, oms),
        serving(create_reports_app(reports_settings), "http://reports") as reports,
        running(hitl_app) as hitl,
    ):
        yield Firm(oms, oms_adapters(app.state.runtime), reports, hitl, databases["oms"])


async def funded(firm: Firm, usd: str) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    response = await firm.oms.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": usd, "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return account


async def usd(firm: Firm, account: str) -> tuple[str, str]:
    """The OMS ledger's USD total and the paper venue's."""
    response = await firm.oms.get("/balances", params={"account_id": account}, headers=OPERATOR)
    ledger = {row["asset"]: row["total"] for row in response.json()["items"]}["USD"]
    venue = {b.asset: b.total for b in await firm.oms_adapters.venue.balances(AccountId(account))}["USD"]
    return ledger, format_decimal(venue)


async def reported_nav(firm: Firm, account: str) -> str | None:
    today = datetime.now(UTC).date().isoformat()
    params = {"account_id": account, "from": today, "to": today}
    response = await firm.reports.get("/reports/nav", params=params, headers=director_headers())
    if response.status_code != 200:
        return None
    return str(response.json()["rows"][-1]["nav"])


async def wait_for_navs(firm: Firm, expected: dict[str, str]) -> None:
    async def seen() -> bool:
        return all([await reported_nav(firm, a) == nav for a, nav in expected.items()])

    await eventually(seen, timeout_s=TIMEOUT_S, message=f"reports NAVs {expected}")


async def open_request(firm: Firm, account: str, proposal_id: str) -> dict[str, Any]:
    async def opened() -> list[dict[str, Any]]:
        page = await firm.hitl.get("/hitl/requests", params={"account_id": account}, headers=director_headers())
        return [r for r in page.json()["items"] if r["subject_id"] == proposal_id and r["status"] == "pending"]

    (request,) = await eventually(opened, timeout_s=TIMEOUT_S, message="hitl request opened from the allocator's event")
    return request


async def proposals(firm: Firm) -> list[dict[str, Any]]:
    response = await firm.reports.get("/reports/allocation", headers=director_headers())
    assert response.status_code == 200, response.text
    return list(response.json()["proposals"])


async def cash_flows(database_url: str, reference: str) -> list[tuple[str, str, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT account_id, kind, amount::text FROM reports.cash_flows WHERE reference = :r"),
                {"r": reference},
            )
            return sorted((a, k, str(float(m))) for a, k, m in rows)
    finally:
        await engine.dispose()


async def set_targets(firm: Firm, shares: dict[str, str], band: str = "0.05") -> None:
    body = {"targets": [{"account_id": a, "target_share": s, "band": band} for a, s in shares.items()]}
    response = await firm.reports.put("/reports/allocation/targets", json=body, headers=director_headers())
    assert response.status_code == 200, response.text


async def test_a_drift_yields_one_proposal_approved_moves_rejected_does_not(
    firm: Firm, databases: dict[str, str]
) -> None:
    company, director = await funded(firm, "900"), await funded(firm, "100")
    await wait_for_navs(firm, {company: "900", director: "100"})
    await set_targets(firm, {company: "0.5", director: "0.5"})

    first = await firm.reports.post("/reports/allocation/check", headers=director_headers())
    assert first.status_code == 200, first.text
    proposal = first.json()
    assert (proposal["from_account_id"], proposal["to_account_id"], proposal["amount"]) == (company, director, "400")
    assert (proposal["drifted_account_id"], proposal["status"]) == (company, "proposed")
    again = await firm.reports.post("/reports/allocation/check", headers=director_headers())
    assert again.json()["proposal_id"] == proposal["proposal_id"]  # the drift persists: still exactly one
    assert [p["proposal_id"] for p in await proposals(firm)] == [proposal["proposal_id"]]

    request = await open_request(firm, company, proposal["proposal_id"])
    assert (request["subject_type"], request["requested_by"]) == ("capital_transfer", "service:reports-allocator")
    assert await usd(firm, company) == ("900", "900")  # nothing moves before the approval
    vote = {"payload_hash": request["payload_hash"]}
    approved = await firm.hitl.post(
        f"/hitl/requests/{request['request_id']}/approve", json=vote, headers=director_headers()
    )
    assert approved.status_code == 200, approved.text

    async def moved() -> bool:
        return await usd(firm, director) == ("500", "500")

    await eventually(moved, timeout_s=TIMEOUT_S, message="approved transfer applied")
    assert await usd(firm, company) == ("500", "500")
    await wait_for_navs(firm, {company: "500", director: "500"})
    reference = proposal["proposal_id"]
    assert await cash_flows(databases["reports"], reference) == sorted(
        [(company, "transfer_out", "400.0"), (director, "transfer_in", "400.0")]
    )

    async def closed(status: str) -> bool:
        newest = (await proposals(firm))[0]
        return bool(newest["status"] == status)

    await eventually(lambda: closed("approved"), timeout_s=TIMEOUT_S, message="proposal closed as approved")
    balanced = await firm.reports.post("/reports/allocation/check", headers=director_headers())
    assert balanced.json() is None  # 0.5 / 0.5 now: inside the band

    # New targets drift the other way: the periodic check proposes on its own; the directors reject it.
    await set_targets(firm, {company: "0.8", director: "0.2"})

    async def proposed_again() -> list[dict[str, Any]]:
        return [p for p in await proposals(firm) if p["status"] == "proposed"]

    (second,) = await eventually(proposed_again, timeout_s=TIMEOUT_S, message="the periodic check proposes")
    assert (second["from_account_id"], second["to_account_id"], second["amount"]) == (director, company, "300")
    request = await open_request(firm, director, second["proposal_id"])
    rejection = {"payload_hash": request["payload_hash"], "reason": "not this quarter"}
    rejected = await firm.hitl.post(
        f"/hitl/requests/{request['request_id']}/reject", json=rejection, headers=director_headers()
    )
    assert rejected.status_code == 200, rejected.text
    await eventually(lambda: closed("rejected"), timeout_s=TIMEOUT_S, message="proposal closed as rejected")

    async def refused_in_oms() -> bool:
        engine = create_async_engine(firm.oms_database)
        try:
            async with engine.connect() as conn:
                status = await conn.scalar(
                    text("SELECT status FROM oms.transfers WHERE reference = :r"), {"r": second["proposal_id"]}
                )
        finally:
            await engine.dispose()
        return bool(status == "rejected")

    await eventually(refused_in_oms, timeout_s=TIMEOUT_S, message="the OMS dropped the rejected transfer")
    assert await usd(firm, company) == ("500", "500")
    assert await usd(firm, director) == ("500", "500")
    assert await cash_flows(databases["reports"], second["proposal_id"]) == []
