"""Reliability suite fixtures: the seed, the JSON record each scenario writes under reports/reliability/, and
R5's database (each R5 scenario module gets one of its own)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events import EventTables
from tests.helpers import own_database
from tests.reliability.outbox_kit import effects_schema

REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports" / "reliability"
DEFAULT_SEED = 20_250_301

RecordWriter = Callable[[dict[str, Any]], Path]


@pytest.fixture(scope="session")
def reliability_seed() -> int:
    """The scenario seed: AETHER_TEST_SEED, or a fixed default so that runs are reproducible."""
    return int(os.environ.get("AETHER_TEST_SEED", DEFAULT_SEED))


@pytest.fixture(scope="session")
def write_reliability_record() -> RecordWriter:
    """Write one `{"id", "seed", "cases", "violations", ...}` record to reports/reliability/<id>.json and print it."""

    def write(record: dict[str, Any]) -> Path:
        missing = {"id", "seed", "cases", "violations"} - record.keys()
        assert not missing, f"reliability record lacks {sorted(missing)}"
        REPORTS_DIR.mkdir(parents=True, exist_ok=True)
        path = REPORTS_DIR / f"{record['id']}.json"
        text = json.dumps(record, sort_keys=False)
        path.write_text(text + "\n")
        print(text)  # noqa: T201 - the record is also the test's console output
        return path

    return write


@pytest.fixture(scope="module")
def r5_database_url(database_url: str) -> Iterator[str]:
    """A migrated database for one R5 scenario module: `reconcile()` walks every account of its database."""
    with own_database(database_url, "r5") as url:
        yield url


@pytest.fixture
async def outbox_schema(engine: AsyncEngine) -> AsyncIterator[tuple[EventTables, sa.Table]]:
    """A private schema with an outbox, an inbox and an `effects` table (see tests/reliability/outbox_kit.py)."""
    async for created in effects_schema(engine):
        yield created
