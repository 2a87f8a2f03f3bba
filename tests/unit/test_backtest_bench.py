"""bench/backtest.py's ticks scenario: the file it writes is what both engines read (smoke, a few simulated minutes)."""

from __future__ import annotations

from pathlib import Path

from bench.backtest import generate_ticks, run_aether
from data.replay.source import read_csv
from shared.marketdata import BookSnapshot, Trade


def test_ticks_file_is_trades_and_ten_level_snapshots_that_the_backtester_replays(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    generate_ticks(path, hours=0.05, seed=1)  # three minutes, a snapshot a second
    messages = read_csv(path)
    snapshots = [m for m in messages if isinstance(m, BookSnapshot)]
    assert len(snapshots) == 180
    assert all(len(s.bids) == 10 and len(s.asks) == 10 for s in snapshots)  # what OrderBookDepth10 holds
    assert {type(m) for m in messages} == {BookSnapshot, Trade}
    assert messages[-1].timestamp < snapshots[0].timestamp.replace(minute=3)
    _, _, events, _, _ = run_aether(path, "ticks")
    assert events == len(messages)
