"""Kraken v2 frame decoding: the documented shapes become typed messages with exact decimals; a bad field is a
`WireError` naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from shared.venues.kraken.book import PairPrecision
from shared.venues.kraken.ws_wire import (
    BookMessage,
    Heartbeat,
    InstrumentMessage,
    MethodResponse,
    Status,
    TradeMessage,
    Unknown,
    WireError,
    decode_frame,
)


def test_a_book_update_keeps_the_wire_digits() -> None:
    message = decode_frame(
        '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":[{"price":0.5657,"qty":1098.3947558}],'
        '"asks":[],"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
    )
    assert message == BookMessage(
        snapshot=False,
        symbol="MATIC/USD",
        bids=[(Decimal("0.5657"), Decimal("1098.3947558"))],
        asks=[],
        checksum=2114181697,
        timestamp=datetime(2023, 10, 6, 17, 35, 55, 440295, tzinfo=UTC),
    )


def test_trade_instrument_and_control_messages() -> None:
    trade = decode_frame(
        '{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"buy","price":0.5147,'
        '"qty":6423.46326,"ord_type":"limit","trade_id":4665846,"timestamp":"2023-09-25T07:48:36.925533Z"}]}'
    )
    assert isinstance(trade, TradeMessage)
    assert (trade.trades[0].price, trade.trades[0].trade_id, trade.trades[0].side) == (
        Decimal("0.5147"),
        4665846,
        "buy",
    )
    instrument = decode_frame(
        '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"BTC/USD",'
        '"price_precision":1,"qty_precision":8}]}}'
    )
    assert instrument == InstrumentMessage({"BTC/USD": PairPrecision(price=1, qty=8)})
    assert decode_frame('{"channel":"heartbeat"}') == Heartbeat()
    assert decode_frame('{"channel":"status","type":"update","data":[{"system":"online"}]}') == Status("online")
    assert decode_frame('{"channel":"ohlc","type":"update","data":[]}') == Unknown("channel 'ohlc'")
    refused = decode_frame('{"method":"subscribe","success":false,"error":"Currency pair not supported X/Y"}')
    assert refused == MethodResponse("subscribe", False, None, None, "Currency pair not supported X/Y")


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":"x","qty":1}]}]}', "bids[0].price"),
        ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","asks":[{"price":1}]}]}', "asks[0].qty"),
        ('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","checksum":-1}]}', "checksum"),
        ('{"channel":"book","type":"delta","data":[{"symbol":"BTC/USD"}]}', "type"),
        ('{"channel":"book","type":"update","data":[]}', "data"),
        ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"up"}]}', "data[0].side"),
        ('{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"BTC/USD","price_precision":99}]}}',
         "price_precision"),
        ("[]", "frame"),
        ("{", "not JSON"),
        (b"\xff", "not JSON"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_wire_error_naming_it(frame: str | bytes, field: str) -> None:
    with pytest.raises(WireError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode_frame(frame)
