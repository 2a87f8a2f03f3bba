"""R5, order states: reconciliation resends orders committed but never sent, closes orders the venue does not
know, cancels orders the OMS never placed, applies cancels, rejections, expiries and submit answers that were
lost, and repairs four accounts with four different divergences at once.

Harness and scenario world: r5_scenario.py. The module has a database of its own, because `reconcile()` walks
every account.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from shared.domain.types import (
    AccountId,
    ClientOrderId,
    OrderId,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    VenueOrderId,
)
from shared.venues.base import (
    AmbiguousOutcome,
    VenueAdapter,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
)
from shared.venues.paper import PaperVenue
from tests.fakes.faults import FaultyVenue
from tests.reliability.oms_crash_worker import ACTOR, QUOTE
from tests.reliability.r5_scenario import (
    DEPOSIT,
    USD,
    ZERO,
    Scenario,
    ScenarioFn,
    World,
    open_world,
    play,
    repairs,
    reserved,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def world(r5_database_url: str, redis_url: str) -> AsyncIterator[World]:
    async with open_world(r5_database_url, redis_url, list(SCENARIOS)) as world:
        yield world


class RejectionLost(FaultyVenue):
    """The venue refuses the order, and the refusal never reaches the OMS (it sees a timeout)."""

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        try:
            return await self.inner.submit(request)
        except VenueRejected as exc:
            raise AmbiguousOutcome(f"injected: the answer to {request.client_order_id} was lost") from exc


async def submitted_never_sent(s: Scenario) -> None:
    """Committed as SUBMITTED, never sent (crash before the venue call): resubmitted under the same client id."""
    oms = await s.boot()
    account = await s.account()
    await s.record_only(oms, account, "mkt-1", type="market", quantity="0.5", limit_price=None)
    assert await s.venue_order(account, "mkt-1") == {}

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"resubmitted": 1}
    order = await s.oms_order(account, "mkt-1")
    assert (order["status"], order["filled_quantity"]) == ("filled", Decimal("0.5"))
    venue_orders = await s.scalar(
        "SELECT count(*) FROM paper.orders WHERE account_id = :a AND client_order_id = 'mkt-1'", a=account
    )
    assert venue_orders == 1
    await s.agrees(oms)


async def unknown_to_venue_while_accepted(s: Scenario) -> None:
    """The OMS holds an ACCEPTED order the venue has never seen: canceled locally, its reservation released."""
    oms = await s.boot()
    account = await s.account()
    order_id = await s.record_only(oms, account, "ghost-1")
    ghost = VenueOrder(
        account_id=AccountId(account),
        client_order_id=ClientOrderId("ghost-1"),
        venue_order_id=VenueOrderId(f"GHOST-{uuid.uuid4().hex[:8]}"),
        symbol=Symbol(s.symbol),
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(1),
        filled_quantity=Decimal(0),
        status=VenueOrderStatus.OPEN,
        reason=None,
        updated_at=datetime.now(UTC),
    )
    assert await oms.service.apply_status(ghost)
    assert (await s.oms_order(account, "ghost-1"))["status"] == "accepted"
    assert reserved(await s.ledger(account), QUOTE) > 0

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"unknown_to_venue": 1}
    order = await s.oms_order(account, "ghost-1")
    assert (order["status"], order["reason"]) == ("canceled", "unknown_to_venue")
    assert reserved(await s.ledger(account), QUOTE) == 0
    assert await s.scalar("SELECT count(*) FROM oms.reservations WHERE order_id = :o", o=order_id) == 0
    assert await s.venue_order(account, "ghost-1") == {}
    found = await s.agrees(oms)
    assert found.canceled_unknown_to_venue == [f"{account}/ghost-1:canceled"]


async def external_order(s: Scenario) -> None:
    """An order at the venue that the OMS never placed: canceled at the venue and audited."""
    oms = await s.boot()
    account = await s.account()
    await oms.venue.submit(
        VenueOrderRequest(
            account_id=AccountId(account),
            client_order_id=ClientOrderId("not-ours-1"),
            symbol=Symbol(s.symbol),
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal(2),
            limit_price=Decimal("98.0"),
            trigger_price=None,
            time_in_force=TimeInForce.GTC,
            post_only=False,
        )
    )
    assert reserved(await s.venue_balances(account), QUOTE) > 0

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"external_canceled": 1}
    assert (await s.venue_order(account, "not-ours-1"))["status"] == "canceled"
    assert reserved(await s.venue_balances(account), QUOTE) == 0
    assert await s.oms_order(account, "not-ours-1") == {}
    audited = await s.audit("order.external_canceled", f"{account}/not-ours-1")
    assert [entry["actor"] for entry in audited] == ["system:oms"]
    assert (await s.ledger(account))[QUOTE] == (DEPOSIT, ZERO)
    await s.agrees(oms)


async def cancel_lost_venue_still_open(s: Scenario) -> None:
    """The OMS marked the order PENDING_CANCEL but the cancel never reached the venue: it is sent again."""
    faulty: list[FaultyVenue] = []

    def refusing(venue: PaperVenue) -> VenueAdapter:
        faulty.append(FaultyVenue(venue, random.Random(1), temporary_rate=1.0))
        faulty[0].enabled = False
        return faulty[0]

    account = await s.account()
    oms = await s.boot(wrap_venue=refusing)
    order_id = await s.place(oms, account, "buy-1")
    faulty[0].enabled = True
    await oms.service.cancel(OrderId(order_id), ACTOR)
    assert (await s.oms_order(account, "buy-1"))["status"] == "pending_cancel"
    assert (await s.venue_order(account, "buy-1"))["status"] == "open"

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {}  # a re-sent cancel is not counted by the report; the states show it
    assert (await s.oms_order(account, "buy-1"))["status"] == "canceled"
    assert (await s.venue_order(account, "buy-1"))["status"] == "canceled"
    assert reserved(await s.ledger(account), QUOTE) == 0
    await s.agrees(oms)


async def cancel_lost_venue_canceled(s: Scenario) -> None:
    """The cancel took effect at the venue but its answer was lost: the OMS applies the venue's CANCELED."""
    faulty: list[FaultyVenue] = []

    def timing_out(venue: PaperVenue) -> VenueAdapter:
        faulty.append(FaultyVenue(venue, random.Random(1), ambiguous_rate=1.0))
        faulty[0].enabled = False
        return faulty[0]

    account = await s.account()
    oms = await s.boot(wrap_venue=timing_out)
    order_id = await s.place(oms, account, "buy-1")
    faulty[0].enabled = True
    await oms.service.cancel(OrderId(order_id), ACTOR)
    assert (await s.oms_order(account, "buy-1"))["status"] == "pending_cancel"
    assert (await s.venue_order(account, "buy-1"))["status"] == "canceled"

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"statuses_applied": 1}
    assert (await s.oms_order(account, "buy-1"))["status"] == "canceled"
    assert reserved(await s.ledger(account), QUOTE) == 0
    await s.agrees(oms)


