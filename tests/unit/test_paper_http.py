"""PaperHttpVenue maps what the network and the venue process answer to the protocol's error types
(shared/venues/base.py); the transport is faked at the network boundary (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueOperationalError,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
)
from shared.venues.paper_http import PaperHttpVenue

ACCOUNT = AccountId("acct-1")
REQUEST = VenueOrderRequest(
    account_id=ACCOUNT,
    client_order_id=ClientOrderId("c-1"),
    symbol=Symbol("BTC/USD"),
    side=OrderSide.BUY,
    type=OrderType.LIMIT,
    quantity=Decimal("1"),
    limit_price=Decimal("95"),
    trigger_price=None,
    time_in_force=TimeInForce.GTC,
    post_only=False,
)
ORDER = {
    "kind": "order",
    "account_id": "acct-1",
    "client_order_id": "c-1",
    "venue_order_id": "v-1",
    "symbol": "BTC/USD",
    "side": "buy",
    "type": "limit",
    "quantity": "1",
    "filled_quantity": "0",
    "status": "open",
    "reason": None,
    "updated_at": datetime(2026, 3, 2, tzinfo=UTC).isoformat(),
}


async def _token() -> str:
    return "t"


def _venue(handler: Callable[[httpx.Request], httpx.Response]) -> PaperHttpVenue:
    return PaperHttpVenue("http://venue", _token, transport=httpx.MockTransport(handler))


def _raise(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return handler


def _answer(status: int, body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def _error(code: str, message: str = "m") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


async def test_a_submit_sends_decimals_as_strings_and_the_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ORDER)

    order = await _venue(handler).submit(REQUEST)

    assert order.status is VenueOrderStatus.OPEN
    assert seen[0].headers["authorization"] == "Bearer t"
    assert b'"limit_price":"95"' in seen[0].content


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_a_write_that_was_never_sent_is_temporary(failure: type[httpx.TransportError]) -> None:
    with pytest.raises(TemporaryError):
        await _venue(_raise(failure)).submit(REQUEST)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError])
async def test_a_write_that_failed_after_sending_is_ambiguous(failure: type[httpx.TransportError]) -> None:
    with pytest.raises(AmbiguousOutcome):
        await _venue(_raise(failure)).submit(REQUEST)
    with pytest.raises(AmbiguousOutcome):
        await _venue(_raise(failure)).cancel(ACCOUNT, ClientOrderId("c-1"))


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_5xx_to_a_write_is_ambiguous(status: int) -> None:
    with pytest.raises(AmbiguousOutcome):
        await _venue(_answer(status, _error("outcome_unknown"))).submit(REQUEST)


async def test_a_503_the_venue_says_changed_nothing_is_temporary_and_a_bare_503_ambiguous() -> None:
    with pytest.raises(TemporaryError):
        await _venue(_answer(503, _error("temporarily_unavailable"))).submit(REQUEST)
    with pytest.raises(AmbiguousOutcome):
        await _venue(_answer(503, {"detail": "a proxy"})).submit(REQUEST)


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_a_read_that_fails_is_temporary(failure: type[httpx.TransportError]) -> None:
    with pytest.raises(TemporaryError):
        await _venue(_raise(failure)).query(ACCOUNT, ClientOrderId("c-1"))
    with pytest.raises(TemporaryError):
        await _venue(_answer(502, {})).balances(ACCOUNT)


async def test_a_4xx_with_the_venues_code_is_rejected_with_that_code() -> None:
    with pytest.raises(VenueRejected) as refused:
        await _venue(_answer(400, _error("insufficient_funds", "short"))).submit(REQUEST)
    assert (refused.value.code, refused.value.message) == ("insufficient_funds", "short")


async def test_a_query_of_an_order_the_venue_never_saw_is_none_but_a_cancel_is_rejected() -> None:
    assert await _venue(_answer(404, _error("order_not_found"))).query(ACCOUNT, ClientOrderId("c-1")) is None
    with pytest.raises(VenueRejected) as refused:
        await _venue(_answer(404, _error("unknown_order"))).cancel(ACCOUNT, ClientOrderId("c-1"))
    assert refused.value.code == "unknown_order"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_operational(status: int) -> None:
    with pytest.raises(VenueOperationalError):
        await _venue(_answer(status, _error("forbidden"))).submit(REQUEST)


async def test_an_answer_that_is_not_the_venues_is_operational_and_429_temporary() -> None:
    with pytest.raises(VenueOperationalError):
        await _venue(_answer(404, {"detail": "Not Found"})).balances(ACCOUNT)
    with pytest.raises(TemporaryError):
        await _venue(_answer(429, _error("rate_limited"))).submit(REQUEST)


async def test_no_token_means_nothing_is_sent() -> None:
    async def broken() -> str:
        raise RuntimeError("accounts service down")

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=ORDER)

    venue = PaperHttpVenue("http://venue", broken, transport=httpx.MockTransport(handler))
    with pytest.raises(TemporaryError):
        await venue.submit(REQUEST)
    assert sent == []
