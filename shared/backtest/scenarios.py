"""Stress scenarios: pure transforms of a recorded range's event streams, in a registry by name with declared
parameters (`SCENARIOS`, parsed by `parse_scenario("flash_crash:depth_pct=40")`).

Every scenario acts on a window that starts `start_min` minutes after the range's first event; a window that does
not fit inside the range, or data the scenario cannot act on (depth on bars-only data), is a `BacktestInputError`
naming why, never a silent no-op. Book changes inside a window are emitted as full snapshots of the true book (kept
from the recorded snapshots and deltas) transformed, and the true book is restored by a snapshot at the first book
message after the window, so deltas never apply to levels the transform moved.

What cannot be expressed on the data (a fee schedule change, a venue refusing orders) is returned as `controls` the
engine carries out at their time; a feed outage declares its hole (`declared_gaps`) so the gap check accepts that
one hole and still reports any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from shared.backtest.bars import BacktestInputError, Bar
from shared.backtest.strategy import Param, check_params
from shared.domain.fees import FeeSchedule, FeeTier, quantize_up
from shared.domain.money import InstrumentSpec, format_decimal, quantize_down
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketData, Trade

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
MINUTE = timedelta(minutes=1)
VENUE_DOWN = "venue_unavailable"

Stream = Sequence[MarketData] | Sequence[Bar]
Levels = list[tuple[Decimal, Decimal]]


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) of a scenario."""

    start: datetime
    end: datetime

    def __contains__(self, at: object) -> bool:
        return isinstance(at, datetime) and self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class FeeChange:
    """From `at` on, the account trades under `schedule`."""

    at: datetime
    schedule: FeeSchedule


@dataclass(frozen=True, slots=True)
class VenueRejects:
    """Orders (and cancels) that reach the venue within `window` are refused with `reason`."""

    window: Window
    reason: str = VENUE_DOWN


Control = FeeChange | VenueRejects


@dataclass(frozen=True)
class Stressed:
    """A scenario applied: the transformed streams and what the engine must do besides replaying them."""

    name: str
    params: Mapping[str, Decimal]
    window: Window
    streams: list[Stream]
    controls: tuple[Control, ...] = ()
    declared_gaps: tuple[Window, ...] = ()
    changed: int = 0  # events transformed, dropped or added

    def describe(self) -> dict[str, object]:
        """The scenario as JSON: name, parameters, window, events changed."""
        return {
            "name": self.name,
            "params": {k: format_decimal(v) for k, v in self.params.items()},
            "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
            "changed_events": self.changed,
        }


@dataclass(frozen=True)
class Scenario:
    """A named stress with its declared parameters; `build` turns the range and the parameters into a `Stressed`."""

    name: str
    description: str
    params: Mapping[str, Param]
    build: Callable[[_Range, Mapping[str, Decimal]], Stressed]

    def apply(
        self, streams: Sequence[Stream], specs: Mapping[str, InstrumentSpec], given: Mapping[str, str] | None = None
    ) -> Stressed:
        """Apply to `streams` with the parameter texts `given` (defaults for the rest)."""
        values = {name: param.default for name, param in self.params.items()}
        values.update(check_params(self.name, self.params, given or {}))
        return self.build(_Range(self.name, list(streams), specs), values)


# --- the range ------------------------------------------------------------------------------------------------


