"""Kraken v2 `executions`: the documented frames decode with exact decimals, a trade without its execution fields is
a `WireError` naming the field, and the stream maps events to the venue-update path (trade -> `VenueFill` told once
by trade id, filled / canceled -> `VenueOrder` with what earlier events said about the order)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.domain.types import AccountId, Asset, ClientOrderId, Liquidity, Symbol
from shared.venues.base import VenueFill, VenueOrder, VenueOrderStatus, VenueUpdate
from shared.venues.kraken.ws_private import KrakenExecutions, SubscriptionRefused
from shared.venues.kraken.ws_wire import ExecutionsMessage, WireError, decode_frame

# The trade event of https://docs.kraken.com/api/docs/websocket-v2/executions (update example), with a cl_ord_id.
DOCUMENTED_TRADE = (
    '{"channel":"executions","type":"update","data":[{"order_id":"O6MRCU-EPLSJ-ZWTJ6Z","order_userref":0,'
    '"cl_ord_id":"c-42","exec_id":"TLGNI3-WXBSW-QB2HKW","exec_type":"trade","trade_id":37496584,"symbol":"BTC/USD",'
    '"side":"buy","last_qty":0.00010000,"cost":6.00000,"liquidity_ind":"t","last_price":60000.0,'
    '"order_status":"filled","order_type":"market","timestamp":"2023-09-22T10:33:05.709950Z","fee_usd_equiv":0.02,'
    '"fees":[{"asset":"USD","qty":0.02}]}],"sequence":6}'
)
NEW_ORDER = (
    '{"channel":"executions","type":"snapshot","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5","cl_ord_id":"c-7",'
    '"exec_type":"new","symbol":"BTC/USD","side":"sell","order_type":"limit","order_qty":0.5,"cum_qty":0,'
    '"limit_price":61000.0,"order_status":"new","timestamp":"2023-09-22T10:30:00.000000Z"}],"sequence":1}'
)
CANCELED = (
    '{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5","exec_type":"canceled",'
    '"order_status":"canceled","cum_qty":0.2,"reason":"User requested","timestamp":"2023-09-22T10:40:00Z"}]}'
)


class _Venue:
    def __init__(self) -> None:
        self.told: list[VenueUpdate] = []
        self.trade_ids: set[str] = set()

    def pair_quote(self, symbol: Symbol) -> Asset | None:
        return Asset("USD")

    async def deliver(self, update: VenueUpdate, source: str) -> bool:
        if isinstance(update, VenueFill):
            if update.trade_id in self.trade_ids:
                return False
            self.trade_ids.add(update.trade_id)
        self.told.append(update)
        return True


def test_the_documented_trade_event_decodes_exactly() -> None:
    message = decode_frame(DOCUMENTED_TRADE)
    assert isinstance(message, ExecutionsMessage)
    (record,) = message.executions
    assert (record.exec_type, record.exec_id, record.trade_id) == ("trade", "TLGNI3-WXBSW-QB2HKW", 37496584)
    assert (record.last_qty, record.last_price) == (Decimal("0.00010000"), Decimal("60000.0"))
    assert record.fees == (("USD", Decimal("0.02")),)
    assert record.liquidity_ind == "t"
    assert record.timestamp == datetime(2023, 9, 22, 10, 33, 5, 709950, tzinfo=UTC)


@pytest.mark.parametrize(
    ("remove", "field"),
    [
        ('"exec_id":"TLGNI3-WXBSW-QB2HKW",', "exec_id"),
        ('"last_price":60000.0,', "last_price"),
        ('"side":"buy",', "side"),
    ],
)
def test_a_trade_without_its_execution_fields_is_refused_naming_the_field(remove: str, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode_frame(DOCUMENTED_TRADE.replace(remove, ""))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('"last_qty":0.00010000', '"last_qty":-1', "last_qty"),
        ('"liquidity_ind":"t"', '"liquidity_ind":"x"', "liquidity_ind"),
        ('{"asset":"USD","qty":0.02}', '{"asset":"USD","qty":-0.02}', "fees"),
        ('"trade_id":37496584', '"trade_id":true', "trade_id"),
        ('"timestamp":"2023-09-22T10:33:05.709950Z"', '"timestamp":"2023-09-22"', "timestamp"),
    ],
)
def test_bad_execution_fields_are_refused_naming_them(old: str, new: str, field: str) -> None:
    with pytest.raises(WireError, match=field):
        decode_frame(DOCUMENTED_TRADE.replace(old, new))


async def test_the_stream_tells_a_fill_once_and_an_order_state_with_what_it_knew() -> None:
    venue = _Venue()
    stream = KrakenExecutions(venue, AccountId("acct-1"))  # type: ignore[arg-type]

    await stream._frame(DOCUMENTED_TRADE)
    await stream._frame(DOCUMENTED_TRADE)  # the same execution again
    await stream._frame(NEW_ORDER)
    await stream._frame(CANCELED)  # Kraken leaves out what the `new` event said

    fill, order = venue.told
    assert isinstance(fill, VenueFill)
    assert (fill.client_order_id, fill.trade_id, fill.quantity, fill.price) == (
        "c-42",
        "TLGNI3-WXBSW-QB2HKW",
        Decimal("0.00010000"),
        Decimal("60000.0"),
    )
    assert (fill.fee, fill.fee_asset, fill.liquidity) == (Decimal("0.02"), "USD", Liquidity.TAKER)
    assert stream.stats.fills == 1
    assert stream.stats.faults == {"duplicate": 1}
    assert isinstance(order, VenueOrder)
    assert (order.client_order_id, order.status, order.quantity, order.filled_quantity, order.reason) == (
        ClientOrderId("c-7"),
        VenueOrderStatus.CANCELED,
        Decimal("0.5"),
        Decimal("0.2"),
        "User requested",
    )


async def test_fees_in_several_assets_are_counted_invalid_and_a_refused_subscription_ends_the_session() -> None:
    venue = _Venue()
    stream = KrakenExecutions(venue, AccountId("acct-1"))  # type: ignore[arg-type]
    two_assets = DOCUMENTED_TRADE.replace(
        '{"asset":"USD","qty":0.02}', '{"asset":"USD","qty":0.02},{"asset":"BTC","qty":1}'
    )

    await stream._frame(two_assets)
    await stream._frame('{"channel":"executions","type":"update","data":[{"exec_type":7}]}')

    assert venue.told == []
    assert stream.stats.faults == {"invalid_execution": 1, "malformed": 1}
    with pytest.raises(SubscriptionRefused):
        await stream._frame(
            '{"method":"subscribe","success":false,"error":"ESession:Invalid session","result":{"channel":"executions"}}'
        )
    assert not stream.up()
    await stream._frame('{"method":"subscribe","success":true,"result":{"channel":"executions","snapshot":true}}')
    assert stream.up()


def test_reconnect_backoff_is_full_jitter_doubling_to_its_ceiling() -> None:
    stream = KrakenExecutions(_Venue(), AccountId("acct-1"))  # type: ignore[arg-type]
    for failures, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (20, 30.0)]:
        delays = [stream.backoff_s(failures) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the whole range, not a fixed delay


async def test_an_amended_quantity_is_the_one_the_final_state_reports() -> None:
    venue = _Venue()
    stream = KrakenExecutions(venue, AccountId("acct-1"))  # type: ignore[arg-type]
    await stream._frame(NEW_ORDER)
    await stream._frame(
        '{"channel":"executions","type":"update","data":[{"order_id":"OK4GJX-KSTLS-7DZZO5","exec_type":"amended",'
        '"order_qty":0.3,"timestamp":"2023-09-22T10:35:00Z"}]}'
    )
    await stream._frame(CANCELED)
    (order,) = venue.told
    assert isinstance(order, VenueOrder)
    assert (order.side, order.symbol, order.quantity) == ("sell", "BTC/USD", Decimal("0.3"))
