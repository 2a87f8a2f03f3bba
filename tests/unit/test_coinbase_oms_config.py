"""Coinbase as a per-account venue choice of the OMS (`AETHER_ACCOUNT_VENUES`, `AETHER_VENUE`)."""

from __future__ import annotations

from services.oms.config import VENUES, OmsSettings, parse_account_venues


def test_coinbase_is_a_venue_an_account_may_be_routed_to() -> None:
    assert "coinbase" in VENUES
    assert parse_account_venues("acct-1=coinbase,acct-2=kraken") == {"acct-1": "coinbase", "acct-2": "kraken"}


def test_coinbase_accounts_make_coinbase_a_venue_in_use() -> None:
    settings = OmsSettings(venue="paper", account_venues="acct-1=coinbase")
    assert settings.venues_used() == {"paper", "coinbase"}
    assert OmsSettings(venue="coinbase").venues_used() == {"coinbase"}
    assert settings.coinbase_url == "https://api.coinbase.com"
