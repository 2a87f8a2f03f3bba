"""R5, money: a fill the venue commits while reconciliation reads its balances is not drift (it was counted twice),
a deposit cut in half by a lost answer or a refused send is completed once on both sides, and a venue fill the
order state machine refuses is quarantined instead of wedging reconciliation.

Harness and scenario world: r5_scenario.py. The module has a database of its own, because `reconcile()` walks
every account.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from services.oms.errors import DepositReferenceConflict, VenueUnavailable
from services.oms.ledger_repository import DepositStatus
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import AmbiguousOutcome, TemporaryError, VenueBalance, VenueOrderRequest
from shared.venues.paper import PaperVenue
from tests.fakes.faults import FaultyVenue
from tests.reliability.oms_crash_worker import ACTOR, QUOTE
from tests.reliability.r5_scenario import (
    DEPOSIT,
    Gate,
    Scenario,
    ScenarioFn,
    World,
    open_world,
    play,
    repairs,
)

pytestmark = pytest.mark.slow

TOP_UP = Decimal("500")


@pytest.fixture(scope="module")
async def world(r5_database_url: str, redis_url: str) -> AsyncIterator[World]:
    async with open_world(r5_database_url, redis_url, list(SCENARIOS)) as world:
        yield world


class FillDuringBalanceRead(FaultyVenue):
    """The venue commits a fill while reconciliation reads the account's balances (once)."""

    def __init__(self, inner: PaperVenue, fill: Callable[[PaperVenue], Awaitable[None]]) -> None:
        super().__init__(inner, random.Random(0))
        self.fill = fill
        self.fired = False

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        if not self.fired:
            self.fired = True
            await self.fill(self.inner)
        return await self.inner.balances(account_id)


class DepositAnswerLost(FaultyVenue):
    """The venue credits the deposit, and its answer never reaches the OMS."""

    def __init__(self, inner: PaperVenue) -> None:
        super().__init__(inner, random.Random(0))

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        await self.inner.deposit(account_id, asset, amount, reference)
        raise AmbiguousOutcome(f"injected: the answer to deposit {reference} was lost")


class DepositRefusedBeforeSend(FaultyVenue):
    """The venue cannot be reached: nothing is credited there."""

    def __init__(self, inner: PaperVenue) -> None:
        super().__init__(inner, random.Random(0))

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        raise TemporaryError(f"injected: deposit {reference} refused before send")


async def fill_committed_during_balance_read(s: Scenario) -> None:
    """A resting buy fills at the venue between reconciliation's fill catch-up and its balance read, and the OMS
    hears of it only later: that fill is caught up, not counted as balance drift (which its later application
    would then double)."""
    oms = await s.boot()
    account = await s.account()
    await s.place(oms, account, "buy-1")
    await s.down()
    gate = Gate()
    gate.mode = "closed"  # the fill's notification is lost: the OMS learns of it from the venue's fill history

    async def fill(venue: PaperVenue) -> None:
        await s.trade(venue, "98.9", "1")

    oms = await s.boot(gate=gate, wrap_venue=lambda venue: FillDuringBalanceRead(venue, fill))
    report = await oms.service.reconcile()

    assert repairs(report) == {"fills_applied": 1}
    await oms.service.execution.catch_up_fills(AccountId(account))
    venue = await s.venue_balances(account)
    ledger = await s.ledger(account)
    assert ledger[QUOTE] == venue[QUOTE]
    assert ledger[s.base] == venue[s.base] == (Decimal(1), Decimal(0))
    assert await s.audit("balance.reconciled", f"{account}/{QUOTE}") == []
    await s.agrees(oms)