@dataclass
class _Range:
    scenario: str
    streams: list[Stream]
    specs: Mapping[str, InstrumentSpec]
    first: datetime = field(init=False)
    last: datetime = field(init=False)

    def __post_init__(self) -> None:
        times = [t for s in self.streams if s for t in (_start_of(s[0]), _end_of(s[-1]))]
        if not times:
            raise BacktestInputError(f"scenario {self.scenario}: the range holds no data")
        self.first, self.last = min(times), max(times)

    def window(self, values: Mapping[str, Decimal], length: timedelta) -> Window:
        start = self.first + MINUTE * float(values["start_min"])
        window = Window(start, start + length)
        if window.end > self.last:
            raise BacktestInputError(
                f"scenario {self.scenario}: window {window.start.isoformat()} to {window.end.isoformat()} "
                f"lies outside the recorded range {self.first.isoformat()} to {self.last.isoformat()}"
            )
        return window

    def increment(self, symbol: str) -> Decimal:
        spec = self.specs.get(symbol)
        if spec is None:
            raise BacktestInputError(f"scenario {self.scenario}: symbol {symbol!r} has no instrument spec")
        return spec.price_increment

    def market(self) -> list[tuple[int, Sequence[MarketData]]]:
        return [(i, s) for i, s in enumerate(self.streams) if s and not isinstance(s[0], Bar)]  # type: ignore[misc]

    def books_required(self, window: Window) -> None:
        has_book = any(
            isinstance(m, BookSnapshot | BookDelta) and m.timestamp in window for _, s in self.market() for m in s
        )
        if not has_book:
            kind = "bars only" if not self.market() else "no order book inside the window"
            raise BacktestInputError(f"scenario {self.scenario} does not apply: it changes the order book ({kind})")


def _start_of(item: MarketData | Bar) -> datetime:
    return item.start if isinstance(item, Bar) else item.timestamp


def _end_of(item: MarketData | Bar) -> datetime:
    return item.end if isinstance(item, Bar) else item.timestamp


# --- book rewriting -------------------------------------------------------------------------------------------

BookChange = Callable[[datetime, str, Levels, Levels], tuple[Levels, Levels]]


def _snapshot(message: BookSnapshot | BookDelta, bids: Levels, asks: Levels) -> BookSnapshot:
    return BookSnapshot(
        venue=message.venue,
        symbol=message.symbol,
        bids=[Level(price=p, qty=q) for p, q in bids],
        asks=[Level(price=p, qty=q) for p, q in asks],
        timestamp=message.timestamp,
        sequence=getattr(message, "sequence", 0),
    )


def _merged(levels: Iterable[tuple[Decimal, Decimal]], *, descending: bool) -> Levels:
    total: dict[Decimal, Decimal] = {}
    for price, qty in levels:
        if price > 0 and qty > 0:
            total[price] = total.get(price, ZERO) + qty
    return sorted(total.items(), reverse=descending)


def _follow(
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]], message: BookSnapshot | BookDelta
) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] | None:
    """Apply a snapshot or delta to the true book of its symbol; that book (None before a first snapshot)."""
    if isinstance(message, BookSnapshot):
        books[message.symbol] = ({lv.price: lv.qty for lv in message.bids}, {lv.price: lv.qty for lv in message.asks})
    elif message.symbol in books:
        for side, levels in zip(books[message.symbol], (message.bids, message.asks), strict=True):
            for level in levels:
                if level.qty == 0:
                    side.pop(level.price, None)
                else:
                    side[level.price] = level.qty
    return books.get(message.symbol)


def _rebook(messages: Sequence[MarketData], window: Window, change: BookChange) -> tuple[list[MarketData], int]:
    """Book messages inside `window` replaced by transformed snapshots of the true book; the true book restored after."""
    out: list[MarketData] = []
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    dirty: set[str] = set()
    changed = 0
    for message in messages:
        if isinstance(message, Trade):
            out.append(message)
            continue
        symbol = message.symbol
        book = _follow(books, message)
        if book is None:
            out.append(message)
            continue
        bids = sorted(book[0].items(), reverse=True)
        asks = sorted(book[1].items())
        if message.timestamp in window:
            new_bids, new_asks = change(message.timestamp, symbol, bids, asks)
            out.append(_snapshot(message, _merged(new_bids, descending=True), _merged(new_asks, descending=False)))
            dirty.add(symbol)
            changed += 1
        elif symbol in dirty:
            out.append(_snapshot(message, bids, asks))
            dirty.discard(symbol)
            changed += 1
        else:
            out.append(message)
    return out, changed


def _each_market(
    rng: _Range, rewrite: Callable[[Sequence[MarketData]], tuple[list[MarketData], int]]
) -> tuple[list[Stream], int]:
    streams: list[Stream] = list(rng.streams)
    total = 0
    for index, stream in rng.market():
        streams[index], changed = rewrite(stream)
        total += changed
    return streams, total


# --- the scenarios --------------------------------------------------------------------------------------------

_START = Param(Decimal(10), ZERO, Decimal(525_600))


