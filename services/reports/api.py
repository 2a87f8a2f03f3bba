"""HTTP routes of the reports service (thin: auth, parse, call the queries, answer JSON or CSV)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from services.reports.adapters import reports_adapters
from services.reports.allocation import CapitalAllocator, Proposal, Target
from services.reports.errors import FirmViewForbidden
from services.reports.schemas import (
    AllocationRead,
    DailyReturnReport,
    DailyReturnRow,
    FeeRow,
    FeesReport,
    MarkRead,
    NavPoint,
    NavReport,
    PnlReport,
    PnlRow,
    ProposalRead,
    ReportHeader,
    TargetRead,
    TargetsWrite,
)
from services.reports.service import BOOK_MID, LAST_TRADE, ReportQueries, Scope, parse_zone
from shared.audit.api import router as audit_router
from shared.auth.dependencies import authorize, ensure_account_access
from shared.auth.roles import Role
from shared.auth.roles import Scope as AuthScope
from shared.auth.tokens import Principal
from shared.domain.pnl import Mark, compound_pct
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router
from shared.web import AccountIdQuery, ReportReader, error_responses

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("reports"))
router.include_router(audit_router)

CSV_MEDIA_TYPE = "text/csv"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(404, 409, 422),
    200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "JSON, or CSV on Accept"},
}
PRICING = (
    f"balances (reserved included) x the latest mark at or before the instant: {BOOK_MID} = (best bid + best ask) / 2"
    f" from the book, {LAST_TRADE} = last trade price for a symbol whose book was not seen"
)

FromQuery = Annotated[date, Query(alias="from", description="first day (in `tz`), YYYY-MM-DD")]
ToQuery = Annotated[date, Query(description="last day (in `tz`), YYYY-MM-DD, included")]
TzQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_+/-]*$",
        description="IANA time zone the days are cut in (default: the account's, AETHER_ACCOUNT_TIME_ZONES, else UTC)",
    ),
]
DirectorReader = Annotated[Principal, Depends(authorize((Role.DIRECTOR,), AuthScope.REPORTS_READ))]


@dataclass(frozen=True)
class ReportRequest:
    queries: ReportQueries
    scope: Scope
    first: date
    last: date
    zone: ZoneInfo
    quote: str

    def header(self) -> dict[str, Any]:
        return {
            "scope": self.scope.label,
            "accounts": list(self.scope.account_ids),
            "quote": self.quote,
            "from": self.first,
            "to": self.last,
            "tz": self.zone.key,
        }


async def _resolve(
    request: Request, principal: Principal, account_id: str | None, first: date, last: date, tz: str | None
) -> ReportRequest:
    """Who may see what: an account the principal is granted, or the firm (every account) for a director."""
    reports = reports_adapters(request.app.state.runtime)
    zone = parse_zone(tz or reports.settings.zone_of(account_id))
    reports.queries.check_range(first, last)
    if account_id is None:
        if not principal.has_any_role(Role.DIRECTOR):
            raise FirmViewForbidden("account_id: the firm view (no account_id) is for directors")
    else:
        ensure_account_access(principal, account_id)
    scope = await reports.queries.scope(account_id)
    return ReportRequest(reports.queries, scope, first, last, zone, reports.settings.quote_asset)


def _mark(mark: Mark | None) -> MarkRead | None:
    if mark is None:
        return None
    return MarkRead(symbol=mark.symbol, price=mark.price, source=mark.source, observed_at=mark.observed_at)


def _answer(
    request: Request, report: ReportHeader, rows: Sequence[BaseModel], row_model: type[BaseModel], name: str
) -> Response:
    """JSON, or CSV (a header, then one line per row, nested values as JSON) when the client accepts text/csv."""
    if CSV_MEDIA_TYPE not in request.headers.get("accept", ""):
        return Response(report.model_dump_json(by_alias=True), media_type="application/json")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(row_model.model_fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
                for key, value in row.model_dump(mode="json").items()
            }
        )
    filename = f"{name}-{report.scope}-{report.from_}-{report.to}.csv"
    return Response(
        out.getvalue(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/reports/pnl/daily_pct", response_model=DailyReturnReport, responses=REPORT_RESPONSES, tags=["reports"])
async def daily_return(
    request: Request, principal: ReportReader, first: FromQuery, to: ToQuery, account_id: AccountIdQuery = None,
    tz: TzQuery = None,
) -> Response:  # fmt: skip
    """Daily PnL and time-weighted return % (cash flows excluded) of an account, or of the firm for a director."""
    query = await _resolve(request, principal, account_id, first, to, tz)
    days = await query.queries.daily(query.scope, query.first, query.last, query.zone)
    rows = [
        DailyReturnRow(
            day=d.day,
            start_nav=d.period.start_nav,
            end_nav=d.period.end.nav,
            net_flows=d.period.net_flows,
            pnl=d.period.pnl,
            return_pct=d.period.return_pct,
            drawdown_pct=d.drawdown_pct,
        )
        for d in days
    ]
    total = compound_pct(d.period.return_pct for d in days)
    report = DailyReturnReport(**query.header(), rows=rows, total_return_pct=total)
    return _answer(request, report, rows, DailyReturnRow, "daily-return")


@router.get("/reports/nav", response_model=NavReport, responses=REPORT_RESPONSES, tags=["reports"])
async def nav(
    request: Request, principal: ReportReader, first: FromQuery, to: ToQuery, account_id: AccountIdQuery = None,
    tz: TzQuery = None,
) -> Response:  # fmt: skip
    """NAV at the end of each day, marked at mid, with the exposure per asset and the marks (source and time)."""
    query = await _resolve(request, principal, account_id, first, to, tz)
    days = await query.queries.daily(query.scope, query.first, query.last, query.zone)
    rows = [
        NavPoint(
            day=d.day,
            at=d.period.end.at,
            nav=d.period.end.nav,
            exposure=dict(d.period.end.exposure),
            marks=[m for m in map(_mark, d.period.end.marks) if m is not None],
        )
        for d in days
    ]
    return _answer(request, NavReport(**query.header(), pricing=PRICING, rows=rows), rows, NavPoint, "nav")


@router.get("/reports/pnl", response_model=PnlReport, responses=REPORT_RESPONSES, tags=["reports"])
async def pnl(
    request: Request, principal: ReportReader, first: FromQuery, to: ToQuery, account_id: AccountIdQuery = None,
    tz: TzQuery = None,
) -> Response:  # fmt: skip
    """Realized and unrealized PnL (average cost), fees and turnover per instrument over the range."""
    query = await _resolve(request, principal, account_id, first, to, tz)
    result = await query.queries.pnl(query.scope, query.first, query.last, query.zone)
    rows = [
        PnlRow(
            symbol=i.symbol,
            position=i.position,
            average_cost=i.average_cost,
            realized=i.realized,
            unrealized=i.unrealized,
            fees=i.fees,
            turnover=i.turnover,
            fills=i.fills,
            mark=_mark(i.mark),
        )
        for i in result.instruments
    ]
    # The totals add only instruments quoted in the report's quote asset (another quote is another currency).
    in_quote = [i for i in result.instruments if i.symbol.endswith(f"/{query.quote}")]
    realized = sum((i.realized for i in in_quote), Decimal(0))
    fees = sum((i.fees for i in in_quote), Decimal(0))
    unrealized_values = [i.unrealized for i in in_quote]
    unrealized = None if None in unrealized_values else sum((u for u in unrealized_values if u is not None), Decimal(0))
    net = None if unrealized is None else realized + unrealized - fees
    report = PnlReport(**query.header(), rows=rows, realized=realized, unrealized=unrealized, fees=fees, net=net)
    return _answer(request, report, rows, PnlRow, "pnl")


@router.get("/reports/fees", response_model=FeesReport, responses=REPORT_RESPONSES, tags=["reports"])
async def fees(
    request: Request, principal: ReportReader, first: FromQuery, to: ToQuery, account_id: AccountIdQuery = None,
) -> Response:  # fmt: skip
    """Fees and turnover per UTC day and instrument, from the daily rollup as of its last refresh."""
    query = await _resolve(request, principal, account_id, first, to, "UTC")
    rollup, refreshed_at = await query.queries.fees(query.scope, query.first, query.last)
    rows = [
        FeeRow(day=r.day.date(), account_id=r.account_id, symbol=r.symbol, fees=r.fees, turnover=r.turnover,
               fills=r.fills)
        for r in rollup
    ]  # fmt: skip
    report = FeesReport(
        **query.header(), rows=rows, fees=sum((r.fees for r in rollup), Decimal(0)),
        turnover=sum((r.turnover for r in rollup), Decimal(0)), refreshed_at=refreshed_at,
    )  # fmt: skip
    return _answer(request, report, rows, FeeRow, "fees")


# The errors stay JSON: a response_class would make the OpenAPI document declare them as text/html too.
PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(404, 409, 422),
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"},
}


@router.get("/reports/ui/nav", response_model=None, responses=PAGE_RESPONSES, tags=["reports"])
async def nav_page(
    request: Request, principal: DirectorReader, first: FromQuery, to: ToQuery, account_id: AccountIdQuery = None,
    tz: TzQuery = None,
) -> HTMLResponse:  # fmt: skip
    """The NAV and drawdown chart for directors (server-rendered, inline SVG, nothing loaded from elsewhere)."""
    query = await _resolve(request, principal, account_id, first, to, tz)
    days = await query.queries.daily(query.scope, query.first, query.last, query.zone)
    navs = [d.period.end.nav for d in days]
    drawdowns = [d.drawdown_pct for d in days]
    context = {
        "header": query.header(),
        "days": days,
        "nav_points": polyline(navs),
        "drawdown_points": polyline(drawdowns),
        "pricing": PRICING,
    }
    response = TEMPLATES.TemplateResponse(request, "nav.html", context)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


CHART_WIDTH, CHART_HEIGHT = 640, 160


def polyline(values: list[Decimal]) -> str:
    """SVG polyline points for `values` spread over the chart (highest value at the top)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or Decimal(1)
    step = Decimal(CHART_WIDTH) / max(len(values) - 1, 1)
    points = []
    for index, value in enumerate(values):
        y = Decimal(CHART_HEIGHT) - (value - low) / span * CHART_HEIGHT
        points.append(f"{float(step * index):.1f},{float(y):.1f}")
    return " ".join(points)


