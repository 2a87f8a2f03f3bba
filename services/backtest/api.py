"""HTTP routes of the backtest service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import HTMLResponse

from services.backtest.adapters import Adapters
from services.backtest.errors import InvalidBacktest
from services.backtest.repository import RunRow
from services.backtest.schemas import (
    CompareRead,
    CompareRun,
    RunAccepted,
    RunCreate,
    RunRead,
    SweepAccepted,
    SweepCreate,
    SweepRead,
    SweepRunRead,
)
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router
from shared.web import HEX32_PATTERN, Backtester, BacktestReader, error_responses

router = APIRouter(responses=COMMON_RESPONSES, tags=["backtests"])
router.include_router(info_router("backtest"))

RunIdPath = Annotated[str, Path(min_length=32, max_length=32, pattern=HEX32_PATTERN)]
SweepIdPath = Annotated[str, Path(min_length=32, max_length=32, pattern=HEX32_PATTERN)]
MAX_COMPARED = 20
RUN_ID = re.compile(HEX32_PATTERN)
HTML_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the HTML report"}
}


def _read(row: RunRow) -> RunRead:
    spec = row.spec
    return RunRead(
        run_id=row.run_id,
        strategy=spec.strategy,
        parameters=dict(spec.parameters),
        start=spec.start,
        end=spec.end,
        scenario=spec.scenario,
        seed=spec.seed,
        source=spec.source.as_json(),
        status=row.status,
        progress=row.progress,
        error=row.error,
        attempts=row.attempts,
        submitted_by=row.submitted_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        sweep_id=row.sweep_id,
    )


@router.post(
    "/v1/backtests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses=error_responses(422, 503),
)
async def submit_backtest(body: RunCreate, principal: Backtester, adapters: Adapters) -> RunAccepted:
    """Check a backtest (strategy, parameters, scenario, data range) and queue it; watch it at /v1/backtests/{id}."""
    run_id = await adapters.runs.submit(body.to_spec(), principal.subject)
    return RunAccepted(run_id=run_id, status="queued")


@router.get("/v1/backtests/compare", response_model=CompareRead, responses=error_responses(404, 409, 422))
async def compare_backtests(
    principal: BacktestReader,
    adapters: Adapters,
    ids: Annotated[str, Query(min_length=1, max_length=33 * MAX_COMPARED, description="run ids, comma-separated")],
) -> CompareRead:
    """Metrics of finished runs side by side."""
    run_ids = [part.strip() for part in ids.split(",")]
    if not 2 <= len(run_ids) <= MAX_COMPARED or len(set(run_ids)) != len(run_ids):
        raise InvalidBacktest(f"ids: give 2 to {MAX_COMPARED} distinct run ids, comma-separated")
    malformed = [run_id for run_id in run_ids if not RUN_ID.fullmatch(run_id)]
    if malformed:
        raise InvalidBacktest(f"ids: {malformed[0][:40]!r} is not a run id (32 hex digits)")
    comparison = await adapters.runs.compare(run_ids)
    names = list(dict.fromkeys(name for run_id in run_ids for name in comparison.metrics[run_id]))
    return CompareRead(
        runs=[
            CompareRun(run_id=r.run_id, strategy=r.spec.strategy, parameters=dict(r.spec.parameters), seed=r.spec.seed)
            for r in comparison.runs
        ],
        metrics={name: [comparison.metrics[run_id].get(name) for run_id in run_ids] for name in names},
    )


@router.get("/v1/backtests/{run_id}", response_model=RunRead, responses=error_responses(404))
async def get_backtest(run_id: RunIdPath, principal: BacktestReader, adapters: Adapters) -> RunRead:
    """A run's request, status and progress."""
    return _read(await adapters.runs.run(run_id))


@router.get("/v1/backtests/{run_id}/result", responses=error_responses(404, 409))
async def get_backtest_result(run_id: RunIdPath, principal: BacktestReader, adapters: Adapters) -> dict[str, Any]:
    """A done run's metrics, trade list, orders and equity curve (money as decimal strings)."""
    return await adapters.runs.result(run_id)


@router.get(
    "/v1/backtests/{run_id}/report", response_model=None, responses={**error_responses(404, 409), **HTML_RESPONSE}
)
async def get_backtest_report(run_id: RunIdPath, principal: BacktestReader, adapters: Adapters) -> HTMLResponse:
    """A done run's HTML report with plots (equity, drawdown, positions, fills on price)."""
    return HTMLResponse(await adapters.runs.report(run_id))


@router.post(
    "/v1/sweeps",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepAccepted,
    responses=error_responses(422, 503),
)
async def submit_sweep(body: SweepCreate, principal: Backtester, adapters: Adapters) -> SweepAccepted:
    """Queue one run per point of a parameter grid (each point checked first), run in worker processes."""
    grid = {name: [str(value) for value in values] for name, values in body.grid.items()}
    sweep_id, run_ids = await adapters.runs.submit_sweep(body.to_spec(), grid, principal.subject)
    return SweepAccepted(sweep_id=sweep_id, run_ids=run_ids)


@router.get("/v1/sweeps/{sweep_id}", response_model=SweepRead, responses=error_responses(404))
async def get_sweep(sweep_id: SweepIdPath, principal: BacktestReader, adapters: Adapters) -> SweepRead:
    """A sweep, how many runs are in each status, and each run's metrics once done."""
    view = await adapters.runs.sweep(sweep_id)
    sweep = view.sweep
    return SweepRead(
        sweep_id=sweep.sweep_id,
        strategy=sweep.strategy,
        grid=sweep.grid,
        status=sweep.status,
        counts=sweep.counts,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        runs=[
            SweepRunRead(
                run_id=r.run_id,
                parameters=dict(r.spec.parameters),
                status=r.status,
                progress=r.progress,
                error=r.error,
                metrics=view.metrics.get(r.run_id),
            )
            for r in view.runs
        ],
    )
