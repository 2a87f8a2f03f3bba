"""Several OMS processes: one that starts while another trades reconciles beside it, and never cancels an order the
other placed meanwhile as one the OMS never placed (docs/oms.md, "Several OMS processes").

Two `OrderService`s on one database and one paper venue stand for the two processes. The other process places
its order exactly while the starting one lists the account's open orders at the venue: the order row commits,
then the order reaches the venue, then the list is answered. The module has a database of its own, because
`reconcile()` walks every account.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest

from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.domain.types import AccountId, OrderSide, OrderStatus, OrderType
from shared.venues.base import VenueAdapter, VenueOrder, VenueOrderStatus
from tests.fakes.faults import FaultyVenue
from tests.helpers import own_database
from tests.reliability.oms_crash_worker import ACTOR
from tests.reliability.oms_harness import book_levels, oms_settings, order_rows, paper_stack, unique_symbol

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_oms_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "two_oms_reconcile") as url:
        yield url


class OtherProcessPlacesWhileListed(FaultyVenue):
    """The venue; while it lists an account's open orders, the other OMS process places `body` (once)."""

    def __init__(self, inner: VenueAdapter, other: OrderService, body: OrderCreate) -> None:
        super().__init__(inner, random.Random(0))
        self.other = other
        self.body: OrderCreate | None = body

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        if self.body is not None and self.body.account_id == account_id:
            body, self.body = self.body, None
            placed = await self.other.place(body, ACTOR)
            assert placed.stored.order.status is OrderStatus.ACCEPTED, placed.stored.order.reason
        return await self.inner.open_orders(account_id)


async def test_a_starting_process_leaves_the_order_another_placed_during_its_reconciliation(
    two_oms_database_url: str, redis_url: str, kafka_bootstrap: str
) -> None:
    symbol = unique_symbol("TW")
    settings = oms_settings(two_oms_database_url, redis_url, kafka_bootstrap, [symbol])
    account = "two-oms-reconcile"
    async with paper_stack(settings) as stack:
        await stack.set_book(symbol, *book_levels())
        await stack.fund(account, {"USD": Decimal(100_000)})
        trading = stack.service()  # the process that trades
        body = OrderCreate(
            account_id=account,
            client_order_id="placed-during-reconcile",
            symbol=symbol,
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            quantity=Decimal(1),
            limit_price=Decimal("95"),
        )
        starting = stack.service(venue=OtherProcessPlacesWhileListed(stack.counting, trading, body), listen=False)

        report = await starting.reconcile()

        key = (account, body.client_order_id)
        rows = await order_rows(stack.oms_engine, [account])
        assert report.external_canceled == 0
        assert (rows.oms_status[key], rows.venue_status[key]) == (
            OrderStatus.ACCEPTED.value,
            VenueOrderStatus.OPEN.value,
        )
        assert stack.counting.calls.cancels[key] == 0
