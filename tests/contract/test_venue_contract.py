"""The contract every venue adapter passes (paper today, Kraken later): same answers for the same market.

Fees are hand-computed at the entry tier (maker 0.25 %, taker 0.40 %), each fill's fee rounded UP to
0.01 USD. Refusals are `VenueRejected` with a code and leave nothing at the venue (query -> None):
that includes a post-only order that would cross (`post_only_would_cross`).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from shared.domain.types import AccountId, Asset, ClientOrderId, Liquidity, OrderSide, OrderType, TimeInForce
from shared.venues.base import VenueFill, VenueOrder, VenueOrderRequest, VenueOrderStatus, VenueRejected, VenueUpdate
from tests.contract.conftest import VenueCase

USD = Asset("USD")


def _request(
    case: VenueCase,
    account_id: AccountId,
    side: OrderSide,
    quantity: str,
    *,
    limit_price: str | None = None,
    post_only: bool = False,
    client_order_id: str | None = None,
    time_in_force: TimeInForce = TimeInForce.GTC,
) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=account_id,
        client_order_id=ClientOrderId(client_order_id or f"c-{uuid.uuid4().hex[:16]}"),
        symbol=case.symbol,
        side=side,
        type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
        quantity=Decimal(quantity),
        limit_price=None if limit_price is None else Decimal(limit_price),
        trigger_price=None,
        time_in_force=time_in_force,
        post_only=post_only,
    )


async def _balance(case: VenueCase, asset: Asset, account_id: AccountId | None = None) -> tuple[Decimal, Decimal]:
    """(total, available) of `asset`; zero when the venue lists no such balance."""
    for balance in await case.venue.balances(account_id or case.account_id):
        if balance.asset == asset:
            return balance.total, balance.available
    return Decimal(0), Decimal(0)


async def _spread_market(case: VenueCase) -> None:
    await case.market.book(case.symbol, bids=[("100.0", "1")], asks=[("101.0", "1")])


async def _three_level_market(case: VenueCase) -> None:
    await case.market.book(case.symbol, bids=[("99.0", "2")], asks=[("100.0", "0.5"), ("101.0", "0.5"), ("102.0", "1")])


def _fills(updates: list[VenueUpdate]) -> list[VenueFill]:
    return [u for u in updates if isinstance(u, VenueFill)]


async def test_resting_limit_order_is_open_and_reserves_quote(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)

    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0"))

    assert order.status is VenueOrderStatus.OPEN
    assert order.filled_quantity == 0
    assert order.venue_order_id
    # Reserved: 1 x 99.0 = 99.00 plus the taker fee 0.396 (USD is kept to 0.0001) -> 99.396.
    assert await _balance(venue, USD) == (Decimal("10000"), Decimal("9900.604"))
    assert [o.client_order_id for o in await venue.venue.open_orders(venue.account_id)] == [order.client_order_id]


async def test_repeat_submit_returns_the_same_order(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    request = _request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0")

    first = await venue.venue.submit(request)
    again = await venue.venue.submit(request)

    assert again.venue_order_id == first.venue_order_id
    assert len(await venue.venue.open_orders(venue.account_id)) == 1
    assert await _balance(venue, USD) == (Decimal("10000"), Decimal("9900.604"))  # reserved once


async def test_query_of_an_unknown_client_id_is_none(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10")
    assert await venue.venue.query(venue.account_id, ClientOrderId("never-sent")) is None


async def test_query_returns_the_order(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "0.5", limit_price="98.0"))

    seen = await venue.venue.query(venue.account_id, order.client_order_id)

    assert seen is not None
    assert (seen.venue_order_id, seen.status, seen.quantity) == (
        order.venue_order_id,
        VenueOrderStatus.OPEN,
        Decimal("0.5"),
    )


async def test_cancel_of_an_open_order_releases_its_reservation(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0"))

    canceled = await venue.venue.cancel(venue.account_id, order.client_order_id)

    assert canceled.status is VenueOrderStatus.CANCELED
    assert await _balance(venue, USD) == (Decimal("10000"), Decimal("10000"))
    assert await venue.venue.open_orders(venue.account_id) == []
    again = await venue.venue.cancel(venue.account_id, order.client_order_id)
    assert again.status is VenueOrderStatus.CANCELED


async def test_cancel_of_a_filled_order_answers_filled(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "0.5"))
    assert order.status is VenueOrderStatus.FILLED

    answer = await venue.venue.cancel(venue.account_id, order.client_order_id)

    assert answer.status is VenueOrderStatus.FILLED
    assert answer.filled_quantity == Decimal("0.5")


async def test_cancel_of_an_unknown_order_is_rejected(venue: VenueCase) -> None:
    with pytest.raises(VenueRejected) as refused:
        await venue.venue.cancel(venue.account_id, ClientOrderId("never-sent"))
    assert refused.value.code == "unknown_order"


async def test_market_buy_walks_the_book(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _three_level_market(venue)

    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1.5"))

    assert (order.status, order.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1.5"))
    fills = [
        f for f in await venue.venue.fills_since(venue.account_id, 0) if f.client_order_id == order.client_order_id
    ]
    assert [(f.quantity, f.price) for f in fills] == [
        (Decimal("0.5"), Decimal("100.0")),
        (Decimal("0.5"), Decimal("101.0")),
        (Decimal("0.5"), Decimal("102.0")),
    ]
    assert {f.liquidity for f in fills} == {Liquidity.TAKER}
    # Notional 50 + 50.5 + 51 = 151.5 -> average 151.5 / 1.5 = 101.
    notional = sum((f.quantity * f.price for f in fills), Decimal(0))
    assert notional / order.filled_quantity == Decimal("101")
    # Taker fees per fill, to the nearest 0.0001 USD: 0.2, 0.202, 0.204 (exact); total 0.606 USD.
    assert [f.fee for f in fills] == [Decimal("0.2"), Decimal("0.202"), Decimal("0.204")]
    assert {f.fee_asset for f in fills} == {USD}
    # 10000 - 151.5 - 0.606 = 9847.894 USD, all free; 1.5 BTC.
    assert await _balance(venue, USD) == (Decimal("9847.894"), Decimal("9847.894"))
    assert await _balance(venue, venue.base) == (Decimal("1.5"), Decimal("1.5"))


async def test_market_sell_walks_the_bids_and_pays_the_fee_in_quote(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, venue.base, "2")
    await venue.market.book(venue.symbol, bids=[("100.0", "1"), ("99.0", "1")], asks=[("101.0", "1")])

    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.SELL, "1.5"))

    assert (order.status, order.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1.5"))
    # 1 @ 100 = 100 (fee 0.40) + 0.5 @ 99 = 49.5 (fee 0.198): 149.5 - 0.598 = 148.902 USD.
    assert await _balance(venue, USD) == (Decimal("148.902"), Decimal("148.902"))
    assert await _balance(venue, venue.base) == (Decimal("0.5"), Decimal("0.5"))


async def test_market_order_beyond_the_visible_depth_fills_what_is_there(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)  # 1 BTC offered at 101.0

    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "3"))

    assert order.filled_quantity == Decimal("1")
    assert order.status is VenueOrderStatus.CANCELED  # the rest cannot execute: never beyond the visible depth
    # 101.00 + fee 0.404: 10000 - 101.404 = 9898.596, nothing left reserved.
    assert await _balance(venue, USD) == (Decimal("9898.596"), Decimal("9898.596"))


async def test_post_only_that_would_cross_is_rejected(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    request = _request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="101.0", post_only=True)

    with pytest.raises(VenueRejected) as refused:
        await venue.venue.submit(request)

    assert refused.value.code == "post_only_would_cross"
    assert await venue.venue.query(venue.account_id, request.client_order_id) is None
    assert await _balance(venue, USD) == (Decimal("10000"), Decimal("10000"))


async def test_post_only_that_rests_is_accepted(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(
        _request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="100.0", post_only=True)
    )
    assert order.status is VenueOrderStatus.OPEN


async def test_buy_without_enough_quote_is_rejected(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "100")
    await _spread_market(venue)
    # Needs 1 x 99.9 = 99.90 plus the taker fee 0.3996 -> 0.40: 100.30 > 100.
    request = _request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.9")

    with pytest.raises(VenueRejected) as refused:
        await venue.venue.submit(request)

    assert refused.value.code == "insufficient_funds"
    assert await venue.venue.query(venue.account_id, request.client_order_id) is None
    assert await _balance(venue, USD) == (Decimal("100"), Decimal("100"))


async def test_sell_without_base_is_rejected(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "1000")
    await _spread_market(venue)
    with pytest.raises(VenueRejected) as refused:
        await venue.venue.submit(_request(venue, venue.account_id, OrderSide.SELL, "0.1", limit_price="105.0"))
    assert refused.value.code == "insufficient_funds"


async def test_reservations_count_against_later_orders(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "200")
    await _spread_market(venue)
    await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0"))  # holds 99.396
    # 100.604 free; a second 1 @ 99.0 needs 99.396 again: fits. A third does not (1.208 left).
    await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0"))
    with pytest.raises(VenueRejected) as refused:
        await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="99.0"))
    assert refused.value.code == "insufficient_funds"
    assert await _balance(venue, USD) == (Decimal("200"), Decimal("1.208"))


async def test_fills_since_is_in_sequence_order_and_resumes_after_a_cursor(venue: VenueCase) -> None:
    other = venue.new_account()
    await venue.market.fund(venue.account_id, USD, "10000")
    await venue.market.fund(other, USD, "10000")
    await _three_level_market(venue)
    await venue.venue.submit(_request(venue, other, OrderSide.BUY, "0.1"))
    await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1.5"))

    fills = list(await venue.venue.fills_since(venue.account_id, 0))

    assert len(fills) == 3
    assert {f.account_id for f in fills} == {venue.account_id}
    sequences = [f.sequence for f in fills]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 3
    assert len({f.trade_id for f in fills}) == 3
    assert list(await venue.venue.fills_since(venue.account_id, sequences[0])) == fills[1:]
    assert list(await venue.venue.fills_since(venue.account_id, sequences[-1])) == []


async def test_resting_limit_fills_as_maker_when_a_trade_prints_through(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="100.5"))
    assert order.status is VenueOrderStatus.OPEN

    await venue.market.trade(venue.symbol, "100.0", "2", OrderSide.SELL)  # prints below our bid: through it

    filled = await venue.venue.query(venue.account_id, order.client_order_id)
    assert filled is not None
    assert (filled.status, filled.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1"))
    (fill,) = await venue.venue.fills_since(venue.account_id, 0)
    # Maker at our price 100.5: fee 0.25 % x 100.5 = 0.25125 -> 0.2512 USD (nearest 0.0001, a tie to even).
    assert (fill.price, fill.liquidity, fill.fee) == (Decimal("100.5"), Liquidity.MAKER, Decimal("0.2512"))
    # 10000 - 100.5 - 0.2512 = 9899.2488 USD; the unused part of the reservation (taker fee) is released.
    assert await _balance(venue, USD) == (Decimal("9899.2488"), Decimal("9899.2488"))
    assert await _balance(venue, venue.base) == (Decimal("1"), Decimal("1"))


async def test_a_smaller_print_fills_part_of_a_resting_order(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, venue.base, "1")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.SELL, "1", limit_price="100.6"))

    await venue.market.trade(venue.symbol, "100.8", "0.4", OrderSide.BUY)

    seen = await venue.venue.query(venue.account_id, order.client_order_id)
    assert seen is not None
    assert (seen.status, seen.filled_quantity) == (VenueOrderStatus.OPEN, Decimal("0.4"))
    # 0.4 BTC sold, 0.6 still held by the order: total 0.6, nothing available.
    assert await _balance(venue, venue.base) == (Decimal("0.6"), Decimal("0"))


async def test_listener_hears_the_fill_and_the_final_status(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="100.5"))

    await venue.market.trade(venue.symbol, "100.0", "2", OrderSide.SELL)

    fills = _fills(venue.heard)
    assert [(f.client_order_id, f.quantity, f.price) for f in fills] == [
        (order.client_order_id, Decimal("1"), Decimal("100.5"))
    ]
    statuses = [u for u in venue.heard if isinstance(u, VenueOrder)]
    assert [(u.client_order_id, u.status) for u in statuses] == [(order.client_order_id, VenueOrderStatus.FILLED)]
    assert venue.heard.index(fills[0]) < venue.heard.index(statuses[0])  # fills before the status that closes


async def test_a_failing_listener_loses_nothing(venue: VenueCase) -> None:
    async def broken(update: VenueUpdate) -> None:
        raise RuntimeError("listener down")

    venue.venue.subscribe(broken)
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="100.5"))

    await venue.market.trade(venue.symbol, "100.0", "2", OrderSide.SELL)

    seen = await venue.venue.query(venue.account_id, order.client_order_id)
    assert seen is not None
    assert seen.status is VenueOrderStatus.FILLED
    assert len(await venue.venue.fills_since(venue.account_id, 0)) == 1
    assert len(_fills(venue.heard)) == 1  # the other listener still heard it


async def test_immediate_fills_reach_listeners_too(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _three_level_market(venue)

    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1.5"))

    assert [f.client_order_id for f in _fills(venue.heard)] == [order.client_order_id] * 3


async def test_ioc_remainder_is_canceled(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _three_level_market(venue)

    order = await venue.venue.submit(
        _request(venue, venue.account_id, OrderSide.BUY, "2", limit_price="101.0", time_in_force=TimeInForce.IOC)
    )

    # Takes 0.5 @ 100.0 and 0.5 @ 101.0 (up to its limit); the remaining 1 is canceled, not rested.
    assert (order.status, order.filled_quantity) == (VenueOrderStatus.CANCELED, Decimal("1"))
    assert await venue.venue.open_orders(venue.account_id) == []


async def test_restart_keeps_the_resting_order_and_it_still_fills(venue: VenueCase) -> None:
    await venue.market.fund(venue.account_id, USD, "10000")
    await _spread_market(venue)
    order = await venue.venue.submit(_request(venue, venue.account_id, OrderSide.BUY, "1", limit_price="100.5"))

    restarted = await venue.market.restart()
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    restarted.subscribe(listen)

    assert [o.venue_order_id for o in await restarted.open_orders(venue.account_id)] == [order.venue_order_id]
    await venue.market.trade(venue.symbol, "100.0", "2", OrderSide.SELL)
    seen = await restarted.query(venue.account_id, order.client_order_id)
    assert seen is not None
    assert (seen.status, seen.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1"))
    assert [f.client_order_id for f in _fills(heard)] == [order.client_order_id]
    assert await _balance(venue, venue.base) == (Decimal("1"), Decimal("1"))
