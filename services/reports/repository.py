"""Every SQL statement of the reports service (schema `reports`): the read model fed by the consumers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.base import NAMING_CONVENTION, Money
from shared.domain.pnl import BalancePoint, CashFlow, Fill, Mark
from shared.domain.types import OrderSide

SCHEMA = "reports"
TS = sa.DateTime(timezone=True)

metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("first_seen_at", TS, nullable=False),
)
fills = sa.Table(
    "fills",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("trade_id", sa.Text, primary_key=True),
    sa.Column("occurred_at", TS, primary_key=True),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("quantity", Money, nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("fee", Money, nullable=False),
    sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
)
balance_history = sa.Table(
    "balance_history",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("total", Money, nullable=False),
    sa.Column("changed_at", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
)
cash_flows = sa.Table(
    "cash_flows",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("reference", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("counterparty_account_id", sa.Text, nullable=True),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
)
marks = sa.Table(
    "marks",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("bucket_at", TS, primary_key=True),
    sa.Column("price", Money, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("observed_at", TS, nullable=False),
)
fills_daily = sa.Table(
    "fills_daily",
    metadata,
    sa.Column("account_id", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("day", TS),
    sa.Column("fees", Money),
    sa.Column("turnover", Money),
    sa.Column("fills", sa.BigInteger),
)
rollup_refreshes = sa.Table(
    "rollup_refreshes",
    metadata,
    sa.Column("view_name", sa.Text, primary_key=True),
    sa.Column("source_rows", sa.BigInteger, nullable=False),
    sa.Column("window_start", TS, nullable=True),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("refreshed_at", TS, nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredFlow:
    """A cash flow row: the domain flow (signed) and its identity."""

    account_id: str
    kind: str
    reference: str
    flow: CashFlow


@dataclass(frozen=True, slots=True)
class DailyFees:
    """One row of the `fills_daily` rollup."""

    account_id: str
    symbol: str
    day: datetime
    fees: Decimal
    turnover: Decimal
    fills: int


class ReportsRepository:
    """The read model: writes from the consumers, reads for the reports."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- writes (consumers) --------------------------------------------------------------------------------

    async def see_account(self, account_id: str, at: datetime) -> None:
        """Remember that `account_id` exists (first time seen)."""
        statement = pg_insert(accounts).values(account_id=account_id, first_seen_at=at)
        await self.session.execute(statement.on_conflict_do_nothing(index_elements=[accounts.c.account_id]))

    async def add_fill(self, account_id: str, order_id: str, trade_id: str, fill: Fill) -> bool:
        """Store one execution; False when it was stored before."""
        statement = (
            pg_insert(fills)
            .values(
                account_id=account_id,
                order_id=order_id,
                trade_id=trade_id,
                occurred_at=fill.at,
                symbol=fill.symbol,
                side=fill.side.value,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
            )
            .on_conflict_do_nothing()
            .returning(fills.c.trade_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def add_balance(self, account_id: str, version: int, point: BalancePoint) -> None:
        """Store one balance version (a repeat of the version is dropped)."""
        statement = pg_insert(balance_history).values(
            account_id=account_id, asset=point.asset, version=version, total=point.total, changed_at=point.at
        )
        await self.session.execute(statement.on_conflict_do_nothing())

    async def add_cash_flow(
        self, account_id: str, kind: str, reference: str, flow: CashFlow, counterparty: str | None
    ) -> None:
        """Store one cash flow with its amount as a positive number (the kind says the direction)."""
        statement = pg_insert(cash_flows).values(
            account_id=account_id, kind=kind, reference=reference, asset=flow.asset, amount=abs(flow.amount),
            counterparty_account_id=counterparty, occurred_at=flow.at,
        )  # fmt: skip
        await self.session.execute(statement.on_conflict_do_nothing())

    async def put_mark(self, mark: Mark, bucket_at: datetime) -> None:
        """Keep the newest mark of the symbol within its minute."""
        statement = pg_insert(marks).values(
            symbol=mark.symbol, bucket_at=bucket_at, price=mark.price, source=mark.source, observed_at=mark.observed_at
        )
        excluded = statement.excluded
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[marks.c.symbol, marks.c.bucket_at],
                set_={"price": excluded.price, "source": excluded.source, "observed_at": excluded.observed_at},
                where=marks.c.observed_at <= excluded.observed_at,
            )
        )

    # --- reads ---------------------------------------------------------------------------------------------

    async def known_accounts(self, account_ids: Sequence[str] | None = None) -> list[str]:
        """The accounts seen so far (all of them, or those of `account_ids` that are known)."""
        query = sa.select(accounts.c.account_id).order_by(accounts.c.account_id)
        if account_ids is not None:
            query = query.where(accounts.c.account_id.in_(list(account_ids)))
        return list((await self.session.execute(query)).scalars())

    async def balances(
        self, account_ids: Sequence[str], start: datetime, until: datetime
    ) -> list[tuple[str, BalancePoint]]:
        """Per (account, asset): the last version at or before `start`, then every version up to `until`."""
        history = balance_history.c
        before = (
            sa.select(history.account_id, history.asset, history.total, history.changed_at)
            .where(history.account_id.in_(list(account_ids)), history.changed_at <= start)
            .order_by(history.account_id, history.asset, history.changed_at.desc(), history.version.desc())
            .ext(distinct_on(history.account_id, history.asset))
        )
        within = sa.select(history.account_id, history.asset, history.total, history.changed_at).where(
            history.account_id.in_(list(account_ids)), history.changed_at > start, history.changed_at <= until
        )
        rows = (await self.session.execute(sa.union_all(before, within))).all()
        return [(row.account_id, BalancePoint(row.asset, row.total, row.changed_at)) for row in rows]

    async def cash_flows(self, account_ids: Sequence[str], until: datetime) -> list[StoredFlow]:
        """Every cash flow of the accounts up to `until`, signed (money out is negative)."""
        query = (
            sa.select(cash_flows)
            .where(cash_flows.c.account_id.in_(list(account_ids)), cash_flows.c.occurred_at <= until)
            .order_by(cash_flows.c.occurred_at)
        )
        out = []
        for row in (await self.session.execute(query)).mappings():
            sign = 1 if row["kind"] in ("deposit", "transfer_in") else -1
            flow = CashFlow(row["asset"], sign * row["amount"], row["occurred_at"])
            out.append(StoredFlow(row["account_id"], row["kind"], row["reference"], flow))
        return out

    async def marks(self, symbols: Sequence[str], start: datetime, until: datetime) -> list[Mark]:
        """Per symbol: the last mark at or before `start`, then every mark up to `until`."""
        before = (
            sa.select(marks.c.symbol, marks.c.price, marks.c.source, marks.c.observed_at)
            .where(marks.c.symbol.in_(list(symbols)), marks.c.observed_at <= start)
            .order_by(marks.c.symbol, marks.c.observed_at.desc())
            .ext(distinct_on(marks.c.symbol))
        )
        within = sa.select(marks.c.symbol, marks.c.price, marks.c.source, marks.c.observed_at).where(
            marks.c.symbol.in_(list(symbols)), marks.c.observed_at > start, marks.c.observed_at <= until
        )
        rows = (await self.session.execute(sa.union_all(before, within))).all()
        return [Mark(row.symbol, row.price, row.source, row.observed_at) for row in rows]

    async def fills(self, account_ids: Sequence[str], until: datetime) -> list[tuple[str, Fill]]:
        """Every fill of the accounts up to `until` (the cost basis needs them all) with its account, oldest first."""
        query = (
            sa.select(fills)
            .where(fills.c.account_id.in_(list(account_ids)), fills.c.occurred_at <= until)
            .order_by(fills.c.occurred_at, fills.c.order_id, fills.c.trade_id)
        )
        return [
            (
                row["account_id"],
                Fill(
                    row["symbol"], OrderSide(row["side"]), row["quantity"], row["price"], row["fee"], row["occurred_at"]
                ),
            )
            for row in (await self.session.execute(query)).mappings()
        ]

    async def daily_fees(self, account_ids: Sequence[str], start: datetime, end: datetime) -> list[DailyFees]:
        """Rows of the `fills_daily` rollup for the accounts with start <= day < end (as of its last refresh)."""
        query = (
            sa.select(fills_daily)
            .where(fills_daily.c.account_id.in_(list(account_ids)), fills_daily.c.day >= start, fills_daily.c.day < end)
            .order_by(fills_daily.c.day, fills_daily.c.account_id, fills_daily.c.symbol)
        )
        rows = (await self.session.execute(query)).mappings()
        return [
            DailyFees(r["account_id"], r["symbol"], r["day"], r["fees"], r["turnover"], int(r["fills"])) for r in rows
        ]

    async def last_refresh(self, view_name: str) -> datetime | None:
        """When `view_name` was last refreshed (None: never)."""
        query = sa.select(rollup_refreshes.c.refreshed_at).where(rollup_refreshes.c.view_name == view_name)
        return (await self.session.execute(query)).scalar()
