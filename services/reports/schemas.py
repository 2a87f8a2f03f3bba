"""Request and response models of the reports service (extra="forbid"); money as decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import DecimalText, Identifier
from shared.domain.money import BelowOneFraction, Fraction
from shared.errors import rule_violation


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


class TargetWrite(ReportModel):
    """One account's target share of firm NAV and how far it may drift before a rebalancing is proposed."""

    account_id: Identifier
    target_share: Fraction = Field(description="0..1 of the firm's NAV (the accounts with a target)")
    band: BelowOneFraction = Field(description="a share further than this from the target is drifted")


class TargetsWrite(ReportModel):
    """Every target at once (the ones not named are dropped); the shares add up to exactly 1."""

    targets: list[TargetWrite] = Field(min_length=2, max_length=100)

    @model_validator(mode="after")
    def _whole_firm(self) -> Self:
        ids = [t.account_id for t in self.targets]
        if len(set(ids)) != len(ids):
            raise rule_violation("targets: an account is named twice")
        if sum((t.target_share for t in self.targets), Decimal(0)) != 1:
            raise rule_violation("targets: the target shares must add up to 1")
        return self


class TargetRead(ReportModel):
    account_id: str
    target_share: DecimalText
    band: DecimalText


class ProposalRead(ReportModel):
    """A rebalancing proposal: the transfer asked of the directors and why (the most drifted account)."""

    proposal_id: str
    from_account_id: str
    to_account_id: str
    asset: str
    amount: DecimalText
    drifted_account_id: str
    share: DecimalText
    target_share: DecimalText
    status: str = Field(description="proposed, approved, rejected or expired")


class AllocationRead(ReportModel):
    targets: list[TargetRead]
    proposals: list[ProposalRead]
