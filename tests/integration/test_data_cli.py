"""Issue 14, items 1 and 3 from the command line: `aether data check` reports and quarantines, exit 1 when it found
something; `aether data refresh-aggregates` says what it refreshed; `aether data prune-inbox` keeps recent rows."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from typer.testing import CliRunner

from data.cli import app
from tests.conftest import libpq_url


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AETHER_DATABASE_URL", database_url)
    return database_url


def test_check_exits_1_and_quarantines_a_duplicate(cli_env: str) -> None:
    venue = f"cli{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(cli_env)) as conn:
        conn.execute(
            "INSERT INTO marketdata.trades (venue, instrument, trade_id, traded_at, price, quantity, side) VALUES"
            " (%(v)s, 'BTC/USD', '1', '2026-03-02T12:00:00Z', 100, 1, 'buy'),"
            " (%(v)s, 'BTC/USD', '1', '2026-03-02T12:00:05Z', 100, 1, 'buy')",
            {"v": venue},
        )
    runner = CliRunner()
    first = runner.invoke(app, ["check", "--venue", venue, "--from", "2026-03-02T00:00:00Z"])
    again = runner.invoke(app, ["check", "--venue", venue])
    assert first.exit_code == 1, first.output
    report = json.loads(first.stdout)
    assert (report["duplicates"], report["quarantined"], report["clean"]) == (1, 1, False)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["clean"] is True


def test_refresh_aggregates_names_each_view(cli_env: str) -> None:
    result = CliRunner().invoke(app, ["refresh-aggregates", "--interval", "1m", "--interval", "1d"])
    assert result.exit_code == 0, result.output
    assert "marketdata.candles_1m: full, concurrently" in result.output
    assert "marketdata.candles_1d" in result.output
    assert "candles_1h" not in result.output
    unknown = CliRunner().invoke(app, ["refresh-aggregates", "--interval", "5m"])
    assert unknown.exit_code == 2


def test_prune_inbox_forgets_only_rows_older_than_asked(cli_env: str) -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq_url(cli_env)) as conn:
        conn.execute(
            'INSERT INTO marketdata.inbox (consumer, event_id, topic, partition, "offset", processed_at) VALUES'
            " ('cli-test', %(old)s, 't', 0, 1, now() - interval '30 days'), ('cli-test', %(new)s, 't', 0, 2, now())",
            {"old": old, "new": new},
        )
    result = CliRunner().invoke(app, ["prune-inbox", "--older-than-days", "14"])
    assert result.exit_code == 0, result.output
    with psycopg.connect(libpq_url(cli_env)) as conn:
        left = {row[0] for row in conn.execute("SELECT event_id FROM marketdata.inbox WHERE consumer = 'cli-test'")}
    assert left == {new}
