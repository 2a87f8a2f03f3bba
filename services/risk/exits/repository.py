"""Every SQL statement of the exit brackets (schema `risk`: exit_policies, exit_brackets, exit_orders)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.tables import exit_brackets, exit_feed_offsets, exit_orders, exit_policies
from shared.domain.bracket_model import (
    Bracket,
    BracketStatus,
    ExitLevels,
    ExitOrder,
    ExitOrderState,
    ExitPolicy,
    LegKind,
)
from shared.errors import Conflict

OPEN = (BracketStatus.ARMED.value, BracketStatus.EXITING.value)


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    account_id: str
    policy: ExitPolicy
    version: int
    updated_by: str
    updated_at: datetime | None


def bracket_row(b: Bracket, now: datetime) -> dict[str, Any]:
    working = b.working
    return {
        "bracket_id": b.bracket_id,
        "account_id": b.account_id,
        "symbol": b.symbol,
        "entry_order_id": b.entry_order_id,
        "status": b.status.value,
        "stop_loss": b.levels.stop_loss,
        "take_profit": b.levels.take_profit,
        "trailing_distance": b.levels.trailing_distance,
        "trailing_activation": b.levels.trailing_activation,
        "time_limit_s": b.levels.time_limit_s,
        "from_policy": b.from_policy,
        "swap_band_pct": b.swap_band_pct,
        "price_increment": b.price_increment,
        "entry_quantity": b.entry_quantity,
        "entry_cost": b.entry_cost,
        "exited_quantity": b.exited_quantity,
        "trailing_high": b.trailing_high,
        "stop_moved": b.stop_moved,
        "exit_leg": None if b.exit_leg is None else b.exit_leg.value,
        "sequence": b.sequence,
        "rejections": b.rejections,
        "last_price": b.last_price,
        "working_client_order_id": None if working is None else working.client_order_id,
        "working_leg": None if working is None else working.leg.value,
        "working_quantity": None if working is None else working.quantity,
        "working_limit_price": None if working is None else working.limit_price,
        "working_state": None if working is None else working.state.value,
        "working_filled": None if working is None else working.filled,
        "version": b.version,
        "opened_at": b.opened_at,
        "updated_at": now,
    }


def _working(row: Mapping[Any, Any]) -> ExitOrder | None:
    if row["working_client_order_id"] is None:
        return None
    return ExitOrder(
        client_order_id=row["working_client_order_id"],
        leg=LegKind(row["working_leg"]),
        quantity=row["working_quantity"],
        limit_price=row["working_limit_price"],
        state=ExitOrderState(row["working_state"]),
        filled=row["working_filled"],
    )


def bracket_from_row(row: Mapping[Any, Any]) -> Bracket:
    return Bracket(
        bracket_id=row["bracket_id"],
        account_id=row["account_id"],
        symbol=row["symbol"],
        entry_order_id=row["entry_order_id"],
        opened_at=row["opened_at"],
        levels=ExitLevels(
            stop_loss=row["stop_loss"],
            take_profit=row["take_profit"],
            trailing_distance=row["trailing_distance"],
            trailing_activation=row["trailing_activation"],
            time_limit_s=row["time_limit_s"],
        ),
        from_policy=row["from_policy"],
        swap_band_pct=row["swap_band_pct"],
        price_increment=row["price_increment"],
        entry_quantity=row["entry_quantity"],
        entry_cost=row["entry_cost"],
        exited_quantity=row["exited_quantity"],
        trailing_high=row["trailing_high"],
        stop_moved=row["stop_moved"],
        status=BracketStatus(row["status"]),
        working=_working(row),
        exit_leg=None if row["exit_leg"] is None else LegKind(row["exit_leg"]),
        sequence=row["sequence"],
        rejections=row["rejections"],
        last_price=row["last_price"],
        version=row["version"],
    )


class ExitRepository:
    """Brackets, their exit orders, policies and the market-data positions, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- brackets -----------------------------------------------------------------------------------------

    async def get(self, bracket_id: str, *, for_update: bool = False) -> Bracket | None:
        query = select(exit_brackets).where(exit_brackets.c.bracket_id == bracket_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else bracket_from_row(row)

    async def updated_at(self, bracket_id: str) -> datetime | None:
        query = select(exit_brackets.c.updated_at).where(exit_brackets.c.bracket_id == bracket_id)
        value: datetime | None = await self.session.scalar(query)
        return value

    async def open_for_symbols(self, symbols: Sequence[str]) -> list[Bracket]:
        """Open brackets of `symbols`, locked, in id order (one lock order for every worker)."""
        query = (
            select(exit_brackets)
            .where(exit_brackets.c.symbol.in_(list(symbols)), exit_brackets.c.status.in_(OPEN))
            .order_by(exit_brackets.c.bracket_id)
            .with_for_update()
        )
        return [bracket_from_row(row) for row in (await self.session.execute(query)).mappings()]

    async def open_with_time_limit(self) -> list[Bracket]:
        query = (
            select(exit_brackets)
            .where(exit_brackets.c.status.in_(OPEN), exit_brackets.c.time_limit_s.is_not(None))
            .order_by(exit_brackets.c.bracket_id)
            .with_for_update(skip_locked=True)
        )
        return [bracket_from_row(row) for row in (await self.session.execute(query)).mappings()]

    async def list_brackets(self, accounts: Sequence[str] | None, status: str | None, limit: int) -> list[Bracket]:
        query = select(exit_brackets).order_by(exit_brackets.c.opened_at.desc(), exit_brackets.c.bracket_id)
        if accounts is not None:
            query = query.where(exit_brackets.c.account_id.in_(list(accounts)))
        if status is not None:
            query = query.where(exit_brackets.c.status == status)
        rows = (await self.session.execute(query.limit(limit))).mappings()
        return [bracket_from_row(row) for row in rows]

    async def insert(self, bracket: Bracket, now: datetime) -> None:
        await self.session.execute(insert(exit_brackets).values(**bracket_row(bracket, now)))

    async def save(self, before: Bracket, after: Bracket, now: datetime) -> None:
        """Write `after` when the stored version is still `before.version` (optimistic check under the row lock)."""
        result = await self.session.execute(
            update(exit_brackets)
            .where(exit_brackets.c.bracket_id == after.bracket_id, exit_brackets.c.version == before.version)
            .values(**bracket_row(after, now))
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"bracket {after.bracket_id} changed concurrently")

    # --- exit orders --------------------------------------------------------------------------------------

    async def record_exit_order(self, bracket: Bracket, order: ExitOrder, now: datetime) -> None:
        await self.session.execute(
            insert(exit_orders)
            .values(
                client_order_id=order.client_order_id,
                bracket_id=bracket.bracket_id,
                account_id=bracket.account_id,
                leg=order.leg.value,
                quantity=order.quantity,
                limit_price=order.limit_price,
                status="submitted",
                filled_quantity=Decimal(0),
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[exit_orders.c.client_order_id])
        )

    async def mark_exit_order(
        self, client_order_id: str, status: str, now: datetime, filled: Decimal | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if filled is not None:
            values["filled_quantity"] = exit_orders.c.filled_quantity + filled
        await self.session.execute(
            update(exit_orders).where(exit_orders.c.client_order_id == client_order_id).values(**values)
        )

    async def exit_orders_of(self, bracket_id: str) -> list[dict[str, Any]]:
        query = select(exit_orders).where(exit_orders.c.bracket_id == bracket_id).order_by(exit_orders.c.created_at)
        return [dict(row) for row in (await self.session.execute(query)).mappings()]

    # --- policies -----------------------------------------------------------------------------------------

    async def policy(self, account_id: str) -> StoredPolicy | None:
        row = (
            (await self.session.execute(select(exit_policies).where(exit_policies.c.account_id == account_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        policy = ExitPolicy(
            stop_loss_pct=row["stop_loss_pct"],
            take_profit_pct=row["take_profit_pct"],
            trailing_distance_pct=row["trailing_distance_pct"],
            trailing_activation_pct=row["trailing_activation_pct"],
            time_limit_s=row["time_limit_s"],
            swap_band_pct=row["swap_band_pct"],
            require_explicit_exits=row["require_explicit_exits"],
        )
        return StoredPolicy(account_id, policy, row["version"], row["updated_by"], row["updated_at"])

    async def all_policies(self) -> list[StoredPolicy]:
        accounts = (await self.session.execute(select(exit_policies.c.account_id).order_by("account_id"))).scalars()
        found = [await self.policy(account_id) for account_id in list(accounts)]
        return [stored for stored in found if stored is not None]

    async def save_policy(self, account_id: str, policy: ExitPolicy, actor: str, now: datetime) -> int:
        """Insert or replace the account's policy; return its new version."""
        values = {
            "stop_loss_pct": policy.stop_loss_pct,
            "take_profit_pct": policy.take_profit_pct,
            "trailing_distance_pct": policy.trailing_distance_pct,
            "trailing_activation_pct": policy.trailing_activation_pct,
            "time_limit_s": policy.time_limit_s,
            "swap_band_pct": policy.swap_band_pct,
            "require_explicit_exits": policy.require_explicit_exits,
            "updated_by": actor,
            "updated_at": now,
        }
        statement = (
            insert(exit_policies)
            .values(account_id=account_id, version=1, **values)
            .on_conflict_do_update(
                index_elements=[exit_policies.c.account_id],
                set_={**values, "version": exit_policies.c.version + 1},
            )
            .returning(exit_policies.c.version)
        )
        version: int = (await self.session.execute(statement)).scalar_one()
        return version

    # --- market-data positions ----------------------------------------------------------------------------

    async def feed_offsets(self, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        query = select(exit_feed_offsets).where(exit_feed_offsets.c.topic.in_(list(topics)))
        rows = (await self.session.execute(query)).mappings()
        return {(row["topic"], row["partition"]): row["next_offset"] for row in rows}

    async def save_feed_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), next_offset in sorted(offsets.items()):
            statement = insert(exit_feed_offsets).values(topic=topic, partition=partition, next_offset=next_offset)
            await self.session.execute(
                statement.on_conflict_do_update(
                    index_elements=[exit_feed_offsets.c.topic, exit_feed_offsets.c.partition],
                    set_={
                        "next_offset": func.greatest(exit_feed_offsets.c.next_offset, statement.excluded.next_offset)
                    },
                )
            )
