"""Where each OMS account trades: `AETHER_ACCOUNT_VENUES` is checked at start-up, and the use cases ask the router
for the account's venue (one venue for everybody when there is no router)."""

from __future__ import annotations

import pytest

from services.oms.config import OmsSettings, parse_account_venues
from shared.config import ConfigurationError, load_settings
from shared.domain.types import AccountId
from shared.venues.base import VenueNotReady
from shared.venues.router import VenueRouter, account_not_ready, account_venue, account_venue_name, venues_in_use
from tests.fakes.venue import FakeVenue


def test_routes_are_parsed_from_account_equals_venue_pairs() -> None:
    assert parse_account_venues(" acct-1=kraken, acct-2=paper ,") == {"acct-1": "kraken", "acct-2": "paper"}
    assert parse_account_venues("") == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("acct-1=bitstamp", "account acct-1: unknown venue 'bitstamp'"),
        ("acct-1", "'acct-1' is not ACCOUNT=VENUE"),
        ("=kraken", "'=kraken' is not ACCOUNT=VENUE"),
        ("acct-1=kraken,acct-1=paper", "account acct-1 is routed to two venues"),
    ],
)
def test_a_bad_route_refuses_to_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("AETHER_ACCOUNT_VENUES", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(OmsSettings)
    assert "account_venues" in str(refused.value).lower()
    assert message in str(refused.value)


def test_the_default_venue_may_be_none_so_every_account_needs_a_route() -> None:
    settings = OmsSettings(venue="none", account_venues="acct-1=kraken")
    assert settings.default_venue() is None
    assert settings.venues_used() == {"kraken"}
    assert OmsSettings().venues_used() == {"paper"}  # the default: every account on paper, as before
    with pytest.raises(ValueError, match="venue"):
        OmsSettings(venue="bitstamp")


async def test_use_cases_see_the_accounts_venue_behind_a_router_and_the_one_venue_without() -> None:
    paper, kraken = FakeVenue(), FakeVenue()
    kraken.name = "kraken"
    router = VenueRouter({"paper": paper, "kraken": kraken}, {"acct-k": "kraken"}, default=None)

    assert (account_venue_name(router, "acct-k"), account_venue(router, "acct-k")) == ("kraken", kraken)
    assert list(venues_in_use(router)) == ["kraken"]
    with pytest.raises(VenueNotReady) as refused:
        account_venue_name(router, "acct-p")
    assert refused.value.reason == "no venue is configured for it"
    assert await account_not_ready(router, AccountId("acct-p")) == "no venue is configured for it"
    assert await account_not_ready(router, AccountId("acct-k")) is None
    assert (account_venue_name(paper, "anyone"), list(venues_in_use(paper))) == (paper.name, [paper.name])
    assert await account_not_ready(paper, AccountId("anyone")) is None
