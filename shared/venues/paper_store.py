"""Every SQL statement of the paper venue (schema `paper`): its accounts, orders, fills, balances and deposits."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.base import Money
from shared.domain.money import format_decimal
from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)
from shared.venues.base import VenueBalance, VenueFill, VenueOrder, VenueOrderStatus

SCHEMA = "paper"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
ZERO = Decimal(0)
HoldingKey = tuple[AccountId, Asset]

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("created_at", TS),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("venue_order_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("client_order_id", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("side", sa.Text),
    sa.Column("type", sa.Text),
    sa.Column("quantity", Money),
    sa.Column("limit_price", Money),
    sa.Column("trigger_price", Money),
    sa.Column("time_in_force", sa.Text),
    sa.Column("post_only", sa.Boolean),
    sa.Column("status", sa.Text),
    sa.Column("filled_quantity", Money),
    sa.Column("fill_count", sa.Integer),
    sa.Column("triggered", sa.Boolean),
    sa.Column("reason", sa.Text),
    sa.Column("reserved_asset", sa.Text),
    sa.Column("reserved_remaining", Money),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
)
fills = sa.Table(
    "fills",
    metadata,
    sa.Column("sequence", sa.BigInteger, primary_key=True),
    sa.Column("trade_id", sa.Text),
    sa.Column("venue_order_id", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("client_order_id", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("side", sa.Text),
    sa.Column("quantity", Money),
    sa.Column("price", Money),
    sa.Column("notional", Money),
    sa.Column("fee", Money),
    sa.Column("fee_asset", sa.Text),
    sa.Column("liquidity", sa.Text),
    sa.Column("filled_at", TS),
)
balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text, primary_key=True),
    sa.Column("total", Money),
    sa.Column("reserved", Money),
    sa.Column("updated_at", TS),
)
deposits = sa.Table(
    "deposits",
    metadata,
    sa.Column("deposit_id", sa.BigInteger, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("reference", sa.Text),
    sa.Column("created_at", TS),
)
withdrawals = sa.Table(
    "withdrawals",
    metadata,
    sa.Column("withdrawal_id", sa.BigInteger, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("reference", sa.Text),
    sa.Column("created_at", TS),
)
transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("transfer_id", sa.BigInteger, primary_key=True),
    sa.Column("reference", sa.Text),
    sa.Column("from_account_id", sa.Text),
    sa.Column("to_account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("created_at", TS),
)


class DepositReferenceReused(ValueError):
    """A deposit reference came back with another asset or amount than the first time."""


class TransferReferenceReused(ValueError):
    """A transfer reference came back with other accounts, asset or amount than the first time."""


class WithdrawalReferenceReused(ValueError):
    """A withdrawal reference came back with another asset or amount than the first time."""


class TransferExceedsFree(ValueError):
    """The source account's free balance does not cover the transfer (or the withdrawal)."""


@dataclass(frozen=True, slots=True)
class PaperOrder:
    """One row of `paper.orders`: the request as received and the venue's state of it."""

    venue_order_id: VenueOrderId
    account_id: AccountId
    client_order_id: ClientOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    time_in_force: TimeInForce
    post_only: bool
    status: VenueOrderStatus
    filled_quantity: Decimal
    fill_count: int
    triggered: bool
    reason: str | None
    reserved_asset: Asset
    reserved_remaining: Decimal
    created_at: datetime
    updated_at: datetime

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def is_open(self) -> bool:
        return self.status is VenueOrderStatus.OPEN

    def to_venue(self) -> VenueOrder:
        """The venue's answer about this order."""
        return VenueOrder(
            account_id=self.account_id,
            client_order_id=self.client_order_id,
            venue_order_id=self.venue_order_id,
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            filled_quantity=self.filled_quantity,
            status=self.status,
            reason=self.reason,
            updated_at=self.updated_at,
        )


@dataclass(frozen=True, slots=True)
class Holding:
    """A locked balance row: what the account has of one asset and how much of it orders hold."""

    total: Decimal
    reserved: Decimal

    @property
    def free(self) -> Decimal:
        return self.total - self.reserved


@dataclass(frozen=True, slots=True)
class LockedHoldings:
    """Balance rows locked for the transaction, and the 30-day traded volume of their accounts."""

    holdings: dict[HoldingKey, Holding]
    volumes_30d: dict[AccountId, Decimal]


