"""The time-series tables the archiver may move out of PostgreSQL, with their time column and row key."""

from __future__ import annotations

from dataclasses import dataclass

from ops.storage.errors import OpsError


@dataclass(frozen=True, slots=True)
class TimeSeries:
    table: str  # schema.table
    time_column: str
    key_columns: tuple[str, ...]

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".")[1]


TIME_SERIES = {
    series.table: series
    for series in (
        # Public trades (migration 0003): the bulk of the market data.
        TimeSeries("marketdata.trades", "traded_at", ("venue", "instrument", "trade_id", "traded_at")),
        # The hedge service's NAV observations (migration 0016); opt-in: the hedge reads its recent history.
        TimeSeries("hedge.nav_history", "observed_at", ("id",)),
    )
}
DEFAULT_TABLES = ("marketdata.trades",)


def time_series(name: str) -> TimeSeries:
    """The registered table `name`; an OpsError listing the known ones otherwise."""
    try:
        return TIME_SERIES[name]
    except KeyError:
        raise OpsError(
            f"--table {name!r} is not an archivable time series (one of: {', '.join(TIME_SERIES)})"
        ) from None
