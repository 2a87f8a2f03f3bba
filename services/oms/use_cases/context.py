"""What every OMS use case needs: settings, the unit of work's sessionmaker, the outbox tables, the venue, the clock,
and the per-account gate that keeps waiting requests off the connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.oms.config import OmsSettings
from shared.db import UnitOfWork
from shared.domain.fees import AccountFeeSchedules
from shared.domain.money import InstrumentSpec
from shared.events.tables import EventTables
from shared.venues.base import VenueAdapter

SYSTEM_ACTOR = "system:oms"


def _nothing() -> None:
    return None


class AccountGate:
    """One in-process lock per account, taken *before* a transaction that locks the account's row.

    The row lock (`SELECT ... FOR UPDATE`) is what serializes an account across processes; this gate only makes
    the requests of one process queue in memory instead of each holding a pooled connection while it waits for
    the row (80 concurrent requests over 12 accounts would otherwise drain a 24-connection pool).
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, account_id: str) -> AsyncIterator[None]:
        """Wait for the account's turn in this process; released (and forgotten when idle) on exit."""
        lock, users = self._locks.get(account_id) or (asyncio.Lock(), 0)
        self._locks[account_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[account_id]
            if users == 1:
                del self._locks[account_id]
            else:
                self._locks[account_id] = (lock, users - 1)


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
    fee_schedules: AccountFeeSchedules = field(default_factory=AccountFeeSchedules)
    account_gate: AccountGate = field(default_factory=AccountGate)
    # Accounts whose venue could not take them at reconciliation (why): refused until reconciled once ready.
    not_ready: dict[str, str] = field(default_factory=dict)

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
        """The context with the configured instruments' specs and fee schedules."""
        instruments = {symbol: config.spec(symbol) for symbol, config in settings.instruments.items()}
        return cls(settings, sessionmaker, tables, venue, clock, on_commit, instruments, settings.fee_schedules())

    @asynccontextmanager
    async def account_transaction(self, account_id: str) -> AsyncIterator[UnitOfWork]:
        """A unit of work for changing one account (its turn in this process first; wakes the relay on commit)."""
        async with self.account_gate.hold(account_id), UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            yield uow