class PaperStore:
    """The paper venue's SQL, inside the caller's transaction (the venue's own unit of work commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- accounts and balances -------------------------------------------------------------------------

    async def ensure_accounts(self, account_ids: Iterable[AccountId], now: datetime) -> None:
        """Create accounts on first use."""
        ids = sorted(set(account_ids))
        if ids:
            rows = [{"account_id": account_id, "created_at": now} for account_id in ids]
            await self.session.execute(pg_insert(accounts).on_conflict_do_nothing(), rows)

    async def lock_accounts(self, account_ids: Iterable[AccountId]) -> set[AccountId]:
        """Lock accounts (sorted) for the transaction: fills of one account commit in `sequence` order.

        Taken right before inserting fills, after the balance locks. FOR NO KEY UPDATE serializes the
        writers of fills per account without blocking foreign-key checks. Returns the accounts that exist.
        """
        ids = sorted(set(account_ids))
        if not ids:
            return set()
        query = (
            sa.select(accounts.c.account_id)
            .where(accounts.c.account_id.in_(ids))
            .order_by(accounts.c.account_id)
            .with_for_update(key_share=True)
        )
        return {AccountId(row[0]) for row in await self.session.execute(query)}

    async def record_deposit(
        self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str, now: datetime
    ) -> Holding:
        """Append a deposit and credit it, once per (account, reference); returns the balance. A reference seen
        before credits nothing (DepositReferenceReused when it was for another asset or amount)."""
        recorded = await self.session.execute(
            pg_insert(deposits)
            .values(account_id=account_id, asset=asset, amount=amount, reference=reference, created_at=now)
            .on_conflict_do_nothing(index_elements=[deposits.c.account_id, deposits.c.reference])
            .returning(deposits.c.deposit_id)
        )
        if recorded.first() is None:
            return await self._repeated_deposit(account_id, asset, amount, reference)
        insert = pg_insert(balances).values(
            account_id=account_id, asset=asset, total=amount, reserved=ZERO, updated_at=now
        )
        statement = insert.on_conflict_do_update(
            index_elements=[balances.c.account_id, balances.c.asset],
            set_={"total": balances.c.total + insert.excluded.total, "updated_at": insert.excluded.updated_at},
        ).returning(balances.c.total, balances.c.reserved)
        row = (await self.session.execute(statement)).one()
        return Holding(row.total, row.reserved)

    async def _repeated_deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> Holding:
        first = (
            await self.session.execute(
                sa.select(deposits.c.asset, deposits.c.amount).where(
                    deposits.c.account_id == account_id, deposits.c.reference == reference
                )
            )
        ).one()
        if (first.asset, first.amount) != (asset, amount):
            raise DepositReferenceReused(
                f"deposit {reference!r} of {account_id} was {format_decimal(first.amount)} {first.asset}"
            )
        row = (
            await self.session.execute(
                sa.select(balances.c.total, balances.c.reserved).where(
                    balances.c.account_id == account_id, balances.c.asset == asset
                )
            )
        ).one()
        return Holding(row.total, row.reserved)

    async def record_transfer(
        self, source: AccountId, destination: AccountId, asset: Asset, amount: Decimal, reference: str, now: datetime
    ) -> tuple[Holding, Holding]:
        """Debit `source`'s free balance and credit `destination`, once per reference; the two balances after.
        A reference seen before moves nothing (TransferReferenceReused when its terms differ)."""
        recorded = await self.session.execute(
            pg_insert(transfers)
            .values(
                reference=reference,
                from_account_id=source,
                to_account_id=destination,
                asset=asset,
                amount=amount,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[transfers.c.reference])
            .returning(transfers.c.transfer_id)
        )
        keys = [(source, asset), (destination, asset)]
        if recorded.first() is None:
            first = (
                await self.session.execute(
                    sa.select(
                        transfers.c.from_account_id, transfers.c.to_account_id, transfers.c.asset, transfers.c.amount
                    ).where(transfers.c.reference == reference)
                )
            ).one()
            if tuple(first) != (source, destination, asset, amount):
                raise TransferReferenceReused(f"transfer {reference!r} was for other accounts, asset or amount")
            locked = (await self.lock_holdings(keys, now, volume_since=now)).holdings
            return locked[(source, asset)], locked[(destination, asset)]
        locked = (await self.lock_holdings(keys, now, volume_since=now)).holdings
        debited, credited = locked[(source, asset)], locked[(destination, asset)]
        if debited.free < amount:
            raise TransferExceedsFree(
                f"{source} has {format_decimal(debited.free)} {asset} free, the transfer needs {format_decimal(amount)}"
            )
        after = {
            (source, asset): replace(debited, total=debited.total - amount),
            (destination, asset): replace(credited, total=credited.total + amount),
        }
        await self.set_holdings(after, now)
        return after[(source, asset)], after[(destination, asset)]

    async def record_withdrawal(
        self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str, now: datetime
    ) -> Holding:
        """Debit the account's free balance once per (account, reference); returns the balance after. A reference
        seen before debits nothing (WithdrawalReferenceReused when its asset or amount differ)."""
        recorded = await self.session.execute(
            pg_insert(withdrawals)
            .values(account_id=account_id, asset=asset, amount=amount, reference=reference, created_at=now)
            .on_conflict_do_nothing(index_elements=[withdrawals.c.account_id, withdrawals.c.reference])
            .returning(withdrawals.c.withdrawal_id)
        )
        key = (account_id, asset)
        if recorded.first() is None:
            first = (
                await self.session.execute(
                    sa.select(withdrawals.c.asset, withdrawals.c.amount).where(
                        withdrawals.c.account_id == account_id, withdrawals.c.reference == reference
                    )
                )
            ).one()
            if (first.asset, first.amount) != (asset, amount):
                raise WithdrawalReferenceReused(
                    f"withdrawal {reference!r} of {account_id} was {format_decimal(first.amount)} {first.asset}"
                )
            return (await self.lock_holdings([key], now, volume_since=now)).holdings[key]
        holding = (await self.lock_holdings([key], now, volume_since=now)).holdings[key]
        if holding.free < amount:
            raise TransferExceedsFree(
                f"{account_id} has {format_decimal(holding.free)} {asset} free, the withdrawal needs"
                f" {format_decimal(amount)}"
            )
        after = replace(holding, total=holding.total - amount)
        await self.set_holdings({key: after}, now)
        return after

    async def lock_holdings(
        self, keys: Iterable[HoldingKey], now: datetime, *, volume_since: datetime, known: Collection[HoldingKey] = ()
    ) -> LockedHoldings:
        """Lock balance rows in (account, asset) order so two writers never deadlock; missing rows are created.

        Also reads each account's traded notional since `volume_since` (for its fee tier) in the same
        statement. `known` names rows that certainly exist already (their creation is skipped).
        """
        ordered = sorted(set(keys))
        if not ordered:
            return LockedHoldings({}, {})
        missing = [key for key in ordered if key not in known]
        if missing:
            rows = [
                {"account_id": a, "asset": s, "total": ZERO, "reserved": ZERO, "updated_at": now} for a, s in missing
            ]
            await self.session.execute(pg_insert(balances).on_conflict_do_nothing(), rows)
        volume = (
            sa.select(sa.func.coalesce(sa.func.sum(fills.c.notional), 0))
            .where(fills.c.account_id == balances.c.account_id, fills.c.filled_at >= volume_since)
            .scalar_subquery()
        )
        query = (
            sa.select(balances.c.account_id, balances.c.asset, balances.c.total, balances.c.reserved, volume)
            .where(sa.tuple_(balances.c.account_id, balances.c.asset).in_(ordered))
            .order_by(balances.c.account_id, balances.c.asset)
            .with_for_update(of=balances)
        )
        holdings: dict[HoldingKey, Holding] = {}
        volumes: dict[AccountId, Decimal] = {}
        for row in await self.session.execute(query):
            holdings[(AccountId(row[0]), Asset(row[1]))] = Holding(row[2], row[3])
            volumes[AccountId(row[0])] = Decimal(row[4])
        return LockedHoldings(holdings, volumes)

    async def set_holdings(self, holdings: Mapping[HoldingKey, Holding], now: datetime) -> None:
        """Write back balances locked by `lock_holdings` (one batched statement)."""
        if not holdings:
            return
        statement = (
            sa.update(balances)
            .where(balances.c.account_id == sa.bindparam("k_account"), balances.c.asset == sa.bindparam("k_asset"))
            .values(total=sa.bindparam("v_total"), reserved=sa.bindparam("v_reserved"), updated_at=now)
        )
        params = [
            {"k_account": a, "k_asset": s, "v_total": h.total, "v_reserved": h.reserved}
            for (a, s), h in sorted(holdings.items())
        ]
        await self.session.execute(statement, params)

    async def balances_of(self, account_id: AccountId) -> list[VenueBalance]:
        query = (
            sa.select(balances.c.asset, balances.c.total, balances.c.reserved)
            .where(balances.c.account_id == account_id)
            .order_by(balances.c.asset)
        )
        return [
            VenueBalance(account_id, Asset(r.asset), r.total, r.total - r.reserved)
            for r in await self.session.execute(query)
        ]

    # --- orders ----------------------------------------------------------------------------------------

    async def insert_orders(self, new_orders: Sequence[PaperOrder]) -> set[VenueOrderId]:
        """Insert new orders; returns those inserted (an (account, client order id) that exists is skipped)."""
        if not new_orders:
            return set()
        # executemany: SQLAlchemy batches the rows into few INSERTs and caches the compiled statement.
        statement = (
            pg_insert(orders)
            .on_conflict_do_nothing(index_elements=[orders.c.account_id, orders.c.client_order_id])
            .returning(orders.c.venue_order_id)
        )
        result = await self.session.execute(statement, [_order_values(order) for order in new_orders])
        return {VenueOrderId(row[0]) for row in result}

    async def find_order(self, account_id: AccountId, client_order_id: ClientOrderId) -> PaperOrder | None:
        query = sa.select(orders).where(orders.c.account_id == account_id, orders.c.client_order_id == client_order_id)
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _order(row)

    async def find_orders(
        self, keys: Iterable[tuple[AccountId, ClientOrderId]]
    ) -> dict[tuple[AccountId, ClientOrderId], PaperOrder]:
        """The orders with these (account, client order id) keys that exist."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        query = sa.select(orders).where(sa.tuple_(orders.c.account_id, orders.c.client_order_id).in_(wanted))
        found = [_order(row) for row in (await self.session.execute(query)).mappings()]
        return {(order.account_id, order.client_order_id): order for order in found}

    async def orders_by_venue_id(self, venue_order_ids: Iterable[VenueOrderId]) -> dict[VenueOrderId, PaperOrder]:
        """The given orders, locked for update, keyed by venue order id."""
        ids = sorted(set(venue_order_ids))
        if not ids:
            return {}
        query = (
            sa.select(orders)
            .where(orders.c.venue_order_id.in_(ids))
            .order_by(orders.c.venue_order_id)
            .with_for_update()
        )
        rows = (await self.session.execute(query)).mappings()
        return {VenueOrderId(row["venue_order_id"]): _order(row) for row in rows}

    async def update_orders(self, changed: Sequence[PaperOrder]) -> None:
        """Write the mutable state of orders (status, fills, reason, reservation) in one batched statement."""
        if not changed:
            return
        statement = (
            sa.update(orders)
            .where(orders.c.venue_order_id == sa.bindparam("k_id"))
            .values(
                status=sa.bindparam("v_status"),
                filled_quantity=sa.bindparam("v_filled"),
                fill_count=sa.bindparam("v_fill_count"),
                triggered=sa.bindparam("v_triggered"),
                reason=sa.bindparam("v_reason"),
                reserved_remaining=sa.bindparam("v_reserved"),
                updated_at=sa.bindparam("v_updated_at"),
            )
        )
        params = [
            {
                "k_id": order.venue_order_id,
                "v_status": order.status.value,
                "v_filled": order.filled_quantity,
                "v_fill_count": order.fill_count,
                "v_triggered": order.triggered,
                "v_reason": order.reason,
                "v_reserved": order.reserved_remaining,
                "v_updated_at": order.updated_at,
            }
            for order in changed
        ]
        await self.session.execute(statement, params)

    async def open_orders(self, account_id: AccountId | None = None, symbol: Symbol | None = None) -> list[PaperOrder]:
        """Open orders (of one account or symbol, or all), oldest first."""
        query = sa.select(orders).where(orders.c.status == VenueOrderStatus.OPEN.value)
        if account_id is not None:
            query = query.where(orders.c.account_id == account_id)
        if symbol is not None:
            query = query.where(orders.c.symbol == symbol)
        query = query.order_by(orders.c.created_at, orders.c.venue_order_id)
        return [_order(row) for row in (await self.session.execute(query)).mappings()]

    # --- fills -----------------------------------------------------------------------------------------

    async def insert_fills(self, new_fills: Sequence[VenueFill]) -> list[VenueFill]:
        """Append fills in the given order; returns them with their venue-wide sequence numbers."""
        if not new_fills:
            return []
        rows = [
            {
                "trade_id": fill.trade_id,
                "venue_order_id": fill.venue_order_id,
                "account_id": fill.account_id,
                "client_order_id": fill.client_order_id,
                "symbol": fill.symbol,
                "side": fill.side.value,
                "quantity": fill.quantity,
                "price": fill.price,
                "notional": fill.quantity * fill.price,
                "fee": fill.fee,
                "fee_asset": fill.fee_asset,
                "liquidity": fill.liquidity.value,
                "filled_at": fill.filled_at,
            }
            for fill in new_fills
        ]
        statement = sa.insert(fills).returning(fills.c.trade_id, fills.c.sequence, sort_by_parameter_order=True)
        sequences = {row[0]: int(row[1]) for row in await self.session.execute(statement, rows)}
        return [replace(fill, sequence=sequences[fill.trade_id]) for fill in new_fills]

    async def fills_since(self, account_id: AccountId, after_sequence: int, limit: int | None) -> list[VenueFill]:
        query = (
            sa.select(fills)
            .where(fills.c.account_id == account_id, fills.c.sequence > after_sequence)
            .order_by(fills.c.sequence)
            .limit(limit)
        )
        return [_fill(row) for row in (await self.session.execute(query)).mappings()]

    async def fills_after(self, after_sequence: int, limit: int) -> list[VenueFill]:
        """Fills of every account with a sequence above `after_sequence`, oldest first (the stream's catch-up)."""
        query = sa.select(fills).where(fills.c.sequence > after_sequence).order_by(fills.c.sequence).limit(limit)
        return [_fill(row) for row in (await self.session.execute(query)).mappings()]

    async def last_sequence(self) -> int:
        """The highest fill sequence so far (0 before the first fill)."""
        return int(
            (await self.session.execute(sa.select(sa.func.coalesce(sa.func.max(fills.c.sequence), 0)))).scalar_one()
        )


