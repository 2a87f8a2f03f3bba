"""Reporting math: NAV marked at mid, time-weighted returns without cash flows, average-cost PnL per instrument.

Pure functions over what the reports read model holds (fills, balance versions, cash flows, marks); time comes in
as arguments. Conventions, stated once:

- NAV is every asset balance (total, reserved included) times the latest mark of `<asset>/<quote>` at or before
  the instant; the quote asset counts 1. An asset with a balance and no mark makes the NAV unknown (`Unpriced`),
  never a NAV that silently leaves it out.
- A cash flow (deposit, withdrawal, transfer) is not profit: the day is cut at each flow into sub-periods, each
  sub-period's return is NAV just before the flow over NAV just after the previous one, and the day's return is
  the product (time-weighted return). A sub-period that starts with no capital adds nothing.
- Average cost: a buy adds its quantity at its price; a sell realizes (price - average cost) x quantity. Fees are
  reported apart (in the quote asset), never folded into the cost: net PnL = realized + unrealized - fees.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from shared.domain.money import MONEY_CONTEXT, quantize_nearest
from shared.domain.types import OrderSide

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
# Daily return % is exact when the factors terminate; otherwise rounded (half even) to this many places.
RETURN_PCT_QUANTUM = Decimal("1E-10")
# Amounts keep NUMERIC(38,18)'s 18 places (a product of two such numbers has 36): rounded half even.
MONEY_QUANTUM = Decimal("1E-18")


def money(value: Decimal) -> Decimal:
    """`value` rounded half even to 18 decimal places (what the wire and NUMERIC(38,18) hold)."""
    return quantize_nearest(value, MONEY_QUANTUM)


class Unpriced(ValueError):
    """An asset with a balance has no mark at or before the valuation instant."""

    def __init__(self, asset: str, symbol: str, at: datetime) -> None:
        super().__init__(f"no price for {symbol} at or before {at.isoformat()} ({asset} has a balance)")
        self.asset = asset
        self.symbol = symbol
        self.at = at


@dataclass(frozen=True, slots=True)
class Mark:
    """A price of one symbol: a book mid, or the last trade when no book was seen; `source` says which."""

    symbol: str
    price: Decimal
    source: str
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class BalancePoint:
    """The total balance of one asset from `at` on (one `BalanceChanged` version)."""

    asset: str
    total: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class CashFlow:
    """Money moved in (positive amount) or out (negative) of an account at `at`; never profit."""

    asset: str
    amount: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution; `fee` is in the quote asset."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class Valuation:
    """NAV at an instant, the value held in each asset, and the marks used."""

    at: datetime
    nav: Decimal
    exposure: Mapping[str, Decimal]
    marks: tuple[Mark, ...]


def symbol_of(asset: str, quote: str) -> str:
    """The symbol that prices `asset` in `quote` ("BTC", "USD" -> "BTC/USD")."""
    return f"{asset}/{quote}"


class _Timeline:
    """Values keyed by name, each a time-ordered list; `at(name, t)` is the last one at or before `t`."""

    def __init__(self) -> None:
        self._times: dict[str, list[datetime]] = {}
        self._items: dict[str, list[object]] = {}

    def add(self, name: str, at: datetime, item: object) -> None:
        times = self._times.setdefault(name, [])
        items = self._items.setdefault(name, [])
        index = bisect_right(times, at)
        times.insert(index, at)
        items.insert(index, item)

    def names(self) -> Iterable[str]:
        return self._times.keys()

    def at(self, name: str, instant: datetime) -> object | None:
        times = self._times.get(name)
        if not times:
            return None
        index = bisect_right(times, instant)
        return None if index == 0 else self._items[name][index - 1]


@dataclass
class Portfolio:
    """The history of one account (or the firm, several accounts summed) in one quote asset."""

    quote: str
    _balances: dict[str, _Timeline] = field(default_factory=dict)  # per account
    _marks: _Timeline = field(default_factory=_Timeline)
    flows: list[CashFlow] = field(default_factory=list)

    def add_balance(self, account_id: str, point: BalancePoint) -> None:
        """Record one balance version of one account."""
        self._balances.setdefault(account_id, _Timeline()).add(point.asset, point.at, point)

    def add_mark(self, mark: Mark) -> None:
        """Record one price."""
        self._marks.add(mark.symbol, mark.observed_at, mark)

    def add_flow(self, flow: CashFlow) -> None:
        """Record one cash flow (kept in time order)."""
        insort(self.flows, flow, key=lambda f: f.at)

    def mark_at(self, symbol: str, at: datetime) -> Mark | None:
        """The latest mark of `symbol` at or before `at`."""
        mark = self._marks.at(symbol, at)
        return mark if isinstance(mark, Mark) else None

    def holdings_at(self, at: datetime) -> dict[str, Decimal]:
        """Total balance per asset at `at`, summed over accounts (zero balances left out)."""
        totals: dict[str, Decimal] = {}
        for timeline in self._balances.values():
            for asset in timeline.names():
                point = timeline.at(asset, at)
                if isinstance(point, BalancePoint) and point.total != ZERO:
                    totals[asset] = totals.get(asset, ZERO) + point.total
        return totals

    def price_of(self, asset: str, at: datetime) -> tuple[Decimal, Mark | None]:
        """The price of one unit of `asset` in the quote asset at `at` (Unpriced when there is none)."""
        if asset == self.quote:
            return ONE, None
        symbol = symbol_of(asset, self.quote)
        mark = self.mark_at(symbol, at)
        if mark is None:
            raise Unpriced(asset, symbol, at)
        return mark.price, mark

    def value_at(self, at: datetime) -> Valuation:
        """NAV at `at`: each balance times its mark (Unpriced when an asset held has no mark yet)."""
        exposure: dict[str, Decimal] = {}
        marks: list[Mark] = []
        for asset, total in sorted(self.holdings_at(at).items()):
            price, mark = self.price_of(asset, at)
            exposure[asset] = money(MONEY_CONTEXT.multiply(total, price))
            if mark is not None:
                marks.append(mark)
        nav = sum(exposure.values(), ZERO)
        return Valuation(at=at, nav=nav, exposure=exposure, marks=tuple(marks))

    def flow_value(self, flow: CashFlow) -> Decimal:
        """A cash flow's value in the quote asset at its own instant."""
        price, _ = self.price_of(flow.asset, flow.at)
        return money(MONEY_CONTEXT.multiply(flow.amount, price))

    def flows_within(self, start: datetime, end: datetime) -> list[CashFlow]:
        """The cash flows with start < at <= end (a flow at the start instant belongs to the period before)."""
        return [flow for flow in self.flows if start < flow.at <= end]

    def period(self, start: datetime, end: datetime) -> PeriodResult:
        """NAV at both ends, net flows, PnL and time-weighted return of (start, end]."""
        start_nav = self.value_at(start).nav
        end_valuation = self.value_at(end)
        segments = [(self.value_at(flow.at).nav, self.flow_value(flow)) for flow in self.flows_within(start, end)]
        net_flows = sum((value for _, value in segments), ZERO)
        return PeriodResult(
            start=start,
            start_nav=start_nav,
            end=end_valuation,
            net_flows=net_flows,
            pnl=end_valuation.nav - start_nav - net_flows,
            return_pct=time_weighted_return_pct(start_nav, segments, end_valuation.nav),
        )


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """One period (start, end]: NAV at both ends, net cash flows in, PnL and the time-weighted return %."""

    start: datetime
    start_nav: Decimal
    end: Valuation
    net_flows: Decimal
    pnl: Decimal
    return_pct: Decimal | None


