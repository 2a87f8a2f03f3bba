"""Binance signing (the documented HMAC example, Ed25519), the wire parsers, and the local order book procedure."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from shared.venues.binance import errors as berr
from shared.venues.binance import wire
from shared.venues.binance.book import BookGap, DepthSnapshot, DepthUpdate, LocalBook, depth_snapshot, depth_update
from shared.venues.binance.signing import (
    Ed25519Signer,
    HmacSigner,
    InvalidSecret,
    encode_params,
    signer_for,
    verify_ed25519,
    verify_hmac,
)

# developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security, "SIGNED Endpoint Examples for
# POST /api/v3/order - HMAC Keys" (example keys published there).
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_PARAMS = {
    "symbol": "LTCBTC",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "1",
    "price": "0.1",
    "recvWindow": "5000",
    "timestamp": "1499827319559",
}
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_hmac_signature_matches_the_documented_example() -> None:
    payload = encode_params(DOC_PARAMS)
    assert payload == (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    assert HmacSigner(DOC_SECRET).sign(payload) == DOC_SIGNATURE
    assert verify_hmac(payload, DOC_SECRET, DOC_SIGNATURE.upper())  # HMAC signatures are case-insensitive
    assert not verify_hmac(payload + "&x=1", DOC_SECRET, DOC_SIGNATURE)


def _ed25519_pair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_ed25519_signs_the_ascii_payload_in_base64() -> None:
    private, public = _ed25519_pair()
    payload = encode_params(DOC_PARAMS)
    signer = signer_for(private)
    assert isinstance(signer, Ed25519Signer)
    signature = signer.sign(payload)
    assert len(signature) == 88  # 64 bytes, base64
    assert verify_ed25519(payload, public, signature)
    assert not verify_ed25519(payload.replace("BUY", "SELL"), public, signature)
    assert not verify_ed25519(payload, _ed25519_pair()[1], signature)


def test_secrets_that_cannot_sign_are_refused_without_echoing_them() -> None:
    assert isinstance(signer_for(DOC_SECRET), HmacSigner)
    with pytest.raises(InvalidSecret) as caught:
        signer_for("-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----")
    assert "not-a-key" not in str(caught.value)
    with pytest.raises(InvalidSecret):
        signer_for("")


def test_error_codes_map_to_the_platform_meanings() -> None:
    assert berr.error_kind(berr.INVALID_TIMESTAMP, berr.MSG_TIMESTAMP) is berr.ErrorKind.TIMESTAMP
    assert berr.error_kind(berr.TOO_MANY_REQUESTS, "") is berr.ErrorKind.RATE_LIMITED
    assert berr.error_kind(berr.NEW_ORDER_REJECTED, berr.MSG_DUPLICATE) is berr.ErrorKind.DUPLICATE
    assert berr.error_kind(berr.BACKEND_TIMEOUT, "") is berr.ErrorKind.UNAVAILABLE
    assert berr.error_kind(berr.REJECTED_MBX_KEY, "") is berr.ErrorKind.OPERATIONAL
    assert berr.rejection_code(berr.NEW_ORDER_REJECTED, berr.MSG_INSUFFICIENT) == "insufficient_funds"
    assert berr.rejection_code(berr.NEW_ORDER_REJECTED, berr.MSG_WOULD_TAKE) == "post_only_would_cross"
    assert berr.rejection_code(berr.NEW_ORDER_REJECTED, "Something else.") == "venue_rejected"
    assert berr.rejection_code(berr.NO_SUCH_ORDER, berr.MSG_NO_SUCH_ORDER) == "unknown_order"


def test_exchange_info_filters_become_instrument_precision() -> None:
    body = {
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "status": "TRADING",
                "baseAsset": "BTC",
                "baseAssetPrecision": 8,
                "quoteAsset": "USDT",
                "quoteAssetPrecision": 8,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0.01000000",
                        "maxPrice": "1000000.00",
                        "tickSize": "0.01000000",
                    },
                    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.0", "stepSize": "0.00001000"},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000"},
                ],
            },
            {"symbol": "OLDUSDT", "status": "BREAK", "filters": []},
        ]
    }
    (info,) = wire.exchange_info(body)
    assert (info.tick_size, info.step_size, info.min_qty, info.min_notional) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal("5"),
    )
    del body["symbols"][0]["filters"][1]  # type: ignore[index]
    with pytest.raises(wire.BinanceWireError, match="LOT_SIZE"):
        wire.exchange_info(body)


def test_malformed_orders_name_the_field() -> None:
    good = {
        "symbol": "BTCUSDT",
        "orderId": 1,
        "clientOrderId": "c-1",
        "side": "BUY",
        "type": "LIMIT",
        "status": "NEW",
        "origQty": "1.00000000",
        "executedQty": "0.00000000",
        "updateTime": 1,
    }
    assert wire.order(good).orig_qty == Decimal(1)
    with pytest.raises(wire.BinanceWireError, match=r"order\.status"):
        wire.order({**good, "status": "WEIRD"})
    with pytest.raises(wire.BinanceWireError, match=r"order\.origQty"):
        wire.order({**good, "origQty": "NaN"})
    with pytest.raises(wire.BinanceWireError, match=r"order\.orderId"):
        wire.order({**good, "orderId": True})


# --- the local order book -----------------------------------------------------------------------------------


def _update(first: int, final: int, bids: list[tuple[str, str]] = (), asks: list[tuple[str, str]] = ()) -> DepthUpdate:  # type: ignore[assignment]
    return DepthUpdate(
        "BTCUSDT",
        0,
        first,
        final,
        tuple((Decimal(p), Decimal(q)) for p, q in bids),
        tuple((Decimal(p), Decimal(q)) for p, q in asks),
    )


def _snapshot(last: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> DepthSnapshot:
    return DepthSnapshot(
        last, tuple((Decimal(p), Decimal(q)) for p, q in bids), tuple((Decimal(p), Decimal(q)) for p, q in asks)
    )


def test_buffered_events_older_than_the_snapshot_are_dropped_and_later_ones_applied() -> None:
    book = LocalBook("BTCUSDT")
    assert not book.on_update(_update(101, 105, bids=[("99", "5")]))  # buffered, in the snapshot already
    assert not book.on_update(_update(106, 110, bids=[("100", "2")], asks=[("101", "0")]))
    assert not book.synced
    assert book.on_snapshot(_snapshot(107, bids=[("99", "1")], asks=[("101", "3"), ("102", "4")]))
    # 101..105 is older than 107 (ignored); 106..110 straddles 108 and applies.
    assert book.update_id == 110
    assert book.top(5) == (((Decimal(100), Decimal(2)), (Decimal(99), Decimal(1))), ((Decimal(102), Decimal(4)),))
    assert book.on_update(_update(111, 111, bids=[("100", "0")]))
    assert book.top(1)[0] == ((Decimal(99), Decimal(1)),)
    assert not book.on_update(_update(105, 110))  # old: ignored


def test_a_snapshot_older_than_the_first_buffered_event_is_fetched_again() -> None:
    book = LocalBook("BTCUSDT")
    book.on_update(_update(200, 205))
    assert not book.on_snapshot(_snapshot(150, [("1", "1")], []))
    assert (book.synced, book.stale_snapshots) == (False, 1)
    assert book.on_snapshot(_snapshot(202, [("1", "1")], []))
    assert book.update_id == 205


def test_a_gap_drops_the_book_counts_it_and_the_next_snapshot_resyncs() -> None:
    book = LocalBook("BTCUSDT")
    book.on_snapshot(_snapshot(10, [("99", "1")], [("101", "1")]))
    book.on_update(_update(11, 12, bids=[("98", "1")]))
    with pytest.raises(BookGap):
        book.on_update(_update(14, 15, bids=[("97", "1")]))  # 13 is missing
    assert (book.synced, book.gaps, book.bids) == (False, 1, {})
    book.on_update(_update(16, 16, asks=[("102", "1")]))
    assert book.on_snapshot(_snapshot(15, [("97", "1")], [("101", "1")]))
    assert book.update_id == 16
    assert book.top(2) == (((Decimal(97), Decimal(1)),), ((Decimal(101), Decimal(1)), (Decimal(102), Decimal(1))))


def test_a_gap_inside_the_buffer_keeps_the_events_after_it() -> None:
    book = LocalBook("BTCUSDT")
    book.on_update(_update(5, 6))
    book.on_update(_update(9, 10, bids=[("50", "1")]))  # 7..8 never arrived
    with pytest.raises(BookGap):
        book.on_snapshot(_snapshot(5, [], []))
    assert not book.synced
    assert book.on_snapshot(_snapshot(9, [("49", "2")], []))
    assert book.top(2)[0] == ((Decimal(50), Decimal(1)), (Decimal(49), Decimal(2)))


def test_a_long_random_diff_stream_rebuilds_the_venue_book_exactly() -> None:
    rng = random.Random(7)
    venue: dict[str, dict[Decimal, Decimal]] = {"b": {}, "a": {}}
    events: list[DepthUpdate] = []
    update_id = 1000
    snapshot_at = 40
    snapshot: DepthSnapshot | None = None
    for step in range(400):
        changes: dict[str, list[tuple[str, str]]] = {"b": [], "a": []}
        for _ in range(rng.randint(1, 4)):
            side = rng.choice("ba")
            price = Decimal(rng.randint(1, 50)) + (0 if side == "b" else 100)
            qty = Decimal(0) if rng.random() < 0.3 else Decimal(rng.randint(1, 900)) / 100
            changes[side].append((str(price), str(qty)))
            if qty == 0:
                venue[side].pop(price, None)
            else:
                venue[side][price] = qty
        first = update_id + 1
        update_id += rng.randint(1, 3)
        events.append(_update(first, update_id, bids=changes["b"], asks=changes["a"]))
        if step == snapshot_at:
            snapshot = DepthSnapshot(update_id, tuple(venue["b"].items()), tuple(venue["a"].items()))
    assert snapshot is not None
    book = LocalBook("BTCUSDT")
    for event in events[:60]:
        book.on_update(event)  # the stream started before the snapshot was fetched
    assert book.on_snapshot(snapshot)
    for event in events[60:]:
        book.on_update(event)
    assert (book.bids, book.asks, book.update_id) == (venue["b"], venue["a"], update_id)


@pytest.mark.parametrize(
    "event",
    [
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 5, "u": 4, "b": [], "a": []},
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["1", "x"]], "a": []},
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [[1, 2]], "a": []},
        {"e": "depthUpdate", "E": 1, "s": "", "U": 1, "u": 2, "b": [], "a": []},
        {"e": "trade"},
        [],
    ],
)
def test_malformed_depth_events_are_validation_errors(event: object) -> None:
    with pytest.raises(wire.BinanceWireError):
        depth_update(event)


def test_depth_snapshot_parses_the_documented_shape() -> None:
    body = {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.00000000"]]}
    snapshot = depth_snapshot(body)
    assert snapshot.last_update_id == 1027024
    assert snapshot.asks == ((Decimal("4.00000200"), Decimal(12)),)
