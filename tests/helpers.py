"""Test helpers: poll instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url

from shared.db.migrate import upgrade

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = 15.0,
    interval_s: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Await `probe()` until it returns a truthy value or raises nothing; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = await probe()
            if result:
                return result
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout_s}s") from last_error
        await asyncio.sleep(interval_s)


@contextlib.contextmanager
def own_database(database_url: str, suffix: str) -> Iterator[str]:
    """A migrated database next to the test database, dropped afterwards.

    `reconcile()` walks every account of its database: a module that starts the OMS keeps other
    modules' accounts (and their venues' orders) out of its way.
    """
    url = make_url(database_url)
    name = f"{url.database}_{suffix}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    _drop_database(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    own = url.set(database=name).render_as_string(hide_password=False)
    upgrade(own)
    try:
        yield own
    finally:
        _drop_database(admin, name)


def _drop_database(admin: str, name: str, attempts: int = 40) -> None:
    """DROP ... WITH (FORCE), waiting out an autovacuum worker on the database: the app role may end its own
    sessions but not a worker's (InsufficientPrivilege), and the worker is done within moments."""
    for attempt in range(attempts):
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