def _order_values(order: PaperOrder) -> dict[str, Any]:
    return {
        "venue_order_id": order.venue_order_id,
        "account_id": order.account_id,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "quantity": order.quantity,
        "limit_price": order.limit_price,
        "trigger_price": order.trigger_price,
        "time_in_force": order.time_in_force.value,
        "post_only": order.post_only,
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "fill_count": order.fill_count,
        "triggered": order.triggered,
        "reason": order.reason,
        "reserved_asset": order.reserved_asset,
        "reserved_remaining": order.reserved_remaining,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def _order(row: sa.RowMapping) -> PaperOrder:
    return PaperOrder(
        venue_order_id=VenueOrderId(row["venue_order_id"]),
        account_id=AccountId(row["account_id"]),
        client_order_id=ClientOrderId(row["client_order_id"]),
        symbol=Symbol(row["symbol"]),
        side=OrderSide(row["side"]),
        type=OrderType(row["type"]),
        quantity=row["quantity"],
        limit_price=row["limit_price"],
        trigger_price=row["trigger_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        post_only=row["post_only"],
        status=VenueOrderStatus(row["status"]),
        filled_quantity=row["filled_quantity"],
        fill_count=row["fill_count"],
        triggered=row["triggered"],
        reason=row["reason"],
        reserved_asset=Asset(row["reserved_asset"]),
        reserved_remaining=row["reserved_remaining"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _fill(row: sa.RowMapping) -> VenueFill:
    return VenueFill(
        account_id=AccountId(row["account_id"]),
        client_order_id=ClientOrderId(row["client_order_id"]),
        venue_order_id=VenueOrderId(row["venue_order_id"]),
        trade_id=TradeId(row["trade_id"]),
        symbol=Symbol(row["symbol"]),
        side=OrderSide(row["side"]),
        quantity=row["quantity"],
        price=row["price"],
        fee=row["fee"],
        fee_asset=Asset(row["fee_asset"]),
        liquidity=Liquidity(row["liquidity"]),
        filled_at=row["filled_at"],
        sequence=int(row["sequence"]),
    )
