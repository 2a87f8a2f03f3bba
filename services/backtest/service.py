"""Use cases of the backtest service: check a run, queue it, dispatch it to a worker process, read what it produced."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from services.backtest import repository
from services.backtest.errors import InvalidBacktest, RunNotFinished, RunNotFound, SweepNotFound, WorkersRestarting
from services.backtest.repository import RunRow, SweepRow
from services.backtest.spec import RunSpec, check_grid, check_spec
from services.backtest.worker import Dispatcher
from shared.backtest.bars import BacktestInputError
from shared.db import UnitOfWork

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def new_id() -> str:
    """A run or sweep id: 32 hex digits."""
    return uuid.uuid4().hex


def _logged(future: Future[str]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a backtest worker failed", exc_info=future.exception())


@dataclass(frozen=True)
class Comparison:
    runs: list[RunRow]
    metrics: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SweepView:
    sweep: SweepRow
    runs: list[RunRow]
    metrics: dict[str, dict[str, Any]]


class BacktestRuns:
    """Submit, watch and read backtests and sweeps."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        dispatcher: Dispatcher,
        data_dir: Path,
        max_sweep_runs: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessionmaker = sessionmaker
        self._dispatcher = dispatcher
        self._data_dir = data_dir
        self._max_sweep_runs = max_sweep_runs
        self._clock = clock

    async def _db(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        async with UnitOfWork(self._sessionmaker) as uow:
            return await uow.session.run_sync(lambda session: fn(_connection(session), *args, **kwargs))

    def _dispatch(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            self._dispatcher.dispatch(run_id).add_done_callback(_logged)

    async def _check(self, spec: RunSpec) -> None:
        try:
            check_spec(spec, self._data_dir)
        except BacktestInputError as exc:
            raise InvalidBacktest(str(exc)) from None
        try:
            problem = await asyncio.wrap_future(self._dispatcher.check(spec))
        except BrokenProcessPool:
            raise WorkersRestarting("a backtest worker process died while checking the run; submit it again") from None
        if problem is not None:
            raise InvalidBacktest(problem)

    async def submit(self, spec: RunSpec, submitted_by: str) -> str:
        """Check the run (data included), queue it and hand it to a worker; returns its id."""
        await self._check(spec)
        run_id = new_id()
        await self._db(repository.insert_run, run_id, spec, submitted_by, self._clock())
        self._dispatch([run_id])
        return run_id

    async def submit_sweep(self, base: RunSpec, grid: dict[str, list[str]], submitted_by: str) -> tuple[str, list[str]]:
        """Check every point of the grid and the data once, queue one run per point, dispatch them."""
        try:
            points = check_grid(base.strategy, base.parameters, grid, self._max_sweep_runs)
        except BacktestInputError as exc:
            raise InvalidBacktest(str(exc)) from None
        await self._check(replace(base, parameters=points[0]))  # the fixed parameters alone may break a rule
        sweep_id, run_ids = new_id(), [new_id() for _ in points]
        now = self._clock()

        def insert(conn: Connection) -> None:
            repository.insert_sweep(conn, sweep_id, base.strategy, grid, submitted_by, now)
            for run_id, point in zip(run_ids, points, strict=True):
                repository.insert_run(conn, run_id, replace(base, parameters=point), submitted_by, now, sweep_id)

        await self._db(insert)
        self._dispatch(run_ids)
        return sweep_id, run_ids

    async def run(self, run_id: str) -> RunRow:
        """The run; `RunNotFound`."""
        row = await self._db(repository.get_run, run_id)
        if row is None:
            raise RunNotFound(f"run_id: no backtest {run_id}")
        return row

    async def _finished(self, run_id: str, read: Callable[[Connection, str], T | None]) -> T:
        row = await self.run(run_id)
        value = await self._db(read, run_id)
        if value is None:
            raise RunNotFinished(
                f"run_id: backtest {run_id} is {row.status}, it has no result", details={"status": row.status}
            )
        return value

    async def result(self, run_id: str) -> dict[str, Any]:
        """The result JSON of a done run."""
        return await self._finished(run_id, repository.result_of)

    async def report(self, run_id: str) -> str:
        """The HTML report of a done run; `RunNotFinished` also for a run made without one."""
        (report,) = await self._finished(run_id, repository.report_of)
        if report is None:
            raise RunNotFinished(
                f"run_id: backtest {run_id} was run without an HTML report (settings.html_report=false)",
                details={"status": repository.DONE},
            )
        return report

    async def compare(self, run_ids: Sequence[str]) -> Comparison:
        """The runs and their metrics; every id must exist and be done."""
        found = await self._db(repository.get_runs, run_ids)
        missing = [run_id for run_id in run_ids if run_id not in found]
        if missing:
            raise RunNotFound(f"ids: no backtest {', '.join(missing)}")
        metrics = await self._db(repository.metrics_of, run_ids)
        pending = [run_id for run_id in run_ids if run_id not in metrics]
        if pending:
            raise RunNotFinished(f"ids: {', '.join(pending)} not done", details={"run_ids": pending})
        return Comparison([found[run_id] for run_id in run_ids], metrics)

    async def sweep(self, sweep_id: str) -> SweepView:
        """The sweep, its runs and the metrics of those done; `SweepNotFound`."""

        def read(conn: Connection) -> SweepView | None:
            sweep = repository.get_sweep(conn, sweep_id)
            if sweep is None:
                return None
            runs = repository.sweep_runs(conn, sweep_id)
            return SweepView(sweep, runs, repository.metrics_of(conn, [r.run_id for r in runs]))

        view = await self._db(read)
        if view is None:
            raise SweepNotFound(f"sweep_id: no sweep {sweep_id}")
        return view

    async def recover(self) -> int:
        """Dispatch again the runs outside sweeps that a stopped service left queued or running."""
        run_ids = await self._db(repository.recover_runs)
        self._dispatch(run_ids)
        return len(run_ids)


def _connection(session: Session) -> Connection:
    return session.connection()
