"""The daily rollups: continuous aggregates where TimescaleDB exists, materialized views otherwise.

Each is defined by its migration; this list is what `aether ops refresh-aggregates` refreshes and what readers
name. `received_column` is when a source row was stored: rows stored since the last refresh say which days a
refresh must cover (and whether a materialized view needs one at all).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rollup:
    view: str
    source: str
    time_column: str
    received_column: str


FILLS_DAILY = Rollup("reports.fills_daily", "reports.fills", "occurred_at", "received_at")
ROLLUPS: tuple[Rollup, ...] = (FILLS_DAILY,)
