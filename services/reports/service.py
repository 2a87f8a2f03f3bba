"""Use cases of the reports service: the read model's writers (called by the consumers) and the report queries.

The consumers keep `reports.*` from OMS and market-data events; the queries load what a range needs and hand it to
the pure math of `shared.domain.pnl`. Marks: the mid of the book (snapshots, then deltas applied to the snapshot
kept in memory) or, for a symbol whose book has not been seen since start, the last trade.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reports.errors import AccountNotFound, InvalidRange, PriceMissing
from services.reports.repository import DailyFees, ReportsRepository
from shared.contracts.balances import BalanceChanged
from shared.contracts.cashflows import CashFlowRecorded
from shared.contracts.orders import OrderFilled
from shared.db import UnitOfWork
from shared.db.rollups import FILLS_DAILY
from shared.domain.book import MarketDataError as BookError
from shared.domain.book import OrderBook
from shared.domain.pnl import (
    BalancePoint,
    CashFlow,
    Fill,
    InstrumentPnl,
    Mark,
    PeriodResult,
    Portfolio,
    Unpriced,
    Valuation,
    combine_instruments,
    day_bounds,
    days,
    drawdowns_pct,
    pnl_by_instrument,
    symbol_of,
)
from shared.domain.types import OrderSide
from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade
from shared.observability.logging import get_logger

log = get_logger(__name__)

BOOK_MID = "book_mid"
LAST_TRADE = "last_trade"
FIRM = "firm"
# Days a report may name: a day's bounds in any time zone stay within what datetime can hold.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9000, 12, 31)


def minute_of(at: datetime) -> datetime:
    """The minute `at` falls in (marks keep the newest price per symbol and minute)."""
    return at.replace(second=0, microsecond=0)


class ReadModelWriter:
    """Applies OMS and market-data events to `reports.*` in the consumer's transaction."""

    def __init__(self) -> None:
        self._books: dict[str, OrderBook] = {}

    async def on_fill(self, session: AsyncSession, event: OrderFilled) -> None:
        """Store an execution (a replay of the same trade is dropped)."""
        repo = ReportsRepository(session)
        await repo.see_account(event.account_id, event.occurred_at)
        fill = Fill(event.symbol, event.side, event.quantity, event.price, event.fee, event.occurred_at)
        await repo.add_fill(event.account_id, event.order_id, event.trade_id, fill)

    async def on_balance(self, session: AsyncSession, event: BalanceChanged) -> None:
        """Store one balance version; versions arriving out of order are kept in their place by `changed_at`."""
        repo = ReportsRepository(session)
        await repo.see_account(event.account_id, event.changed_at)
        await repo.add_balance(
            event.account_id, event.version, BalancePoint(event.asset, event.total, event.changed_at)
        )

    async def on_cash_flow(self, session: AsyncSession, event: CashFlowRecorded) -> None:
        """Store a deposit, withdrawal or transfer (once per account, kind and reference)."""
        repo = ReportsRepository(session)
        await repo.see_account(event.account_id, event.occurred_at)
        flow = CashFlow(event.asset, event.signed_amount(), event.occurred_at)
        await repo.add_cash_flow(
            event.account_id, event.kind.value, event.reference, flow, event.counterparty_account_id
        )

    async def on_marketdata(self, session: AsyncSession, message: MarketData) -> None:
        """Turn a book message or a trade into a mark (book mid first; a trade only for a symbol without a book)."""
        mark = self.mark_for(message)
        if mark is not None:
            await ReportsRepository(session).put_mark(mark, minute_of(mark.observed_at))

    def mark_for(self, message: MarketData) -> Mark | None:
        """The mark a market-data message sets, if any (the book is updated either way)."""
        symbol = message.symbol
        if isinstance(message, Trade):
            return None if symbol in self._books else Mark(symbol, message.price, LAST_TRADE, message.timestamp)
        try:
            book = self._apply(message)
        except BookError as exc:
            log.warning("reports_book_refused", symbol=symbol, error=str(exc)[:200])
            self._books.pop(symbol, None)
            return None
        spread = None if book is None else book.spread
        if book is None or book.mid is None or spread is None or spread <= 0:
            return None  # one side empty, or crossed for an instant while a delta is applied
        return Mark(symbol, book.mid, BOOK_MID, message.timestamp)

    def _apply(self, message: BookSnapshot | BookDelta) -> OrderBook | None:
        if isinstance(message, BookSnapshot):
            book = OrderBook(message.symbol)
            bids = [(level.price, level.qty) for level in message.bids]
            asks = [(level.price, level.qty) for level in message.asks]
            book.apply_snapshot(bids, asks, message.timestamp)
            self._books[message.symbol] = book
            return book
        existing = self._books.get(message.symbol)
        if existing is None:
            return None  # a delta means nothing without its snapshot (after a restart: wait for the next one)
        # Levels are absolute quantities: a redelivered delta applied twice leaves the same book.
        for side, levels in ((OrderSide.BUY, message.bids), (OrderSide.SELL, message.asks)):
            for level in levels:
                existing.apply_delta(side, level.price, level.qty, message.timestamp)
        return existing


@dataclass(frozen=True, slots=True)
class Scope:
    """The accounts a report covers: one account, or every account of the firm (`firm`)."""

    label: str
    account_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DayReport:
    """One day of a portfolio and the drawdown of its return index at the day's end."""

    day: date
    period: PeriodResult
    drawdown_pct: Decimal


@dataclass(frozen=True, slots=True)
class PnlReport:
    """Average-cost PnL per instrument over a range, valued at the range's end."""

    start: datetime
    end: datetime
    instruments: list[InstrumentPnl]