def _flash_factor(window: Window, depth: Decimal) -> Callable[[datetime], Decimal]:
    half = (window.end - window.start) / 2

    def factor(at: datetime) -> Decimal:
        if at not in window:
            return ONE
        elapsed = at - window.start
        share = Decimal(str(elapsed / half)) if elapsed <= half else Decimal(str((window.end - at) / half))
        return ONE - depth * share

    return factor


def _flash_crash(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    minutes = values["minutes"]
    window = rng.window(values, 2 * MINUTE * float(minutes))
    factor = _flash_factor(window, values["depth_pct"] / HUNDRED)

    def scale(message: Sequence[MarketData]) -> tuple[list[MarketData], int]:
        def book(at: datetime, symbol: str, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
            f, tick = factor(at), rng.increment(symbol)
            return (
                [(quantize_down(p * f, tick), q) for p, q in bids],
                [(max(quantize_up(p * f, tick), tick), q) for p, q in asks],
            )

        rebooked, changed = _rebook(message, window, book)
        out: list[MarketData] = []
        for m in rebooked:
            if isinstance(m, Trade) and m.timestamp in window:
                tick = rng.increment(m.symbol)
                m = m.model_copy(update={"price": max(quantize_down(m.price * factor(m.timestamp), tick), tick)})
                changed += 1
            out.append(m)
        return out, changed

    streams, changed = _each_market(rng, scale)
    for index, stream in enumerate(rng.streams):
        if stream and isinstance(stream[0], Bar):
            bars, count = _scale_bars(rng, stream, window, factor)  # type: ignore[arg-type]
            streams[index], changed = bars, changed + count
    if not changed:
        raise BacktestInputError(f"scenario flash_crash does not apply: no prices inside {window.start.isoformat()}")
    return Stressed("flash_crash", values, window, streams, changed=changed)


def _scale_bars(
    rng: _Range, bars: Sequence[Bar], window: Window, factor: Callable[[datetime], Decimal]
) -> tuple[list[Bar], int]:
    out: list[Bar] = []
    changed = 0
    for bar in bars:
        if bar.end <= window.start or bar.start >= window.end:
            out.append(bar)
            continue
        tick = rng.increment(bar.symbol)
        steps = [bar.start + (bar.end - bar.start) * i / 4 for i in range(5)]
        factors = [factor(at) for at in steps]
        low_f, high_f = min(factors), max(factors)
        open_, close = bar.open * factors[0], bar.close * factors[-1]
        high = max(bar.high * high_f, open_, close)
        low = max(min(bar.low * low_f, open_, close), tick)
        out.append(
            Bar(
                bar.symbol,
                bar.start,
                bar.end,
                quantize_down(open_, tick),
                quantize_up(high, tick),
                quantize_down(low, tick),
                quantize_down(close, tick),
                bar.volume,
            )
        )
        changed += 1
    return out, changed


def _liquidity_drought(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    window = rng.window(values, MINUTE * float(values["minutes"]))
    rng.books_required(window)
    divisor = values["divisor"]

    def thin(_at: datetime, _symbol: str, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        return [(p, q / divisor) for p, q in bids], [(p, q / divisor) for p, q in asks]

    def rewrite(messages: Sequence[MarketData]) -> tuple[list[MarketData], int]:
        rebooked, changed = _rebook(messages, window, thin)
        out: list[MarketData] = []
        for m in rebooked:
            if isinstance(m, Trade) and m.timestamp in window:
                m = m.model_copy(update={"qty": m.qty / divisor})
                changed += 1
            out.append(m)
        return out, changed

    streams, changed = _each_market(rng, rewrite)
    return Stressed("liquidity_drought", values, window, streams, changed=changed)


def _spread_blowout(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    window = rng.window(values, MINUTE * float(values["minutes"]))
    rng.books_required(window)
    widen = values["factor"]

    def blow(_at: datetime, symbol: str, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        if not bids or not asks:
            return bids, asks
        tick = rng.increment(symbol)
        mid = (bids[0][0] + asks[0][0]) / 2
        return (
            [(quantize_down(mid - (mid - p) * widen, tick), q) for p, q in bids],
            [(quantize_up(mid + (p - mid) * widen, tick), q) for p, q in asks],
        )

    streams, changed = _each_market(rng, lambda messages: _rebook(messages, window, blow))
    return Stressed("spread_blowout", values, window, streams, changed=changed)


def _feed_outage(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    window = rng.window(values, MINUTE * float(values["minutes"]))
    streams: list[Stream] = []
    dropped = 0
    for stream in rng.streams:
        if stream and isinstance(stream[0], Bar):
            kept: list[Bar] | list[MarketData] = [
                b for b in stream if isinstance(b, Bar) and (b.end <= window.start or b.start >= window.end)
            ]
        else:
            kept = [m for m in stream if not isinstance(m, Bar) and m.timestamp not in window]
        dropped += len(stream) - len(kept)
        if not kept:
            raise BacktestInputError("scenario feed_outage: the outage would leave a stream with no data at all")
        streams.append(kept)
    if not dropped:
        raise BacktestInputError(
            f"scenario feed_outage does not apply: no data between {window.start} and {window.end}"
        )
    return Stressed("feed_outage", values, window, streams, declared_gaps=(window,), changed=dropped)


def _fee_tier_change(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    window = rng.window(values, timedelta(0))
    window = Window(window.start, rng.last)
    schedule = FeeSchedule((FeeTier(ZERO, values["maker_pct"] / HUNDRED, values["taker_pct"] / HUNDRED),))
    return Stressed("fee_tier_change", values, window, list(rng.streams), controls=(FeeChange(window.start, schedule),))


def _venue_rejects(rng: _Range, values: Mapping[str, Decimal]) -> Stressed:
    window = rng.window(values, MINUTE * float(values["minutes"]))
    return Stressed("venue_rejects", values, window, list(rng.streams), controls=(VenueRejects(window),))


def _minutes(default: int, maximum: int = 1440) -> Param:
    return Param(Decimal(default), ONE, Decimal(maximum))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "flash_crash",
            "prices fall linearly by depth_pct over `minutes`, then climb back over as many (trades, books, bars)",
            {"start_min": _START, "minutes": _minutes(5), "depth_pct": Param(Decimal(30), ONE, Decimal(95))},
            _flash_crash,
        ),
        Scenario(
            "liquidity_drought",
            "book depth and print sizes divided by `divisor` for `minutes` (needs book data)",
            {"start_min": _START, "minutes": _minutes(30), "divisor": Param(Decimal(10), Decimal(2), Decimal(1000))},
            _liquidity_drought,
        ),
        Scenario(
            "spread_blowout",
            "every level's distance from mid multiplied by `factor` for `minutes` (needs book data)",
            {"start_min": _START, "minutes": _minutes(15), "factor": Param(Decimal(10), Decimal(2), Decimal(1000))},
            _spread_blowout,
        ),
        Scenario(
            "feed_outage",
            "no market data at all for `minutes` (the one declared hole the gap check accepts)",
            {"start_min": _START, "minutes": _minutes(10)},
            _feed_outage,
        ),
        Scenario(
            "fee_tier_change",
            "from start_min on, one flat tier of maker_pct / taker_pct percent",
            {
                "start_min": _START,
                "maker_pct": Param(Decimal("0.4"), ZERO, Decimal(10)),
                "taker_pct": Param(Decimal("0.6"), ZERO, Decimal(10)),
            },
            _fee_tier_change,
        ),
        Scenario(
            "venue_rejects",
            f"orders and cancels reaching the venue for `minutes` are rejected ({VENUE_DOWN})",
            {"start_min": _START, "minutes": _minutes(15)},
            _venue_rejects,
        ),
    )
}


def parse_scenario(text: str, option: str = "--scenario") -> tuple[Scenario, dict[str, str]]:
    """`name[:param=value[,param=value]]` -> the scenario and its parameter texts; errors start with `option`."""
    name, _, rest = text.partition(":")
    scenario = SCENARIOS.get(name.strip())
    if scenario is None:
        raise BacktestInputError(f"{option}: unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})")
    given: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BacktestInputError(f"{option} {name}: expected param=value, got {pair!r}")
        given[key.strip()] = value.strip()
    check_params(scenario.name, scenario.params, given)
    return scenario, given
