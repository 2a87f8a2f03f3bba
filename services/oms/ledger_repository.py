"""The SQL of the OMS's ledger (schema `oms`): balances, reservations, positions and the balance journal; deposits by
reference, quarantined venue fills, and the daily realized PnL the daily-loss limit reads."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.tables import (
    balance_journal,
    balances,
    daily_realized_pnl,
    deposits,
    fills,
    positions,
    quarantined_fills,
    reservations,
)
from shared.clock import utc_day
from shared.domain.ledger import Balance, Ledger, LedgerEntry, LedgerUpdate, Position, Reservation
from shared.domain.types import AccountId, Asset, OrderId, Symbol


class DepositStatus(StrEnum):
    """A deposit is `pending` from its request until the ledger is credited (then `applied`)."""

    PENDING = "pending"
    APPLIED = "applied"


@dataclass(frozen=True, slots=True)
class DepositRecord:
    """A deposit as the OMS recorded it; `balance` is the balance it left (None while pending)."""

    account_id: AccountId
    reference: str
    asset: Asset
    amount: Decimal
    status: DepositStatus
    balance: Balance | None


class LedgerRepository:
    """SQL of the OMS's ledger, bound to the caller's session (the unit of work commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def load_ledger(self, account_id: AccountId) -> Ledger:
        balance_rows = (
            await self.session.execute(sa.select(balances).where(balances.c.account_id == account_id))
        ).mappings()
        reservation_rows = (
            await self.session.execute(sa.select(reservations).where(reservations.c.account_id == account_id))
        ).mappings()
        position_rows = (
            await self.session.execute(sa.select(positions).where(positions.c.account_id == account_id))
        ).mappings()
        return Ledger(
            account_id,
            balances={Asset(r["asset"]): Balance(Asset(r["asset"]), r["total"], r["reserved"]) for r in balance_rows},
            reservations={
                OrderId(r["order_id"]): Reservation(OrderId(r["order_id"]), Asset(r["asset"]), r["remaining"])
                for r in reservation_rows
            },
            positions={
                Symbol(r["symbol"]): Position(
                    Symbol(r["symbol"]), r["quantity"], r["cost_basis"], r["realized_pnl"], r["fees_paid"]
                )
                for r in position_rows
            },
        )

    async def save_ledger(self, before: Ledger, update: LedgerUpdate) -> dict[str, int]:
        """Persist what changed between `before` and `update.ledger` and append the journal entries; per asset
        journaled, the id of its last new entry (the balance's version)."""
        after = update.ledger
        changed = [balance for asset, balance in after.balances.items() if before.balances.get(asset) != balance]
        await self._upsert_balances(after.account_id, changed)
        await self._save_reservations(before, after)
        for symbol, position in after.positions.items():
            if before.positions.get(symbol) != position:
                await self._upsert_position(after.account_id, position)
        return await self._journal(update.entries)

    async def balance_versions(self, account_id: str, assets: Sequence[str]) -> dict[str, int]:
        """Per asset, the id of the last journal entry that moved it: a version that grows with every change."""
        if not assets:
            return {}
        query = (
            sa.select(balance_journal.c.asset, sa.func.max(balance_journal.c.entry_id))
            .where(balance_journal.c.account_id == account_id, balance_journal.c.asset.in_(assets))
            .group_by(balance_journal.c.asset)
        )
        return {row[0]: int(row[1]) for row in (await self.session.execute(query)).all()}

    async def _upsert_balances(self, account_id: str, changed: Sequence[Balance]) -> None:
        """One statement for every balance that moved (a fill moves two: base and quote)."""
        if not changed:
            return
        statement = pg_insert(balances).values(
            [{"account_id": account_id, "asset": b.asset, "total": b.total, "reserved": b.reserved} for b in changed]
        )
        statement = statement.on_conflict_do_update(
            index_elements=["account_id", "asset"],
            set_={
                "total": statement.excluded.total,
                "reserved": statement.excluded.reserved,
                "updated_at": sa.func.now(),
            },
        )
        await self.session.execute(statement)

    async def _save_reservations(self, before: Ledger, after: Ledger) -> None:
        for order_id, reservation in after.reservations.items():
            if before.reservations.get(order_id) == reservation:
                continue
            statement = pg_insert(reservations).values(
                order_id=order_id, account_id=after.account_id, asset=reservation.asset, remaining=reservation.remaining
            )
            statement = statement.on_conflict_do_update(
                index_elements=["order_id"], set_={"remaining": reservation.remaining}
            )
            await self.session.execute(statement)
        gone = [order_id for order_id in before.reservations if order_id not in after.reservations]
        if gone:
            await self.session.execute(sa.delete(reservations).where(reservations.c.order_id.in_(gone)))

    async def _upsert_position(self, account_id: str, position: Position) -> None:
        values = {
            "quantity": position.quantity,
            "cost_basis": position.cost_basis,
            "realized_pnl": position.realized_pnl,
            "fees_paid": position.fees_paid,
        }
        statement = pg_insert(positions).values(account_id=account_id, symbol=position.symbol, **values)
        statement = statement.on_conflict_do_update(
            index_elements=["account_id", "symbol"], set_={**values, "updated_at": sa.func.now()}
        )
        await self.session.execute(statement)

    async def _journal(self, entries: Sequence[LedgerEntry]) -> dict[str, int]:
        if not entries:
            return {}
        rows = [
            {
                "account_id": entry.account_id,
                "asset": entry.asset,
                "delta_total": entry.delta_total,
                "delta_reserved": entry.delta_reserved,
                "reason": entry.reason.value,
                "reference": entry.reference,
            }
            for entry in entries
        ]
        inserted = sa.insert(balance_journal).returning(balance_journal.c.asset, balance_journal.c.entry_id)
        versions: dict[str, int] = {}
        for asset, entry_id in (await self.session.execute(inserted, rows)).all():
            versions[asset] = max(versions.get(asset, 0), int(entry_id))
        return versions

    async def list_balances(self, account_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        query = sa.select(balances).order_by(balances.c.account_id, balances.c.asset)
        if account_ids is not None:
            query = query.where(balances.c.account_id.in_(account_ids))
        return [dict(row) for row in (await self.session.execute(query)).mappings().all()]

    async def list_positions(self, account_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        query = sa.select(positions).order_by(positions.c.account_id, positions.c.symbol)
        if account_ids is not None:
            query = query.where(positions.c.account_id.in_(account_ids))
        return [dict(row) for row in (await self.session.execute(query)).mappings().all()]

    # --- deposits (and withdrawals: `table=withdrawals`, the same columns) ----------------------------

    async def record_deposit(
        self,
        account_id: str,
        reference: str,
        asset: str,
        amount: Decimal,
        actor: str,
        now: datetime,
        *,
        table: sa.Table = deposits,
    ) -> DepositRecord:
        """The deposit under (account, reference): recorded `pending` now, or the one recorded before."""
        statement = (
            pg_insert(table)
            .values(
                account_id=account_id,
                reference=reference,
                asset=asset,
                amount=amount,
                status=DepositStatus.PENDING.value,
                requested_by=actor,
                requested_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "reference"])
        )
        await self.session.execute(statement)
        recorded = await self.find_deposit(account_id, reference, table=table)
        if recorded is None:  # inserted or already there, in this transaction: never absent
            raise RuntimeError(f"deposit {account_id}/{reference} vanished")
        return recorded

    async def find_deposit(
        self, account_id: str, reference: str, *, table: sa.Table = deposits
    ) -> DepositRecord | None:
        query = sa.select(table).where(table.c.account_id == account_id, table.c.reference == reference)
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _deposit(row)

    async def pending_deposits(self, account_id: str, *, table: sa.Table = deposits) -> list[DepositRecord]:
        query = (
            sa.select(table)
            .where(table.c.account_id == account_id, table.c.status == DepositStatus.PENDING.value)
            .order_by(table.c.requested_at)
        )
        return [_deposit(row) for row in (await self.session.execute(query)).mappings().all()]

    async def mark_deposit_applied(
        self, account_id: str, reference: str, balance: Balance, now: datetime, *, table: sa.Table = deposits
    ) -> None:
        await self.session.execute(
            sa.update(table)
            .where(table.c.account_id == account_id, table.c.reference == reference)
            .values(
                status=DepositStatus.APPLIED.value,
                applied_at=now,
                balance_total=balance.total,
                balance_reserved=balance.reserved,
            )
        )

    async def forget_pending_deposit(self, account_id: str, reference: str, *, table: sa.Table = deposits) -> None:
        """Drop a deposit the venue refused (nothing was credited anywhere)."""
        await self.session.execute(
            sa.delete(table).where(
                table.c.account_id == account_id,
                table.c.reference == reference,
                table.c.status == DepositStatus.PENDING.value,
            )
        )

    # --- fills the OMS has settled: applied or quarantined -------------------------------------------------

    async def quarantine_fill(self, values: dict[str, Any]) -> bool:
        """Set a refused venue fill aside once: False when (venue, trade_id) was quarantined before."""
        statement = (
            pg_insert(quarantined_fills)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["venue", "trade_id"])
            .returning(quarantined_fills.c.quarantine_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def fill_recorded(self, venue: str, trade_id: str) -> bool:
        query = sa.select(sa.exists().where(fills.c.venue == venue, fills.c.trade_id == trade_id))
        return bool(await self.session.scalar(query))

    async def settled_trade_ids(self, venue: str, trade_ids: Collection[str]) -> set[str]:
        """Those of `trade_ids` the OMS has applied or quarantined."""
        if not trade_ids:
            return set()
        applied = sa.select(fills.c.trade_id).where(fills.c.venue == venue, fills.c.trade_id.in_(trade_ids))
        quarantined = sa.select(quarantined_fills.c.trade_id).where(
            quarantined_fills.c.venue == venue, quarantined_fills.c.trade_id.in_(trade_ids)
        )
        return set((await self.session.scalars(sa.union(applied, quarantined))).all())

    # --- daily realized PnL ----------------------------------------------------------------------------------

    async def add_fill_pnl(self, before: Ledger, after: Ledger, symbol: Symbol, filled_at: datetime) -> None:
        """Add what a fill realized in `symbol` (before -> after) to the UTC day of the fill, in its transaction."""
        delta = after.position(symbol).realized_pnl - before.position(symbol).realized_pnl
        if delta != 0:
            await self._add_realized_pnl(after.account_id, utc_day(filled_at), delta)

    async def _add_realized_pnl(self, account_id: str, day: date, delta: Decimal) -> None:
        insert = pg_insert(daily_realized_pnl).values(account_id=account_id, day=day, realized_pnl=delta)
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=["account_id", "day"],
                set_={"realized_pnl": daily_realized_pnl.c.realized_pnl + insert.excluded.realized_pnl},
            )
        )

    async def realized_pnl_on(self, account_id: str, day: date) -> Decimal:
        """The account's realized PnL of the fills of one UTC day (one row: it does not grow with history)."""
        query = sa.select(daily_realized_pnl.c.realized_pnl).where(
            daily_realized_pnl.c.account_id == account_id, daily_realized_pnl.c.day == day
        )
        return Decimal(await self.session.scalar(query) or 0)


def _deposit(row: sa.RowMapping) -> DepositRecord:
    asset = Asset(row["asset"])
    balance = None if row["balance_total"] is None else Balance(asset, row["balance_total"], row["balance_reserved"])
    return DepositRecord(
        AccountId(row["account_id"]), row["reference"], asset, row["amount"], DepositStatus(row["status"]), balance
    )
