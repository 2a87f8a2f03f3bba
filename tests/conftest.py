"""Fixtures shared by every test: the real local stack (PostgreSQL, Redis, Kafka) and a fresh test database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import AetherSettings, Environment
from shared.db import create_engine
from shared.db.migrate import upgrade

# The paper venue fed through Kafka, for every integration and end-to-end test.
from tests.kit.paper import paper_market  # noqa: F401

# S3 on loopback (moto's server) for the ops jobs' tests.
from tests.kit.s3 import s3_server  # noqa: F401

# The reliability record fixtures serve tests/security (S-tests) too.
from tests.reliability.conftest import reliability_seed, write_reliability_record  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_ENV_FILE = Path(os.environ.get("AETHER_HOME", REPO_ROOT / ".aether")) / "stack.env"
# One database per pytest process, so concurrent runs (developers, CI) never drop each other's.
TEST_DATABASE = f"aether_test_{os.getpid()}"


def _load_stack_env() -> None:
    """Fill AETHER_* connection variables from the stack's env file when the caller did not set them."""
    if not STACK_ENV_FILE.exists():
        return
    for line in STACK_ENV_FILE.read_text().splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line and not line.startswith("#"):
            name, value = line.split("=", 1)
            os.environ.setdefault(name, value.strip("'\""))


_load_stack_env()


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: start the stack first (`aether stack up`, or run `make test`)", returncode=3)
    return value


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A freshly created and migrated test database; the developer's `aether` database is left alone."""
    admin_url = _require("AETHER_DATABASE_URL")
    test_url = make_url(admin_url).set(database=TEST_DATABASE).render_as_string(hide_password=False)
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    upgrade(test_url)
    yield test_url
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="session")
def superuser_url(database_url: str) -> str:
    """Superuser connection to the test database (for tampering tests that must bypass the app role)."""
    url = make_url(_require("AETHER_DATABASE_SUPERUSER_URL")).set(database=TEST_DATABASE)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require("AETHER_REDIS_URL")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _require("AETHER_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, kafka_bootstrap: str) -> AetherSettings:
    return AetherSettings(
        env=Environment.TEST,
        database_url=database_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
    )


@pytest.fixture
async def engine(settings: AetherSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, application_name="aether-tests")
    yield engine
    await engine.dispose()


@pytest.fixture
def unique_topic() -> str:
    """A topic name no other test uses, so tests never see each other's messages."""
    return f"test.{uuid.uuid4().hex[:12]}.v1"


def libpq_url(url: str) -> str:
    """SQLAlchemy URL -> plain libpq URL for psycopg.connect."""
    return _libpq(url)
