"""What the benchmarks share: the local stack's addresses and a fresh, migrated database of their own."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from ops.stack.common import stack_paths
from shared.db.migrate import upgrade


def stack_env() -> dict[str, str]:
    """The variables `ops.stack_cli env` exports (`stack.env` under AETHER_HOME, default `.aether/`)."""
    values = {}
    for line in stack_paths().env_file.read_text().splitlines():
        name, value = line.removeprefix("export ").split("=", 1)
        values[name] = value
    return values


def fresh_database(admin_url: str, name: str) -> str:
    """Drop and create database `name` beside `admin_url`'s, migrate it, and return its URL."""
    libpq = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url
