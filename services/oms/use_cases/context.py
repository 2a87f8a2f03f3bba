"""What every OMS use case needs: settings, the unit of work's sessionmaker, the outbox tables, the venue, the clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.oms.config import OmsSettings
from shared.domain.money import InstrumentSpec
from shared.events.tables import EventTables
from shared.venues.base import VenueAdapter

SYSTEM_ACTOR = "system:oms"


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class OmsContext:
    """Shared by the use cases of one OMS process."""

    settings: OmsSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    venue: VenueAdapter
    clock: Callable[[], datetime]
    on_commit: Callable[[], None] = _nothing  # wakes the outbox relay
    instruments: Mapping[str, InstrumentSpec] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        settings: OmsSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        venue: VenueAdapter,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = _nothing,
    ) -> OmsContext:
        """The context with the configured instruments' specs."""
        instruments = {symbol: config.spec(symbol) for symbol, config in settings.instruments.items()}
        return cls(settings, sessionmaker, tables, venue, clock, on_commit, instruments)
