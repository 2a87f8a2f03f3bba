"""`aether data check`: gaps, out-of-order and duplicate trades, reported; duplicates quarantined with the reason.

A duplicate (the same venue + instrument + trade id stored at two times) is a bad row: every copy after the
first is moved to `marketdata.quarantine` (source `check:marketdata.trades`, position = the row's key) and
deleted from the trades in the same transaction, so it is neither lost nor counted twice. Out-of-order trades
and gaps are reported only: they describe the feed, and the rows themselves may be right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from data.ingest import store
from shared.db.uow import UnitOfWork

CHECK_SOURCE = "check:marketdata.trades"


@dataclass
class CheckReport:
    """What one check found (counts, and the first examples of each kind)."""

    duplicates: int = 0
    quarantined: int = 0
    out_of_order: int = 0
    time_gaps: int = 0
    id_gaps: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when nothing was found."""
        return not (self.duplicates or self.out_of_order or self.time_gaps or self.id_gaps)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "clean": self.clean}


async def check_trades(
    sessionmaker: async_sessionmaker[AsyncSession],
    scope: store.Scope,
    *,
    max_gap: timedelta,
    quarantine_duplicates: bool = True,
    examples: int = 20,
) -> CheckReport:
    """Run every check over `scope`; with `quarantine_duplicates`, move duplicate rows to the quarantine."""
    report = CheckReport()
    async with UnitOfWork(sessionmaker) as uow:
        duplicates = await store.duplicate_trades(uow.session, scope)
        report.duplicates = len(duplicates)
        report.examples["duplicates"] = [
            {"key": trade.key(), "first_at": first_at.isoformat()} for trade, first_at in duplicates[:examples]
        ]
        if quarantine_duplicates:
            entries = [
                store.QuarantineEntry(
                    CHECK_SOURCE,
                    trade.key(),
                    f"duplicate trade id (first stored at {first_at.isoformat()})",
                    trade.raw(),
                )
                for trade, first_at in duplicates
            ]
            await store.quarantine(uow.session, entries)
            for trade, _ in duplicates:
                report.quarantined += await store.delete_trade(uow.session, trade)
    async with UnitOfWork(sessionmaker) as uow:
        report.out_of_order, late = await store.out_of_order_trades(uow.session, scope, examples)
        report.examples["out_of_order"] = [{"key": trade.key()} for trade in late]
        report.time_gaps, gaps = await store.time_gaps(uow.session, scope, max_gap, examples)
        report.examples["time_gaps"] = [asdict(gap) for gap in gaps]
        report.id_gaps, holes = await store.id_gaps(uow.session, scope, examples)
        report.examples["id_gaps"] = [asdict(gap) for gap in holes]
    return report