async def deposit_answer_lost(s: Scenario) -> None:
    """The venue credited a deposit whose answer was lost (503, pending in the OMS): reconciliation completes the
    ledger side once, with no balance adjustment, and a repeat of the reference answers the completed deposit."""
    account = await s.account()
    oms = await s.boot(wrap_venue=DepositAnswerLost)
    with pytest.raises(VenueUnavailable):
        await oms.service.deposit(account, QUOTE, TOP_UP, ACTOR, reference="top-up-1")
    assert (await s.venue_balances(account))[QUOTE][0] == DEPOSIT + TOP_UP
    assert (await s.ledger(account))[QUOTE][0] == DEPOSIT
    assert await s.scalar("SELECT status FROM oms.deposits WHERE reference = 'top-up-1'") == DepositStatus.PENDING

    oms, report = await s.restart_and_reconcile()

    assert (report.deposits_completed, repairs(report)) == (1, {})
    assert (await s.ledger(account))[QUOTE] == (DEPOSIT + TOP_UP, Decimal(0))
    again = await oms.service.deposit(account, QUOTE, TOP_UP, ACTOR, reference="top-up-1")
    assert (again.status, again.balance and again.balance.total) == (DepositStatus.APPLIED, DEPOSIT + TOP_UP)
    assert (await s.venue_balances(account))[QUOTE][0] == DEPOSIT + TOP_UP
    with pytest.raises(DepositReferenceConflict):
        await oms.service.deposit(account, QUOTE, TOP_UP + 1, ACTOR, reference="top-up-1")
    assert len(await s.audit("paper.deposit", f"{account}/{QUOTE}")) == 2  # the first funding and this one
    await s.agrees(oms)


async def deposit_refused_before_send(s: Scenario) -> None:
    """The OMS recorded a deposit the venue never received: reconciliation credits the venue, then the ledger."""
    account = await s.account()
    oms = await s.boot(wrap_venue=DepositRefusedBeforeSend)
    with pytest.raises(VenueUnavailable):
        await oms.service.deposit(account, QUOTE, TOP_UP, ACTOR, reference="top-up-2")
    assert (await s.venue_balances(account))[QUOTE][0] == DEPOSIT

    oms, report = await s.restart_and_reconcile()

    assert (report.deposits_completed, repairs(report)) == (1, {})
    assert (await s.venue_balances(account))[QUOTE][0] == DEPOSIT + TOP_UP
    assert (await s.ledger(account))[QUOTE] == (DEPOSIT + TOP_UP, Decimal(0))
    await s.agrees(oms)


def quarantined(reason: str) -> float:
    return REGISTRY.get_sample_value("aether_oms_fills_quarantined_total", {"reason": reason}) or 0.0


async def overfill_quarantined(s: Scenario) -> None:
    """The venue fills more than the OMS's order holds: the fill is quarantined (raw, with its reason, audited,
    counted) and reconciliation finishes instead of failing on it at every retry; the venue's money is adopted."""
    oms = await s.boot()
    account = await s.account()
    await s.record_only(oms, account, "buy-1", quantity="1")
    await oms.venue.submit(  # the venue holds the same client order id for twice the quantity
        VenueOrderRequest(
            account_id=AccountId(account),
            client_order_id=ClientOrderId("buy-1"),
            symbol=Symbol(s.symbol),
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal(2),
            limit_price=Decimal("99.0"),
            trigger_price=None,
            time_in_force=TimeInForce.GTC,
            post_only=False,
        )
    )
    await s.down()
    await s.trade(await s.exchange(), "98.9", "2")
    before = quarantined("overfill")

    oms, report = await s.restart_and_reconcile()

    trade_id = await s.scalar("SELECT trade_id FROM paper.fills WHERE account_id = :a", a=account)
    row = await s.scalar(
        "SELECT json_build_object('code', reason_code, 'quantity', fill->>'quantity') FROM oms.quarantined_fills"
        " WHERE trade_id = :t",
        t=trade_id,
    )
    assert row == {"code": "overfill", "quantity": "2"}
    assert quarantined("overfill") == before + 1
    assert [
        entry["details"]["reason_code"] for entry in await s.audit("fill.quarantined", f"{account}/{trade_id}")
    ] == ["overfill"]
    assert await s.scalar("SELECT count(*) FROM oms.fills WHERE account_id = :a", a=account) == 0
    assert report.balance_adjustments == 2  # the venue holds the money: USD paid, base received
    assert (await s.ledger(account))[s.base][0] == (await s.venue_balances(account))[s.base][0] == 2
    again = await oms.service.reconcile()
    assert again.balance_adjustments == 0
    assert quarantined("overfill") == before + 1


SCENARIOS: dict[str, ScenarioFn] = {
    "fill_committed_during_balance_read": fill_committed_during_balance_read,
    "deposit_answer_lost": deposit_answer_lost,
    "deposit_refused_before_send": deposit_refused_before_send,
    "overfill_quarantined": overfill_quarantined,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_reconcile_repairs(name: str, world: World) -> None:
    await play(world, name, SCENARIOS[name])
