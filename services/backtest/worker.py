"""Where runs execute: worker processes (`ProcessPoolExecutor`, spawned) that replay a run and write its progress
and results to PostgreSQL themselves. The service and `aether backtest sweep` both dispatch here."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from services.backtest import repository
from services.backtest.spec import RunSpec, check_spec, load_streams, run_stressed, stress_streams
from shared.backtest.bars import BacktestInputError
from shared.backtest.results import html_report, to_json
from shared.backtest.stress import html_section
from shared.db.engine import sync_url

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
PROGRESS_STEP = 0.01
SKIPPED = "skipped"  # another worker held (or took over) the run


@lru_cache(maxsize=4)
def _engine(database_url: str) -> Engine:
    return sa.create_engine(sync_url(database_url), poolclass=NullPool)


def _now() -> datetime:
    return datetime.now(UTC)


def execute_run(run_id: str, database_url: str, data_dir: str) -> str:
    """Claim a queued run, replay it and store its results (or why it failed); returns the status it ended in."""
    engine = _engine(database_url)
    with engine.begin() as conn:
        claim = repository.claim_run(conn, run_id, _now())
    if claim is None:
        return SKIPPED
    written = [0.0]

    def progress(fraction: float) -> None:
        if fraction - written[0] >= PROGRESS_STEP:
            written[0] = fraction
            with engine.begin() as conn:
                repository.set_progress(conn, claim, fraction)

    try:
        run, stress = run_stressed(claim.spec, Path(data_dir), progress)
        data = to_json(run)
        if stress is not None:
            data["stress"] = stress
        extra = "" if stress is None else html_section(stress)
        report = html_report(run, data, extra) if claim.spec.settings.html_report else None
    except BacktestInputError as exc:
        with engine.begin() as conn:
            held = repository.fail_run(conn, claim, str(exc), _now())
        return repository.FAILED if held else SKIPPED
    except Exception as exc:  # a bug must still leave the run failed, never `running` forever
        log.exception("backtest run %s failed", run_id)
        with engine.begin() as conn:
            held = repository.fail_run(conn, claim, f"internal error: {type(exc).__name__}", _now())
        return repository.FAILED if held else SKIPPED
    with engine.begin() as conn:
        held = repository.finish_run(conn, claim, run, data, report, _now())
    return repository.DONE if held else SKIPPED


def check_data(spec: RunSpec, data_dir: str) -> str | None:
    """Why the run cannot start (an empty or gapped range, a bad file), or None; runs in a worker process."""
    try:
        check_spec(spec, Path(data_dir))
        stress_streams(spec, load_streams(spec, Path(data_dir)))
    except BacktestInputError as exc:
        return str(exc)
    return None


def worker_pool(workers: int, *, fork_now: bool = False) -> ProcessPoolExecutor:
    """`workers` worker processes.

    By default they fork from a fresh fork server that has imported this module once: a fork of a process that
    holds sockets, threads and an event loop (the service) is not safe, and spawning each worker would import
    everything again. `fork_now` forks them from the caller at once instead, for a single-threaded caller that
    holds no connection (the sweep CLI): no second import at all.
    """
    if fork_now:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
        pool.submit(int).result()  # with "fork" every worker starts on the first submit, before any thread exists
        return pool
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


class Dispatcher:
    """A bounded pool of worker processes that execute runs."""

    def __init__(self, workers: int, database_url: str, data_dir: Path) -> None:
        self._workers = workers
        self._pool = worker_pool(workers)
        self._database_url = database_url
        self._data_dir = str(data_dir)

    def _submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # a worker died (killed, out of memory): the pool takes no more work
            log.warning("a backtest worker process died; starting a new pool")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = worker_pool(self._workers)
            return self._pool.submit(fn, *args, **kwargs)

    def dispatch(self, run_id: str) -> Future[str]:
        """Execute the run in a worker process."""
        return self._submit(execute_run, run_id, self._database_url, self._data_dir)

    def check(self, spec: RunSpec) -> Future[str | None]:
        """`check_data` in a worker process (loading a year of data is no work for the event loop)."""
        return self._submit(check_data, spec, self._data_dir)

    def close(self) -> None:
        """Stop taking work; runs in flight finish in their processes."""
        self._pool.shutdown(wait=False, cancel_futures=True)
