"""What a run is (`RunSpec`), the checks it must pass before it is queued, and how its data is loaded and replayed.

Input data today is files under the service's data directory: recorded market data (`data.replay.source`, CSV or
Parquet) and candle files (`shared.backtest.bars`). A `store` source (the market data store) is not wired yet.
A stress scenario (`shared.backtest.scenarios`) is stored as its `name:param=value,...` text and applied to the
loaded streams before the replay; its report (`shared.backtest.stress`) is stored with the result.
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
from shared.backtest.scenarios import Scenario, Stressed, parse_scenario
from shared.backtest.strategies import make_strategy
from shared.backtest.stress import stress_report
from shared.domain.money import format_decimal
from shared.marketdata import MarketData
from shared.venues.instruments import VENUES, venue_precision

NO_SCENARIO = "none"
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
    scenario_of(spec)
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


def scenario_text(name: str, parameters: Mapping[str, str]) -> str:
    """The stored form of a scenario: `name` or `name:param=value,...` (parameters sorted)."""
    if not parameters:
        return name
    return name + ":" + ",".join(f"{key}={parameters[key]}" for key in sorted(parameters))


def scenario_of(spec: RunSpec) -> tuple[Scenario, dict[str, str]] | None:
    """The run's stress scenario and parameter texts, None for `none`; `BacktestInputError` names a bad one."""
    name = spec.scenario.partition(":")[0]
    if name == NO_SCENARIO:
        if spec.scenario != NO_SCENARIO:
            raise BacktestInputError(f"scenario: {NO_SCENARIO!r} takes no parameters")
        return None
    return parse_scenario(spec.scenario, "scenario")


def stress_streams(spec: RunSpec, streams: Sequence[Stream]) -> Stressed | None:
    """The run's scenario applied to its streams (None without one); `BacktestInputError` where it cannot apply."""
    stress = scenario_of(spec)
    if stress is None:
        return None
    return stress[0].apply(streams, venue_precision(spec.settings.venue).specs(), stress[1])


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


def expected_events(streams: Sequence[Sequence[MarketData] | Sequence[Bar]]) -> int:
    """About how many events the engine will count (a bar is two), for progress fractions."""
    return sum(2 * len(s) if s and isinstance(s[0], Bar) else len(s) for s in streams) or 1


def run_backtest(spec: RunSpec, data_dir: Path, progress: Callable[[float], None] | None = None) -> BacktestRun:
    """Check, load and replay the run; `progress` gets a fraction in [0, 1) now and then."""
    return run_stressed(spec, data_dir, progress)[0]


def run_stressed(
    spec: RunSpec, data_dir: Path, progress: Callable[[float], None] | None = None
) -> tuple[BacktestRun, dict[str, Any] | None]:
    """`run_backtest`, with the stress report when the run has a scenario (else None)."""
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
    stressed = stress_streams(spec, streams)
    replay: Sequence[Stream] = streams if stressed is None else stressed.streams  # type: ignore[assignment]
    total = expected_events(replay)
    report = None if progress is None else (lambda done: progress(min(done / total, 0.99)))
    run = engine.run(
        replay,
        bar_interval=interval,
        progress=report,
        controls=() if stressed is None else stressed.controls,
        declared_gaps=() if stressed is None else stressed.declared_gaps,
    )
    return run, None if stressed is None else stress_report(run, stressed)


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
