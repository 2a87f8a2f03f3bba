"""What a run is (`RunSpec`), the checks it must pass before it is queued, and how its data is loaded and replayed.

Input data today is files under the service's data directory: recorded market data (`data.replay.source`, CSV or
Parquet) and candle files (`shared.backtest.bars`). A `store` source (the market data store) is not wired yet.
Stress scenarios are not wired yet either: the only scenario accepted is `none`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import product
from pathlib import Path
from typing import Any

from data.replay.source import SourceError, load_file
from shared.backtest.bars import BacktestInputError, Bar, check_continuity, read_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, BacktestRun, Latency
from shared.backtest.strategies import make_strategy
from shared.domain.money import format_decimal
from shared.marketdata import MarketData
from shared.venues.instruments import VENUES, venue_precision

NO_SCENARIO = "none"
# The stress scenario registry is another part of issue 15; until it is merged only `none` is accepted.
SCENARIOS: tuple[str, ...] = (NO_SCENARIO,)
DEFAULT_BALANCES: Mapping[str, str] = {"USD": "100000"}

Stream = list[MarketData] | list[Bar]


@dataclass(frozen=True)
class RunSettings:
    """Everything besides strategy, range, scenario, seed and data that a run depends on."""

    venue: str = "kraken"
    balances: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    bar_seconds: int = 60
    latency_ms: float = 50.0
    jitter_ms: float = 50.0
    max_gap_s: float = 600.0
    html_report: bool = True  # matplotlib plots cost about a second a run: large sweeps may go without

    def as_json(self) -> dict[str, Any]:
        """The settings as stored in `backtest.runs.settings`."""
        return {
            "venue": self.venue,
            "balances": dict(self.balances),
            "bar_seconds": self.bar_seconds,
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "max_gap_s": self.max_gap_s,
            "html_report": self.html_report,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSettings:
        """Read back `as_json`."""
        return cls(**data)


@dataclass(frozen=True)
class Source:
    """Files relative to the data directory: recorded market data (`files`) and candles (`bar_files`)."""

    files: tuple[str, ...] = ()
    bar_files: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The source as stored in `backtest.runs.source`."""
        return {"files": list(self.files), "bar_files": list(self.bar_files)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Source:
        """Read back `as_json`."""
        return cls(tuple(data.get("files", ())), tuple(data.get("bar_files", ())))


@dataclass(frozen=True)
class RunSpec:
    """One backtest: same spec, same data, same result."""

    strategy: str
    parameters: Mapping[str, str]
    source: Source
    start: datetime | None = None
    end: datetime | None = None
    scenario: str = NO_SCENARIO
    seed: int = 0
    settings: RunSettings = field(default_factory=RunSettings)


def resolve(data_dir: Path, where: str, name: str) -> Path:
    """`name` inside `data_dir`; `BacktestInputError` for a path that leaves it or a file that is not there."""
    root = data_dir.resolve()
    try:
        path = (root / name).resolve()
        inside = path.is_relative_to(root)
        found = inside and path.is_file()
    except OSError as exc:  # a name too long, a loop of links
        raise BacktestInputError(f"{where}: cannot read {name!r}: {exc.strerror}") from None
    if not inside:
        raise BacktestInputError(f"{where}: {name!r} is outside the data directory")
    if not found:
        raise BacktestInputError(f"{where}: no file {name!r} in the data directory")
    return path


def check_spec(spec: RunSpec, data_dir: Path) -> None:
    """The checks that need no data: strategy, parameters, scenario, settings, range order, files present."""
    make_strategy(spec.strategy, spec.parameters)
    if spec.scenario not in SCENARIOS:
        raise BacktestInputError(
            f"scenario: unknown scenario {spec.scenario!r} (known: {', '.join(SCENARIOS)};"
            " the stress scenarios are not wired into the service yet)"
        )
    if spec.start is not None and spec.end is not None and spec.end <= spec.start:
        raise BacktestInputError(f"range: end {spec.end.isoformat()} is not after start {spec.start.isoformat()}")
    if spec.settings.venue not in VENUES:
        raise BacktestInputError(f"settings.venue: unknown venue {spec.settings.venue!r} (known: {sorted(VENUES)})")
    for asset, amount in spec.settings.balances.items():
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise BacktestInputError(f"settings.balances.{asset}: not a decimal: {amount!r}") from None
        if not value.is_finite() or value < 0:
            raise BacktestInputError(f"settings.balances.{asset}: must be a finite, non-negative decimal")
    if not spec.source.files and not spec.source.bar_files:
        raise BacktestInputError("source: give at least one of files or bar_files")
    for kind, names in (("files", spec.source.files), ("bar_files", spec.source.bar_files)):
        for index, name in enumerate(names):
            resolve(data_dir, f"source.{kind}[{index}]", name)


def _within(at: datetime, spec: RunSpec) -> bool:
    return (spec.start is None or at >= spec.start) and (spec.end is None or at < spec.end)


def load_streams(spec: RunSpec, data_dir: Path) -> list[Stream]:
    """The run's data, cut to its range; `BacktestInputError` for an empty or gapped range (never bridged)."""
    interval = timedelta(seconds=spec.settings.bar_seconds)
    max_gap = timedelta(seconds=spec.settings.max_gap_s)
    streams: list[Stream] = []
    try:
        for index, name in enumerate(spec.source.files):
            where = f"source.files[{index}] ({name})"
            messages = [m for m in load_file(resolve(data_dir, where, name)) if _within(m.timestamp, spec)]
            for symbol in sorted({m.symbol for m in messages}) or [where]:
                own = [m.timestamp for m in messages if m.symbol == symbol]
                check_continuity(f"{where} {symbol}", own, max_gap)
            streams.append(messages)
        for index, name in enumerate(spec.source.bar_files):
            where = f"source.bar_files[{index}] ({name})"
            bars = [b for b in read_bars(resolve(data_dir, where, name), interval) if _within(b.start, spec)]
            for symbol in sorted({b.symbol for b in bars}) or [where]:
                check_continuity(f"{where} {symbol}", [b.start for b in bars if b.symbol == symbol], interval)
            streams.append(bars)
    except SourceError as exc:
        raise BacktestInputError(str(exc)) from None
    return streams


def expected_events(streams: Sequence[Stream]) -> int:
    """About how many events the engine will count (a bar is two), for progress fractions."""
    return sum(2 * len(s) if s and isinstance(s[0], Bar) else len(s) for s in streams) or 1


def run_backtest(spec: RunSpec, data_dir: Path, progress: Callable[[float], None] | None = None) -> BacktestRun:
    """Check, load and replay the run; `progress` gets a fraction in [0, 1) now and then."""
    check_spec(spec, data_dir)
    streams = load_streams(spec, data_dir)
    interval = timedelta(seconds=spec.settings.bar_seconds)
    config = BacktestConfig(
        specs=venue_precision(spec.settings.venue).specs(),
        initial_balances={asset: Decimal(amount) for asset, amount in spec.settings.balances.items()},
        seed=spec.seed,
        latency=Latency(
            timedelta(milliseconds=spec.settings.latency_ms), timedelta(milliseconds=spec.settings.jitter_ms)
        ),
        bar_interval=interval if spec.source.files else None,
        max_gap=timedelta(seconds=spec.settings.max_gap_s),
    )
    engine = BacktestEngine(config, make_strategy(spec.strategy, spec.parameters))
    total = expected_events(streams)
    report = None if progress is None else (lambda done: progress(min(done / total, 0.99)))
    return engine.run(streams, bar_interval=interval, progress=report)


def parameters_text(values: Mapping[str, Decimal]) -> dict[str, str]:
    """Parameter values as decimal strings."""
    return {name: format_decimal(value) for name, value in values.items()}


def grid_points(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """The cartesian product of a parameter grid, in a stable order (the grid's keys, then each list's order)."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in product(*(grid[name] for name in names))]


def check_grid(
    strategy: str, fixed: Mapping[str, str], grid: Mapping[str, Sequence[str]], limit: int
) -> list[dict[str, str]]:
    """Every point's parameters checked against the strategy; `BacktestInputError` names the first bad one."""
    overlap = sorted(set(fixed) & set(grid))
    if overlap:
        raise BacktestInputError(f"grid: {', '.join(overlap)} is both a fixed parameter and a grid axis")
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > limit:
        raise BacktestInputError(f"grid: {size} runs is more than the {limit} a sweep may have")
    points = [{**fixed, **point} for point in grid_points(grid)]
    for point in points:
        make_strategy(strategy, point)
    return points
