"""Backfill resume: the backfill CLI, SIGKILLed at seeded random points and restarted, stores the fake's full
answer with 0 missing and 0 duplicate rows; after every kill, the stored rows are exactly those up to the
checkpoint's cursor (the rows of a page and its cursor commit together).

Kraken: 20 kills, CoinGecko: 5 (both x AETHER_SCALE). Each run is a fresh process of the CLI's typer app
forked by `backfill_worker.py` after the imports, so the 20 restarts do not each pay them. A
kill lands either after the checkpoint moved by 1-4 pages or after a random delay from the go (so some land
while connecting, during a request or inside a commit).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from data.ingest import coingecko
from tests.conftest import libpq_url
from tests.fakes.coingecko import CoinGeckoFake
from tests.fakes.kraken_public import KrakenTradesFake
from tests.fakes.loopback import serve_on_loopback
from tests.helpers import own_database

REPO_ROOT = Path(__file__).resolve().parents[2]
SCALE = int(os.environ.get("AETHER_SCALE", "1"))
DAY_ONE = datetime(2026, 10, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RUN_TIMEOUT_S = 120.0
POLL_S = 0.01


@dataclass(frozen=True)
class Scenario:
    """One source's backfill: its command, what a full run must store, and what is stored up to a cursor."""

    source: str
    argv: list[str]
    env: dict[str, str]
    expected: set[tuple[Any, ...]]
    stored_sql: str
    up_to_cursor: Callable[[str], set[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def resume_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "backfill_resume") as url:
        yield url


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.backfill_worker", "backfill", *args]


class Launcher:
    """Drives the fork server (`backfill_worker.py`): one run per `start`, each a fresh child process."""

    def __init__(self, scenario: Scenario, log: Any) -> None:
        self._server = subprocess.Popen(
            scenario.argv,
            cwd=REPO_ROOT,
            env=scenario.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._server.stdout is not None
        for line in self._server.stdout:
            self._lines.put(line.strip())

    def _next(self, prefix: str, timeout_s: float) -> list[str]:
        line = self._lines.get(timeout=timeout_s)
        assert line.startswith(prefix), f"fork server said {line!r}"
        return line.split()

    def start(self) -> int:
        """Fork one run; its pid."""
        assert self._server.stdin is not None
        self._server.stdin.write("go\n")
        self._server.stdin.flush()
        return int(self._next("started", RUN_TIMEOUT_S)[1])

    def ended(self) -> int | None:
        """The exit code of the current run once it ended, None while it runs."""
        try:
            return int(self._next("ended", 0)[2])
        except queue.Empty:
            return None

    def wait(self) -> int:
        return int(self._next("ended", RUN_TIMEOUT_S)[2])

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait(timeout=RUN_TIMEOUT_S)


def _checkpoint(conn: psycopg.Connection[Any], source: str) -> tuple[int, str | None]:
    row = conn.execute(
        "SELECT pages, cursor FROM marketdata.backfill_checkpoints WHERE source = %s", (source,)
    ).fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def _stored(conn: psycopg.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql).fetchall()]


def _kill_once(scenario: Scenario, conn: psycopg.Connection[Any], rng: random.Random, launcher: Launcher) -> str:
    """Start the backfill, SIGKILL it at a drawn point; return how the run ended."""
    pages_before, _ = _checkpoint(conn, scenario.source)
    by_pages = rng.random() < 0.5
    target_pages, delay_s = pages_before + rng.randint(1, 4), rng.uniform(0.0, 0.6)
    pid = launcher.start()
    started = time.monotonic()
    while (code := launcher.ended()) is None:
        elapsed = time.monotonic() - started
        assert elapsed < RUN_TIMEOUT_S, "the backfill made no progress"
        if (by_pages and _checkpoint(conn, scenario.source)[0] >= target_pages) or (
            not by_pages and elapsed >= delay_s
        ):
            os.kill(pid, signal.SIGKILL)
            code = launcher.wait()
            return "killed" if code == -signal.SIGKILL else "finished"
        time.sleep(POLL_S)
    assert code == 0, f"the backfill failed on its own (exit {code})"
    return "finished"


def _run_scenario(scenario: Scenario, dsn: str, kills: int, seed: int, log_path: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    outcomes: list[str] = []
    torn = 0
    with log_path.open("w") as log, psycopg.connect(dsn, autocommit=True) as conn:
        launcher = Launcher(scenario, log)
        try:
            for _ in range(kills):
                outcomes.append(_kill_once(scenario, conn, rng, launcher))
                _, cursor = _checkpoint(conn, scenario.source)
                up_to = scenario.up_to_cursor(cursor) if cursor is not None else set()
                torn += set(_stored(conn, scenario.stored_sql)) != up_to
            launcher.start()
            returncode = launcher.wait()
        finally:
            launcher.close()
        assert returncode == 0, f"the final run failed; see {log_path}"
        rows = _stored(conn, scenario.stored_sql)
    stored = set(rows)
    return {
        "kills": outcomes.count("killed"),
        "finished_before_kill": outcomes.count("finished"),
        "expected_rows": len(scenario.expected),
        "missing": len(scenario.expected - stored),
        "duplicates": len(rows) - len(stored),
        "unexpected": len(stored - scenario.expected),
        "torn_checkpoints": torn,
    }


def _kraken_scenario(fake: KrakenTradesFake, url: str, database_url: str) -> Scenario:
    tape = fake.tapes["XXBTZUSD"]
    end = tape[-1].traded_at + timedelta(seconds=1)
    expected = {
        (str(t.trade_id), t.traded_at, t.price, t.volume) for t in fake.trades_between("XXBTZUSD", DAY_ONE, end)
    }

    def up_to_cursor(cursor: str) -> set[tuple[Any, ...]]:
        reached = EPOCH + timedelta(microseconds=int(cursor) // 1_000)
        return {row for row in expected if row[1] <= reached}

    return Scenario(
        source="kraken",
        argv=_cli(
            "kraken",
            "--symbol",
            "BTC/USD",
            "--from",
            DAY_ONE.isoformat(),
            "--to",
            end.isoformat(),
            "--base-url",
            url,
            "--calls-per-s",
            "50",
        ),
        env={**os.environ, "AETHER_DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)},
        expected=expected,
        stored_sql=(
            "SELECT trade_id, traded_at, price, quantity FROM marketdata.trades "
            "WHERE venue = 'kraken' AND instrument = 'BTC/USD'"
        ),
        up_to_cursor=up_to_cursor,
    )


def _coingecko_scenario(fake: CoinGeckoFake, url: str, database_url: str, days: int) -> Scenario:
    start, end, window = DAY_ONE - timedelta(days=days), DAY_ONE, timedelta(days=1)
    windows = coingecko.plan_windows(start, end, window)
    expected = set()
    for index, (window_start, window_end) in enumerate(windows):
        for at, price, cap, volume in fake.answer("bitcoin", "usd", window_start, window_end):
            if at < window_end or index == len(windows) - 1:
                expected.add((at, price, cap, volume))

    def up_to_cursor(cursor: str) -> set[tuple[Any, ...]]:
        reached = datetime.fromtimestamp(int(cursor), UTC)
        return {row for row in expected if row[0] < reached or reached == end}

    return Scenario(
        source="coingecko",
        argv=_cli(
            "coingecko",
            "--coin",
            "bitcoin",
            "--vs",
            "usd",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            "--window-days",
            "1",
            "--base-url",
            f"{url}/api/v3",
            "--calls-per-min",
            "3000",
        ),
        env={**os.environ, "AETHER_DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)},
        expected=expected,
        stored_sql="SELECT at, price, market_cap, volume FROM marketdata.coingecko_prices WHERE coin = 'bitcoin'",
        up_to_cursor=up_to_cursor,
    )


def test_kraken_backfill_survives_sigkill_at_random_points(
    resume_url: str, reliability_seed: int, write_reliability_record: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    kills = 20 * SCALE
    fake = KrakenTradesFake(seed=reliability_seed, start=DAY_ONE, count=2_000 * SCALE, page_size=20)
    with serve_on_loopback(fake.app) as url:
        scenario = _kraken_scenario(fake, url, resume_url)
        figures = _run_scenario(scenario, libpq_url(resume_url), kills, reliability_seed, tmp_path / "kraken.log")
    write_reliability_record(
        {
            "id": "backfill_resume_kraken",
            "seed": reliability_seed,
            "cases": kills,
            "violations": figures["missing"]
            + figures["duplicates"]
            + figures["unexpected"]
            + figures["torn_checkpoints"],
            **figures,
        }
    )
    assert figures["kills"] >= kills // 2, "most runs must be killed mid-way, not finish first"
    assert (figures["missing"], figures["duplicates"], figures["unexpected"]) == (0, 0, 0)
    assert figures["torn_checkpoints"] == 0


def test_coingecko_backfill_survives_sigkill_at_random_points(
    resume_url: str, reliability_seed: int, write_reliability_record: Callable[[dict[str, Any]], Path], tmp_path: Path
) -> None:
    kills = 5 * SCALE
    fake = CoinGeckoFake(seed=reliability_seed)
    with serve_on_loopback(fake.app) as url:
        scenario = _coingecko_scenario(fake, url, resume_url, days=40 * SCALE)
        figures = _run_scenario(scenario, libpq_url(resume_url), kills, reliability_seed, tmp_path / "coingecko.log")
    write_reliability_record(
        {
            "id": "backfill_resume_coingecko",
            "seed": reliability_seed,
            "cases": kills,
            "violations": figures["missing"]
            + figures["duplicates"]
            + figures["unexpected"]
            + figures["torn_checkpoints"],
            **figures,
        }
    )
    assert (figures["missing"], figures["duplicates"], figures["unexpected"]) == (0, 0, 0)
    assert figures["torn_checkpoints"] == 0
