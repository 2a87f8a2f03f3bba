"""Sweeps on PostgreSQL: `aether backtest sweep` killed half-way and restarted runs exactly the runs not yet done;
and the repository gives back a run's spec, fills and equity curve to the last of 18 decimal places."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from aether.backtest_cli import app
from services.backtest import repository
from services.backtest.service import new_id
from services.backtest.spec import RunSettings, RunSpec, Source
from services.backtest.worker import Dispatcher
from shared.backtest.engine import BacktestRun, Sample
from shared.backtest.results import to_json
from shared.backtest.strategy import Fill
from shared.db.engine import sync_url
from shared.domain.types import Liquidity, OrderSide
from tests.kit.backtest import SYMBOL, T0, write_bar_file

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from aether.backtest_cli import app; app()", "sweep"]
GRID = ["--grid", "fast=3,4,5,6,7,8"]


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = sa.create_engine(sync_url(database_url))
    yield engine
    engine.dispose()


def _runs(engine: Engine, sweep_id: str) -> list[repository.RunRow]:
    with engine.begin() as conn:
        return repository.sweep_runs(conn, sweep_id)


def _wait_for_done(engine: Engine, sweep_id: str, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while sum(r.status == repository.DONE for r in _runs(engine, sweep_id)) < count:
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, f"fewer than {count} runs done in time"
        time.sleep(0.02)


def test_a_killed_sweep_restarts_without_redoing_finished_runs(
    tmp_path: Path, database_url: str, sync_engine: Engine
) -> None:
    write_bar_file(tmp_path / "bars.csv", 300, seed=5)
    env = {**os.environ, "AETHER_DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)}
    common = ["--data-dir", str(tmp_path), "--workers", "1"]
    first = subprocess.Popen(
        [
            *CLI,
            *common,
            "--strategy",
            "ema_cross",
            "--bars-file",
            "bars.csv",
            *GRID,
            "--param",
            "slow=20",
            "--no-reports",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its worker processes share its process group: the kill takes them all
    )
    try:
        assert first.stdout is not None
        sweep_id = first.stdout.readline().strip()
        _wait_for_done(sync_engine, sweep_id, 2, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_at = datetime.now(UTC)
    before = {r.run_id: r for r in _runs(sync_engine, sweep_id)}
    finished = {run_id: r for run_id, r in before.items() if r.status == repository.DONE}
    assert 2 <= len(finished) < len(before) == 6

    second = subprocess.run(
        [*CLI, *common, "--resume", sweep_id], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr
    assert f"{len(finished)} of 6 runs done, running {6 - len(finished)}" in second.stderr
    after = {r.run_id: r for r in _runs(sync_engine, sweep_id)}
    assert {r.status for r in after.values()} == {repository.DONE}
    for run_id, run in after.items():
        if run_id in finished:  # untouched: same attempt, same finish
            assert (run.attempts, run.finished_at) == (1, finished[run_id].finished_at)
        else:  # ran (again) after the restart
            assert run.started_at is not None
            assert run.started_at > killed_at
    assert sorted(r.spec.parameters["fast"] for r in after.values()) == ["3", "4", "5", "6", "7", "8"]
    with sync_engine.begin() as conn:
        sweep = repository.get_sweep(conn, sweep_id)
    assert sweep is not None
    assert (sweep.status, sweep.counts) == (repository.DONE, {repository.DONE: 6})


def test_the_repository_keeps_every_decimal_place(sync_engine: Engine) -> None:
    tiny, huge = Decimal("0.000000000000000001"), Decimal("12345678901234567890.123456789012345678")
    fills = (
        Fill("o1", "t1", SYMBOL, OrderSide.BUY, tiny, huge, Decimal("0.000000000000000003"), Liquidity.TAKER, T0),
        Fill("o2", "t2", SYMBOL, OrderSide.SELL, huge, tiny, Decimal("98765.432109876543210987"), Liquidity.MAKER, T0),
    )
    samples = (
        Sample(T0, Decimal("100000"), (Decimal(0),), (None,)),
        Sample(T0 + timedelta(minutes=1), Decimal("99999.999999999999999999"), (tiny,), (huge,)),
    )
    run = BacktestRun(
        "ema_cross", {"fast": Decimal(5)}, 3, "USD", (SYMBOL,), Decimal(100000), fills, (), samples, 2, 0, T0, T0
    )
    spec = RunSpec(
        "ema_cross",
        {"fast": "5"},
        Source(("trades.csv",), ("bars.csv",)),
        T0,
        T0 + timedelta(days=1),
        "none",
        3,
        RunSettings(balances={"USD": "100000.000000000000000001"}, html_report=False),
    )
    run_id, sweep_id, now = new_id(), new_id(), datetime.now(UTC)
    with sync_engine.begin() as conn:
        repository.insert_sweep(conn, sweep_id, "ema_cross", {"fast": ["5"]}, "tester", now)
        repository.insert_run(conn, run_id, spec, "tester", now, sweep_id)
    with sync_engine.begin() as conn:
        stale = repository.claim_run(conn, run_id, now)
        assert stale == repository.Claim(run_id, 1, spec)
        assert repository.claim_run(conn, run_id, now) is None  # a second worker does not get it
    with sync_engine.begin() as conn:  # a resume takes the run back from a worker thought dead, and runs it again
        assert repository.requeue_unfinished(conn, sweep_id) == [run_id]
        claim = repository.claim_run(conn, run_id, now)
    assert claim is not None
    data = to_json(run)
    with sync_engine.begin() as conn:
        assert not repository.finish_run(conn, stale, run, data, None, now)  # the old worker writes nothing
        assert not repository.fail_run(conn, stale, "late", now)
        assert repository.finish_run(conn, claim, run, data, None, now)
    with sync_engine.begin() as conn:
        stored = repository.get_run(conn, run_id)
        assert stored is not None
        assert (stored.spec, stored.status, stored.progress, stored.attempts) == (spec, repository.DONE, 1.0, 2)
        assert tuple(repository.fills_of(conn, run_id)) == fills
        assert repository.equity_of(conn, run_id) == [(s.at, s.equity) for s in samples]
        assert repository.result_of(conn, run_id) == data
        assert repository.report_of(conn, run_id) == (None,)
        sweep = repository.get_sweep(conn, sweep_id)
    assert sweep is not None
    assert (sweep.status, sweep.counts) == (repository.DONE, {repository.DONE: 1})


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--strategy", "nope", "--bars-file", "bars.csv", "--grid", "fast=3"], "unknown strategy 'nope'"),
        (["--strategy", "ema_cross", "--bars-file", "bars.csv", "--grid", "fast=3,1"], "fast=1 is outside its range"),
        (["--strategy", "ema_cross", "--bars-file", "gapped.csv", "--grid", "fast=3"], "gap from 2026-01-01T00:09:00"),
        (["--strategy", "ema_cross", "--bars-file", "bars.csv", "--grid", "fast="], "--grid fast: give at least one"),
        (["--strategy", "ema_cross", "--bars-file", "../bars.csv", "--grid", "fast=3"], "outside the data directory"),
        (["--resume", "0" * 32], f"--resume: no sweep {'0' * 32}"),
    ],
)
def test_sweep_cli_errors_name_the_problem(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, args: list[str], named: str
) -> None:
    write_bar_file(tmp_path / "bars.csv", 30, seed=2)
    write_bar_file(tmp_path / "gapped.csv", 30, seed=2, skip=10)
    monkeypatch.setenv("AETHER_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["sweep", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split())


def test_a_dead_worker_process_does_not_stop_the_dispatcher(tmp_path: Path) -> None:
    write_bar_file(tmp_path / "bars.csv", 30, seed=2)
    spec = RunSpec("ema_cross", {}, Source((), ("bars.csv",)))
    dispatcher = Dispatcher(1, "postgresql+psycopg://unused/none", tmp_path)
    try:
        assert dispatcher.check(spec).result(timeout=120) is None
        for pid in list(dispatcher._pool._processes):  # the pool's own worker processes, started by this test
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            try:
                outcome = dispatcher.check(spec).result(timeout=120)
                break
            except BrokenProcessPool:  # submitted before the pool noticed the death: the next one gets a new pool
                assert time.monotonic() < deadline
        assert outcome is None
    finally:
        dispatcher.close()
