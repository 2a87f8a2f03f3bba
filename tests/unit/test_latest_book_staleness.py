"""`LatestBookView.is_stale`: the age rule the OMS applies to market orders (`stale_market_data`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.types import Symbol
from shared.venues.base import LatestBookView

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _view(updated_at: datetime | None) -> LatestBookView:
    return LatestBookView(symbol=Symbol("BTC/USD"), bids=(), asks=(), updated_at=updated_at)


def test_a_book_older_than_the_limit_is_stale() -> None:
    assert _view(NOW - timedelta(seconds=31)).is_stale(NOW, 30)
    assert not _view(NOW - timedelta(seconds=30)).is_stale(NOW, 30)
    assert not _view(NOW - timedelta(seconds=1)).is_stale(NOW, 30)


def test_an_unknown_update_time_is_stale() -> None:
    assert _view(None).is_stale(NOW, 30)


def test_a_book_stamped_slightly_ahead_of_this_clock_is_fresh() -> None:
    """The Kraken feed stamps books with its own receive time; a writer's clock a little ahead is not staleness."""
    assert not _view(NOW + timedelta(seconds=2)).is_stale(NOW, 30)
