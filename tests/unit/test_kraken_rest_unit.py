"""Kraken REST pieces without a network: the documented signature example, error mapping, counters, parsers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.venues.kraken import wire
from shared.venues.kraken.adapter import fill_sequence
from shared.venues.kraken.errors import ErrorKind, error_kind, rejection_code
from shared.venues.kraken.rate_limit import REST_LIMITS, TRADING_LIMITS, Tier, cancel_penalty, rest_cost
from shared.venues.kraken.signing import InvalidSecret, api_sign, encode_payload, verify_sign

# docs.kraken.com/api/docs/guides/spot-rest-auth, "Examples": buy 1.25 XBTUSD at 37,500.
DOC_SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
DOC_NONCE = "1616492376594"
DOC_PAYLOAD = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
DOC_SIGN = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="


def test_the_documented_signature_example() -> None:
    fields = {
        "nonce": DOC_NONCE,
        "ordertype": "limit",
        "pair": "XBTUSD",
        "price": "37500",
        "type": "buy",
        "volume": "1.25",
    }
    assert encode_payload(fields) == DOC_PAYLOAD
    assert api_sign("/0/private/AddOrder", DOC_NONCE, DOC_PAYLOAD, DOC_SECRET) == DOC_SIGN
    assert verify_sign("/0/private/AddOrder", DOC_NONCE, DOC_PAYLOAD, DOC_SECRET, DOC_SIGN)


def test_the_signature_covers_path_nonce_and_body() -> None:
    assert not verify_sign("/0/private/CancelOrder", DOC_NONCE, DOC_PAYLOAD, DOC_SECRET, DOC_SIGN)
    assert not verify_sign("/0/private/AddOrder", "1616492376595", DOC_PAYLOAD, DOC_SECRET, DOC_SIGN)
    assert not verify_sign("/0/private/AddOrder", DOC_NONCE, DOC_PAYLOAD.replace("1.25", "1.26"), DOC_SECRET, DOC_SIGN)


def test_a_secret_that_is_not_base64_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidSecret) as refused:
        api_sign("/0/private/Balance", "1", "nonce=1", "not base64 ***topsecret***")
    assert "topsecret" not in str(refused.value)


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        ("EAPI:Invalid nonce", ErrorKind.NONCE, "invalid_nonce"),
        ("EOrder:Insufficient funds", ErrorKind.REJECTED, "insufficient_funds"),
        ("EGeneral:Too many requests", ErrorKind.RATE_LIMITED, "rate_limited"),
        ("EOrder:Rate limit exceeded", ErrorKind.RATE_LIMITED, "rate_limited"),
        ("EAPI:Rate limit exceeded", ErrorKind.RATE_LIMITED, "rate_limited"),
        ("EService:Unavailable", ErrorKind.UNAVAILABLE, "venue_rejected"),
        ("EService:Busy", ErrorKind.UNAVAILABLE, "venue_rejected"),
        ("EAPI:Invalid key", ErrorKind.OPERATIONAL, "venue_rejected"),
        ("EGeneral:Invalid arguments:volume", ErrorKind.REJECTED, "invalid_order"),
        ("EOrder:Unknown order", ErrorKind.REJECTED, "unknown_order"),
        ("EFoo:Something new", ErrorKind.REJECTED, "venue_rejected"),
    ],
)
def test_error_strings_map_to_typed_outcomes(error: str, kind: ErrorKind, code: str) -> None:
    assert (error_kind(error), rejection_code(error)) == (kind, code)


def test_rate_limit_tables_are_kraken_s() -> None:
    assert {t: (lim.maximum, lim.decay_per_s) for t, lim in REST_LIMITS.items()} == {
        Tier.STARTER: (15, Decimal("0.33")),
        Tier.INTERMEDIATE: (20, Decimal("0.5")),
        Tier.PRO: (20, Decimal(1)),
    }
    assert [TRADING_LIMITS[t].maximum for t in Tier] == [60, 125, 180]
    assert (rest_cost("Balance"), rest_cost("TradesHistory"), rest_cost("AddOrder")) == (1, 2, 0)
    ages = [0, 4.9, 5, 9.9, 10, 14.9, 15, 44.9, 45, 89.9, 90, 299.9, 300, 3600]
    assert [cancel_penalty(a) for a in ages] == [8, 8, 6, 6, 5, 5, 4, 4, 2, 2, 1, 1, 0, 0]


QUERY_ORDERS = {
    "OBCMZD-JIEE7-77TH3F": {
        "refid": None,
        "userref": 0,
        "cl_ord_id": "c-1",
        "status": "closed",
        "reason": None,
        "opentm": 1688665496.7808,
        "closetm": 1688665499.1922,
        "starttm": 0,
        "expiretm": 0,
        "descr": {
            "pair": "XXBTZUSD",
            "type": "buy",
            "ordertype": "stop-loss-limit",
            "price": "27500.0",
            "price2": "0",
            "leverage": "none",
            "order": "buy 1.25000000 XBTUSD @ limit 27500.0",
            "close": "",
        },
        "vol": "1.25000000",
        "vol_exec": "1.25000000",
        "cost": "27526.2",
        "fee": "26.2",
        "price": "27500.0",
        "stopprice": "0.000000",
        "limitprice": "0.000000",
        "misc": "",
        "oflags": "fciq",
    }
}


def test_orders_parse_the_documented_shape() -> None:
    (order,) = wire.orders(QUERY_ORDERS)
    assert (order.txid, order.cl_ord_id, order.status, order.volume_exec) == (
        "OBCMZD-JIEE7-77TH3F",
        "c-1",
        "closed",
        Decimal("1.25"),
    )
    assert wire.orders({"open": QUERY_ORDERS}, "open")[0].post_only is False


@pytest.mark.parametrize(
    "broken",
    [
        {"OB": {**QUERY_ORDERS["OBCMZD-JIEE7-77TH3F"], "status": "weird"}},
        {"OB": {**QUERY_ORDERS["OBCMZD-JIEE7-77TH3F"], "vol": "NaN"}},
        {"OB": {**QUERY_ORDERS["OBCMZD-JIEE7-77TH3F"], "vol": 1.5}},
        {"OB": {**QUERY_ORDERS["OBCMZD-JIEE7-77TH3F"], "descr": "buy"}},
        {"OB": []},
        [],
    ],
)
def test_malformed_orders_are_validation_errors_naming_the_field(broken: object) -> None:
    with pytest.raises(wire.KrakenWireError) as refused:
        wire.orders(broken)
    assert "order" in str(refused.value) or "result" in str(refused.value)


def test_envelope_and_trades() -> None:
    body = json.dumps(
        {
            "error": [],
            "result": {
                "trades": {
                    "THVRQM-33VKH-UCI7BS": {
                        "ordertxid": "OQCLML-BW3P3-BUCMWZ",
                        "postxid": "TKH2SE-M7IF5-CFI7LT",
                        "pair": "XXBTZUSD",
                        "time": 1688667796.8802,
                        "type": "buy",
                        "ordertype": "limit",
                        "price": "30010.00000",
                        "cost": "600.20000",
                        "fee": "0.00000",
                        "vol": "0.02000000",
                        "margin": "0.00000",
                        "misc": "",
                        "trade_id": 39482674,
                        "maker": True,
                    }
                },
                "count": 1,
            },
        }
    )
    errors, result = wire.envelope(body)
    (trade,), count = wire.trades(result)
    assert (errors, count, trade.price, trade.maker) == ([], 1, Decimal("30010.00000"), True)
    # time in ms, then the per-pair trade id
    assert fill_sequence(trade) == 1688667796880 * 1_000_000 + 482674
    assert wire.envelope('{"error": ["EService:Unavailable"]}') == (["EService:Unavailable"], None)
    with pytest.raises(wire.KrakenWireError):
        wire.envelope("<html>502</html>")
    with pytest.raises(wire.KrakenWireError):
        wire.envelope('{"error": []}')