def time_weighted_return_pct(
    start_nav: Decimal, flows: Sequence[tuple[Decimal, Decimal]], end_nav: Decimal
) -> Decimal | None:
    """Time-weighted return in percent; `flows` are (NAV just after the flow, the flow's value), in time order.

    None when no sub-period held capital (nothing to take a return on)."""
    factor, begin, invested = ONE, start_nav, False
    for nav_after, value in flows:
        if begin > ZERO:
            factor = MONEY_CONTEXT.multiply(factor, MONEY_CONTEXT.divide(nav_after - value, begin))
            invested = True
        begin = nav_after
    if begin > ZERO:
        factor = MONEY_CONTEXT.multiply(factor, MONEY_CONTEXT.divide(end_nav, begin))
        invested = True
    if not invested:
        return None
    return MONEY_CONTEXT.multiply(factor - ONE, HUNDRED).quantize(RETURN_PCT_QUANTUM, context=MONEY_CONTEXT)


def compound_pct(returns_pct: Iterable[Decimal | None]) -> Decimal:
    """Chain daily returns in percent into one (a day without a return counts as 0 %)."""
    factor = ONE
    for pct in returns_pct:
        if pct is not None:
            factor = MONEY_CONTEXT.multiply(factor, ONE + pct / HUNDRED)
    return MONEY_CONTEXT.multiply(factor - ONE, HUNDRED).quantize(RETURN_PCT_QUANTUM, context=MONEY_CONTEXT)


def drawdowns_pct(returns_pct: Sequence[Decimal | None]) -> list[Decimal]:
    """Drawdown in percent after each day, on the time-weighted index (cash flows do not count as losses)."""
    index, peak, out = ONE, ONE, []
    for pct in returns_pct:
        if pct is not None:
            index = MONEY_CONTEXT.multiply(index, ONE + pct / HUNDRED)
        peak = max(peak, index)
        drawdown = MONEY_CONTEXT.multiply(MONEY_CONTEXT.divide(index, peak) - ONE, HUNDRED)
        out.append(drawdown.quantize(RETURN_PCT_QUANTUM, context=MONEY_CONTEXT))
    return out


