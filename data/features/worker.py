"""The streaming engine as a Kafka consumer: `marketdata.*` in (through the inbox), closed bars written to
`marketdata.features` and published on `analytics.feature-events.v1` (through the outbox) in the same transaction.

The engine's state lives in memory: a message's change to it is kept only when its transaction commits (a
rolled-back or retried attempt leaves the state as it was). After a restart the open bar starts empty and the
windows refill over `HISTORY` bars; `store.recompute` rewrites a range from the stored data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from data.features.definitions import BAR_US
from data.features.store import from_us, save_bars, to_message
from data.features.stream import GRACE_US, FeatureStream
from shared.contracts.base import ContractViolation
from shared.contracts.registry import new_envelope
from shared.events import Envelope
from shared.events.outbox import OutboxItem, add_many_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import ANALYTICS_FEATURE_EVENTS
from shared.marketdata import MarketDataError, decode_marketdata

PRODUCER = "analytics"


class FeatureWorker:
    """Handler of the market-data topics for `run_consumer` (idempotent through the consumer's inbox)."""

    def __init__(self, tables: EventTables) -> None:
        self.tables = tables
        self.stream = FeatureStream(grace_us=GRACE_US)

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
        """Fold one market-data message in; write and publish the bars it closed."""
        try:
            message = decode_marketdata(envelope)
        except MarketDataError as exc:
            raise ContractViolation(str(exc)) from None  # dead-lettered with the reason
        before = self.stream.checkpoint(message.venue, message.symbol)
        settled = False

        def committed(_: Any) -> None:
            nonlocal settled
            settled = True

        def rolled_back(_: Any) -> None:
            nonlocal settled
            if not settled:
                self.stream.restore(message.venue, message.symbol, before)
                settled = True

        event.listen(session.sync_session, "after_commit", committed, once=True)
        event.listen(session.sync_session, "after_rollback", rolled_back, once=True)
        bars = self.stream.on_message(message)
        if not bars:
            return
        await save_bars(session, bars)
        items = [
            OutboxItem(
                ANALYTICS_FEATURE_EVENTS,
                new_envelope(
                    to_message(bar), producer=PRODUCER, aggregate_id=bar.symbol, now=from_us(bar.bar_us + BAR_US)
                ),
                bar.symbol,
            )
            for bar in bars
        ]
        await add_many_to_outbox(session, self.tables, items)