async def venue_rejected_unheard(s: Scenario) -> None:
    """The venue refused the order (post-only would cross) but the OMS saw a timeout and holds it SUBMITTED."""
    account = await s.account()
    oms = await s.boot(wrap_venue=lambda venue: RejectionLost(venue, random.Random(1)))
    await s.place(oms, account, "post-1", limit_price="100.0", post_only=True)
    assert (await s.oms_order(account, "post-1"))["status"] == "submitted"
    assert await s.venue_order(account, "post-1") == {}

    oms, report = await s.restart_and_reconcile()

    # Unknown to the venue while SUBMITTED: sent again under the same id, and refused again, definitively.
    assert repairs(report) == {"resubmitted": 1}
    order = await s.oms_order(account, "post-1")
    assert order["status"] == "rejected"
    assert order["reason"].startswith("post_only_would_cross")
    assert reserved(await s.ledger(account), QUOTE) == 0
    await s.agrees(oms)


async def venue_expired(s: Scenario) -> None:
    """The venue expired a resting order (written into its books as the exchange would) while the OMS was down."""
    oms = await s.boot()
    account = await s.account()
    await s.place(oms, account, "buy-1")
    await s.down()
    async with s.world.engine.begin() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT venue_order_id, reserved_asset, reserved_remaining FROM paper.orders"
                    " WHERE account_id = :a AND client_order_id = 'buy-1' FOR UPDATE"
                ),
                {"a": account},
            )
        ).one()
        await conn.execute(
            sa.text(
                "UPDATE paper.orders SET status = 'expired', reason = 'expired', reserved_remaining = 0,"
                " updated_at = now() WHERE venue_order_id = :v"
            ),
            {"v": row.venue_order_id},
        )
        await conn.execute(
            sa.text("UPDATE paper.balances SET reserved = reserved - :r WHERE account_id = :a AND asset = :asset"),
            {"r": row.reserved_remaining, "a": account, "asset": row.reserved_asset},
        )

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"statuses_applied": 1}
    assert (await s.oms_order(account, "buy-1"))["status"] == "expired"
    assert reserved(await s.ledger(account), QUOTE) == 0
    await s.agrees(oms)