def parse_zone(name: str) -> ZoneInfo:
    """An IANA time zone (InvalidRange naming `tz` otherwise)."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        raise InvalidRange(f"tz: unknown time zone {name!r}", details={"field": "tz"}) from None


class ReportQueries:
    """The reports: daily returns, NAV, PnL and fees of an account or of the firm."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], quote: str, max_range_days: int) -> None:
        self.sessionmaker = sessionmaker
        self.quote = quote
        self.max_range_days = max_range_days

    async def scope(self, account_id: str | None) -> Scope:
        """One known account (AccountNotFound otherwise), or every account when `account_id` is None."""
        async with UnitOfWork(self.sessionmaker) as uow:
            known = await ReportsRepository(uow.session).known_accounts(None if account_id is None else [account_id])
        if account_id is None:
            return Scope(FIRM, tuple(known))
        if not known:
            raise AccountNotFound(
                f"account_id: no report data for account {account_id!r}", details={"field": "account_id"}
            )
        return Scope(account_id, (account_id,))

    def check_range(self, first: date, last: date) -> None:
        """InvalidRange naming `from` when it is after `to`, or `to` when the range is too long."""
        for name, day in (("from", first), ("to", last)):
            if not FIRST_DAY <= day <= LAST_DAY:
                raise InvalidRange(f"{name}: must be between {FIRST_DAY} and {LAST_DAY}", details={"field": name})
        if first > last:
            raise InvalidRange(f"from: {first} is after to {last}", details={"field": "from"})
        if (last - first).days + 1 > self.max_range_days:
            raise InvalidRange(f"to: at most {self.max_range_days} days from `from`", details={"field": "to"})

    async def daily(self, scope: Scope, first: date, last: date, zone: ZoneInfo) -> list[DayReport]:
        """Each day's NAV, flows, PnL, time-weighted return % and drawdown, in `zone`."""
        self.check_range(first, last)
        start, _ = day_bounds(first, zone)
        _, end = day_bounds(last, zone)
        portfolio = await self._portfolio(scope, start, end)
        periods = [_period(portfolio, *day_bounds(day, zone)) for day in days(first, last)]
        drawdowns = drawdowns_pct([p.return_pct for p in periods])
        return [DayReport(p.start.date(), p, dd) for p, dd in zip(periods, drawdowns, strict=True)]

    async def nav(self, scope: Scope, first: date, last: date, zone: ZoneInfo) -> list[Valuation]:
        """NAV at the end of each day with the exposure per asset and the marks used."""
        return [report.period.end for report in await self.daily(scope, first, last, zone)]

    async def pnl(self, scope: Scope, first: date, last: date, zone: ZoneInfo) -> PnlReport:
        """Realized and unrealized PnL, fees and turnover per instrument over the range (average cost)."""
        self.check_range(first, last)
        start, _ = day_bounds(first, zone)
        _, end = day_bounds(last, zone)
        async with UnitOfWork(self.sessionmaker) as uow:
            fills = await ReportsRepository(uow.session).fills(scope.account_ids, end)
            symbols = sorted({fill.symbol for _, fill in fills})
            marks = await ReportsRepository(uow.session).marks(symbols, end, end)
        latest = {mark.symbol: mark for mark in sorted(marks, key=lambda m: m.observed_at)}
        by_account: dict[str, list[Fill]] = {}
        for account_id, fill in fills:
            by_account.setdefault(account_id, []).append(fill)
        # Each account keeps its own cost basis; the firm's figures are the accounts' added up.
        per_account = [pnl_by_instrument(account_fills, latest, since=start) for account_fills in by_account.values()]
        return PnlReport(start, end, combine_instruments(row for rows in per_account for row in rows))

    async def fees(self, scope: Scope, first: date, last: date) -> tuple[list[DailyFees], datetime | None]:
        """Fees and turnover per UTC day and instrument from the `fills_daily` rollup, with its refresh time."""
        self.check_range(first, last)
        start, _ = day_bounds(first, ZoneInfo("UTC"))
        _, end = day_bounds(last, ZoneInfo("UTC"))
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = ReportsRepository(uow.session)
            return await repo.daily_fees(scope.account_ids, start, end), await repo.last_refresh(FILLS_DAILY.view)

    async def nav_at(self, account_id: str, at: datetime) -> Decimal:
        """One account's NAV at an instant (PriceMissing when a held asset has no mark by then)."""
        start = at - timedelta(minutes=1)
        portfolio = await self._portfolio(Scope(account_id, (account_id,)), start, at)
        return _period(portfolio, start, at).end.nav

    async def _portfolio(self, scope: Scope, start: datetime, end: datetime) -> Portfolio:
        portfolio = Portfolio(quote=self.quote)
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = ReportsRepository(uow.session)
            balances = await repo.balances(scope.account_ids, start, end)
            flows = await repo.cash_flows(scope.account_ids, end)
            assets = {point.asset for _, point in balances} | {stored.flow.asset for stored in flows}
            symbols = [symbol_of(asset, self.quote) for asset in sorted(assets) if asset != self.quote]
            marks = await repo.marks(symbols, start, end)  # flows are valued only inside the range
        for account_id, point in balances:
            portfolio.add_balance(account_id, point)
        for mark in marks:
            portfolio.add_mark(mark)
        for stored in flows:
            if stored.kind in ("transfer_in", "transfer_out") and scope.label == FIRM:
                continue  # between the firm's own accounts: no money enters or leaves the firm
            portfolio.add_flow(stored.flow)
        return portfolio


def _period(portfolio: Portfolio, start: datetime, end: datetime) -> PeriodResult:
    try:
        return portfolio.period(start, end)
    except Unpriced as exc:
        raise PriceMissing(str(exc), details={"symbol": exc.symbol, "at": exc.at.isoformat()}) from None
