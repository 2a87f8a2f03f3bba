"""Venue choice per account: calls go to the account's venue, never to one nobody chose."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import VenueOperationalError, VenueOrderRequest, VenueRejected, VenueUpdate
from shared.venues.router import VenueRouter, VenueRoutingError
from tests.fakes.venue import FakeVenue

USD = Asset("USD")


class _Unfundable:
    """A venue without `deposit` (as a real exchange)."""

    def __init__(self, inner: FakeVenue) -> None:
        self.inner = inner
        self.name = "kraken"
        self.subscribe = inner.subscribe
        self.submit = inner.submit
        self.cancel = inner.cancel
        self.query = inner.query
        self.open_orders = inner.open_orders
        self.fills_since = inner.fills_since
        self.balances = inner.balances


def _market_buy(account: str) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=AccountId(account),
        client_order_id=ClientOrderId(f"c-{uuid.uuid4().hex[:8]}"),
        symbol=Symbol("BTC/USD"),
        side=OrderSide.BUY,
        type=OrderType.MARKET,
        quantity=Decimal("0.1"),
        limit_price=None,
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )


async def test_each_account_trades_on_its_own_venue() -> None:
    paper, kraken_inner = FakeVenue(), FakeVenue()
    router = VenueRouter({"paper": paper, "kraken": _Unfundable(kraken_inner)}, {"acct-k": "kraken"}, default="paper")
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    router.subscribe(listen)
    await router.submit(_market_buy("acct-k"))
    await router.submit(_market_buy("acct-p"))

    assert (paper.submit_calls, kraken_inner.submit_calls) == (1, 1)
    assert [f.account_id for f in await router.fills_since(AccountId("acct-k"), 0)] == ["acct-k"]
    assert [f.account_id for f in kraken_inner.fills] == ["acct-k"]
    assert {getattr(u, "account_id", None) for u in heard} == {"acct-k", "acct-p"}
    assert list(router.venues_in_use()) == ["kraken", "paper"]


async def test_funding_is_only_where_we_can_credit() -> None:
    router = VenueRouter({"paper": FakeVenue(), "kraken": _Unfundable(FakeVenue())}, {"acct-k": "kraken"}, "paper")
    await router.deposit(AccountId("acct-p"), USD, Decimal(10), "ref-1")
    with pytest.raises(VenueRejected) as refused:
        await router.deposit(AccountId("acct-k"), USD, Decimal(10), "ref-2")
    assert refused.value.code == "funding_not_supported"


async def test_an_account_without_a_venue_is_refused_not_defaulted() -> None:
    router = VenueRouter({"kraken": _Unfundable(FakeVenue())}, {"acct-k": "kraken"})
    with pytest.raises(VenueOperationalError, match="acct-x is not ready: no venue is configured"):
        await router.submit(_market_buy("acct-x"))
    assert await router.not_ready([AccountId("acct-x"), AccountId("acct-k")]) == {
        "acct-x": "no venue is configured for it"
    }


def test_routes_to_an_unconfigured_venue_are_a_configuration_error() -> None:
    with pytest.raises(VenueRoutingError, match="kraken"):
        VenueRouter({"paper": FakeVenue()}, {"acct-k": "kraken"}, default="paper")