async def submit_answer_lost(s: Scenario) -> None:
    """The venue accepted the order but the answer timed out: the OMS applies what the venue says."""
    account = await s.account()
    oms = await s.boot(wrap_venue=lambda venue: FaultyVenue(venue, random.Random(1), ambiguous_rate=1.0))
    await s.place(oms, account, "buy-1")
    assert (await s.oms_order(account, "buy-1"))["status"] == "submitted"

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {"statuses_applied": 1}
    order = await s.oms_order(account, "buy-1")
    venue_order = await s.venue_order(account, "buy-1")
    assert (order["status"], order["venue_order_id"]) == ("accepted", venue_order["venue_order_id"])
    await s.agrees(oms)


async def multiple_accounts(s: Scenario) -> None:
    """Four accounts, four different divergences, one reconcile."""
    oms = await s.boot()
    filled, external, drifted, unsent = [await s.account() for _ in range(4)]
    await s.place(oms, filled, "buy-1")
    await s.record_only(oms, unsent, "buy-1", limit_price="97.0")
    await oms.venue.submit(
        VenueOrderRequest(
            account_id=AccountId(external),
            client_order_id=ClientOrderId("not-ours-1"),
            symbol=Symbol(s.symbol),
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal(1),
            limit_price=Decimal("95.0"),
            trigger_price=None,
            time_in_force=TimeInForce.GTC,
            post_only=False,
        )
    )
    await oms.venue.deposit(AccountId(drifted), USD, Decimal("42"), uuid.uuid4().hex)
    await s.down()
    exchange = await s.exchange()
    await s.trade(exchange, "98.9", "1")

    oms, report = await s.restart_and_reconcile()

    assert repairs(report) == {
        "fills_applied": 1,
        "resubmitted": 1,
        "external_canceled": 1,
        "balance_adjustments": 1,
    }
    assert (await s.oms_order(filled, "buy-1"))["status"] == "filled"
    assert (await s.oms_order(unsent, "buy-1"))["status"] == "accepted"
    assert (await s.venue_order(external, "not-ours-1"))["status"] == "canceled"
    assert (await s.ledger(drifted))[QUOTE] == (DEPOSIT + 42, ZERO)
    await s.agrees(oms)


SCENARIOS: dict[str, ScenarioFn] = {
    "submitted_never_sent": submitted_never_sent,
    "unknown_to_venue_while_accepted": unknown_to_venue_while_accepted,
    "external_order": external_order,
    "cancel_lost_venue_still_open": cancel_lost_venue_still_open,
    "cancel_lost_venue_canceled": cancel_lost_venue_canceled,
    "venue_rejected_unheard": venue_rejected_unheard,
    "venue_expired": venue_expired,
    "submit_answer_lost": submit_answer_lost,
    "multiple_accounts": multiple_accounts,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_reconcile_repairs(name: str, world: World) -> None:
    await play(world, name, SCENARIOS[name])
