"""HTTP routes of the analytics service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict

from data.features import store as feature_store
from data.features.definitions import BAR_SECONDS, FEATURES
from shared.auth.dependencies import CurrentPrincipal
from shared.contracts.features import FeaturesComputed
from shared.errors import COMMON_RESPONSES, NotFound, Unprocessable
from shared.service_kit import RuntimeDep, info_router
from shared.web import DATETIME_PATTERN, RFC3339_TEXT, SYMBOL_PATTERN, Limit, error_responses

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("analytics"))


# --- features (issue 14, item 4): the stored microstructure features of one symbol and range ---------------

FEATURES_MAX_WINDOW = timedelta(days=31)


class FeaturesPage(BaseModel):
    """Features of one (venue, symbol), oldest bar first; `next_from` is the `from` of the next page."""

    model_config = ConfigDict(extra="forbid")

    items: list[FeaturesComputed]
    next_from: datetime | None


@router.get(
    "/analytics/features",
    response_model=FeaturesPage,
    tags=["analytics"],
    responses=error_responses(404, 422),
    summary="Microstructure features by symbol and range",
)
async def list_features(
    _: CurrentPrincipal,
    runtime: RuntimeDep,
    symbol: Annotated[str, Query(min_length=3, max_length=32, pattern=SYMBOL_PATTERN)],
    venue: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_-]{0,31}$")],
    start: Annotated[AwareDatetime, Query(alias="from", json_schema_extra={"pattern": DATETIME_PATTERN}), RFC3339_TEXT],
    end: Annotated[AwareDatetime, Query(alias="to", json_schema_extra={"pattern": DATETIME_PATTERN}), RFC3339_TEXT],
    limit: Limit = 500,
) -> FeaturesPage:
    """1-minute bars with `from <= bar_start < to` (at most 31 days; docs/features.md defines each value)."""
    if start >= end:
        raise Unprocessable("from must be before to", details={"field": "from"})
    if end - start > FEATURES_MAX_WINDOW:
        raise Unprocessable("the range is longer than 31 days", details={"field": "to"})
    async with runtime.sessionmaker() as session:
        rows = await feature_store.query(session, symbol, start, end, venue=venue, limit=limit)
        if not rows and not await feature_store.known(session, venue, symbol):
            raise NotFound(f"no features for {venue} {symbol}", details={"field": "symbol"})
    items = [
        FeaturesComputed(
            venue=row["venue"],
            symbol=row["instrument"],
            bar_start=row["bar_start"],
            bar_seconds=row["bar_seconds"],
            **{name: row[name] for name in FEATURES},
        )
        for row in rows
    ]
    more = len(items) == limit
    return FeaturesPage(items=items, next_from=items[-1].bar_start + timedelta(seconds=BAR_SECONDS) if more else None)