AllocationWriter = Annotated[Principal, Depends(authorize((Role.DIRECTOR,), AuthScope.APPROVAL_POLICIES_WRITE))]


def _allocator(request: Request) -> CapitalAllocator:
    return reports_adapters(request.app.state.runtime).allocator


def _proposal_read(proposal: Proposal) -> ProposalRead:
    return ProposalRead(**asdict(proposal))


@router.get("/reports/allocation", response_model=AllocationRead, tags=["allocation"])
async def allocation(request: Request, principal: DirectorReader) -> AllocationRead:
    """The target share of firm NAV and band of each account, and the rebalancing proposals, newest first."""
    allocator = _allocator(request)
    targets = [TargetRead(**asdict(t)) for t in await allocator.targets()]
    return AllocationRead(targets=targets, proposals=[_proposal_read(p) for p in await allocator.proposals()])


@router.put(
    "/reports/allocation/targets", response_model=list[TargetRead], responses=error_responses(422), tags=["allocation"]
)
async def set_targets(request: Request, body: TargetsWrite, principal: AllocationWriter) -> list[TargetRead]:
    """Replace every account's target share (adding up to 1) and band; audited."""
    wanted = [Target(t.account_id, t.target_share, t.band) for t in body.targets]
    stored = await _allocator(request).set_targets(wanted, f"user:{principal.subject}")
    return [TargetRead(**asdict(t)) for t in stored]


@router.post(
    "/reports/allocation/check",
    response_model=ProposalRead | None,
    responses=error_responses(409),
    tags=["allocation"],
)
async def check_allocation(request: Request, principal: AllocationWriter) -> ProposalRead | None:
    """Value the targeted accounts now: the open proposal (a new one when a share left its band and none was
    open), or null when every share is inside its band."""
    proposal = await _allocator(request).check()
    return None if proposal is None else _proposal_read(proposal)
