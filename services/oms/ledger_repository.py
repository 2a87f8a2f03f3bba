"""The SQL of the OMS's ledger (schema `oms`): balances, reservations, positions and the balance journal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.tables import balance_journal, balances, positions, reservations
from shared.domain.ledger import Balance, Ledger, LedgerEntry, LedgerUpdate, Position, Reservation
from shared.domain.types import AccountId, Asset, OrderId, Symbol


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
        for asset, balance in after.balances.items():
            if before.balances.get(asset) != balance:
                await self._upsert_balance(after.account_id, balance)
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

    async def _upsert_balance(self, account_id: str, balance: Balance) -> None:
        statement = pg_insert(balances).values(
            account_id=account_id, asset=balance.asset, total=balance.total, reserved=balance.reserved
        )
        statement = statement.on_conflict_do_update(
            index_elements=["account_id", "asset"],
            set_={"total": balance.total, "reserved": balance.reserved, "updated_at": sa.func.now()},
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
