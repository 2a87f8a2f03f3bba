"""Request and response models of the reports service (extra="forbid"); money as decimal strings."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import DecimalText


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarkRead(ReportModel):
    """The price a valuation used: where it came from and when it was observed."""

    symbol: str
    price: DecimalText
    source: str = Field(description="book_mid (mid of the best bid and ask) or last_trade (no book seen)")
    observed_at: datetime


class DailyReturnRow(ReportModel):
    """One day: NAV at both ends, net cash flows in, PnL, the time-weighted return % and the drawdown %."""

    day: date
    start_nav: DecimalText
    end_nav: DecimalText
    net_flows: DecimalText
    pnl: DecimalText
    return_pct: DecimalText | None = Field(description="null when the account held nothing all day")
    drawdown_pct: DecimalText


class NavPoint(ReportModel):
    """NAV at the end of one day, the value held per asset, and the marks used."""

    day: date
    at: datetime
    nav: DecimalText
    exposure: dict[str, DecimalText]
    marks: list[MarkRead]


class PnlRow(ReportModel):
    """Average-cost PnL of one instrument over the range; unrealized at the last mark (null without one)."""

    symbol: str
    position: DecimalText
    average_cost: DecimalText
    realized: DecimalText
    unrealized: DecimalText | None
    fees: DecimalText
    turnover: DecimalText
    fills: int
    mark: MarkRead | None


class FeeRow(ReportModel):
    """Fees and turnover of one account and instrument on one UTC day (the `fills_daily` rollup)."""

    day: date
    account_id: str
    symbol: str
    fees: DecimalText
    turnover: DecimalText
    fills: int


class ReportHeader(ReportModel):
    scope: str = Field(description="the account, or `firm` for every account together")
    accounts: list[str]
    quote: str
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    tz: str

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DailyReturnReport(ReportHeader):
    rows: list[DailyReturnRow]
    total_return_pct: DecimalText = Field(description="the daily returns chained (time-weighted over the range)")


class NavReport(ReportHeader):
    pricing: str = Field(description="how the NAV is priced")
    rows: list[NavPoint]


class PnlReport(ReportHeader):
    """Per instrument (each in its own quote asset); the totals add the instruments quoted in `quote` only."""

    rows: list[PnlRow]
    realized: DecimalText
    unrealized: DecimalText | None
    fees: DecimalText
    net: DecimalText | None = Field(description="realized + unrealized - fees (null when a position has no mark)")


class FeesReport(ReportHeader):
    rows: list[FeeRow]
    fees: DecimalText
    turnover: DecimalText
    refreshed_at: datetime | None = Field(description="when the rollup was last refreshed (null: never)")