@dataclass(frozen=True, slots=True)
class InstrumentPnl:
    """Average-cost PnL of one symbol over a run of fills; `unrealized` is None without a mark."""

    symbol: str
    position: Decimal
    average_cost: Decimal
    realized: Decimal
    unrealized: Decimal | None
    fees: Decimal
    turnover: Decimal
    fills: int
    mark: Mark | None


@dataclass
class Position:
    """One symbol's average-cost position over a run of fills (amounts in the quote asset)."""

    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    turnover: Decimal = ZERO
    fills: int = 0

    def apply(self, fill: Fill) -> None:
        """Book one fill; the part of a sell beyond the position has no known cost and adds no PnL."""
        notional = money(MONEY_CONTEXT.multiply(fill.quantity, fill.price))
        self.fees += fill.fee
        self.turnover += notional
        self.fills += 1
        if fill.side is OrderSide.BUY:
            self.quantity += fill.quantity
            self.cost += notional
            return
        # A sell beyond the position we saw bought (a deposited coin) has no known cost: it is booked at its price.
        matched = min(fill.quantity, self.quantity)
        average = self.average_cost()
        self.realized += money(MONEY_CONTEXT.multiply(fill.price - average, matched))
        self.cost -= money(MONEY_CONTEXT.multiply(average, matched))
        self.quantity -= matched
        if self.quantity == ZERO:
            self.cost = ZERO

    def average_cost(self) -> Decimal:
        """The cost per unit of the open quantity (0 when flat)."""
        if self.quantity == ZERO:
            return ZERO
        return money(MONEY_CONTEXT.divide(self.cost, self.quantity))

    def unrealized(self, price: Decimal) -> Decimal:
        """The open quantity's gain at `price` over its average cost."""
        return money(MONEY_CONTEXT.multiply(price - self.average_cost(), self.quantity))

    def marked_pnl(self, price: Decimal | None) -> Decimal | None:
        """Mark-to-market PnL: realized plus unrealized at `price`, less fees; None when open and unpriced."""
        if price is None and self.quantity != ZERO:
            return None
        return self.realized - self.fees + (ZERO if price is None else self.unrealized(price))


def pnl_by_instrument(
    fills: Iterable[Fill], marks: Mapping[str, Mark], *, since: datetime | None = None
) -> list[InstrumentPnl]:
    """Average-cost PnL per symbol; fills before `since` build the cost basis but their PnL, fees and turnover
    belong to earlier periods. `marks` price the open positions (unrealized)."""
    positions: dict[str, Position] = {}
    opening: dict[str, Position] = {}
    for fill in sorted(fills, key=lambda f: f.at):
        position = positions.setdefault(fill.symbol, Position())
        if since is not None and fill.at < since:
            position.apply(fill)
            opening[fill.symbol] = replace(position)
            continue
        position.apply(fill)
    out = []
    for symbol, position in sorted(positions.items()):
        before = opening.get(symbol, Position())
        mark = marks.get(symbol)
        unrealized = None
        if mark is not None:
            unrealized = position.unrealized(mark.price)
        elif position.quantity == ZERO:
            unrealized = ZERO
        out.append(
            InstrumentPnl(
                symbol=symbol,
                position=position.quantity,
                average_cost=position.average_cost(),
                realized=position.realized - before.realized,
                unrealized=unrealized,
                fees=position.fees - before.fees,
                turnover=position.turnover - before.turnover,
                fills=position.fills - before.fills,
                mark=mark,
            )
        )
    return out


def combine_instruments(rows: Iterable[InstrumentPnl]) -> list[InstrumentPnl]:
    """Several accounts' PnL of the same instruments added up (average cost weighted by position), by symbol."""
    grouped: dict[str, list[InstrumentPnl]] = {}
    for row in rows:
        grouped.setdefault(row.symbol, []).append(row)
    out = []
    for symbol, parts in sorted(grouped.items()):
        position = sum((p.position for p in parts), ZERO)
        cost = sum((MONEY_CONTEXT.multiply(p.average_cost, p.position) for p in parts), ZERO)
        unrealized = [p.unrealized for p in parts]
        out.append(
            InstrumentPnl(
                symbol=symbol,
                position=position,
                average_cost=ZERO if position == ZERO else money(MONEY_CONTEXT.divide(cost, position)),
                realized=sum((p.realized for p in parts), ZERO),
                unrealized=None if None in unrealized else sum((u for u in unrealized if u is not None), ZERO),
                fees=sum((p.fees for p in parts), ZERO),
                turnover=sum((p.turnover for p in parts), ZERO),
                fills=sum(p.fills for p in parts),
                mark=parts[0].mark,
            )
        )
    return out


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants that start and end `day` in `zone` (a DST day is 23 or 25 hours long)."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


def days(first: date, last: date) -> list[date]:
    """Every calendar day from `first` to `last`, both included."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
