"""PostgreSQL side of the backup: libpq connection details without the password on a command line, the pg_dump /
pg_restore binaries of the stack's server version, and exact row counts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ops.stack.common import StackError
from ops.stack.postgres import PG_ROOT, pg_bin_dir
from ops.storage.errors import OpsError

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_TABLES = """
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
      AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE '_timescaledb%%'
    ORDER BY 1, 2
"""


def libpq_url(database_url: str) -> str:
    """SQLAlchemy URL -> libpq URL (password included: for psycopg in this process only)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(database_url: str) -> str:
    name = make_url(database_url).database
    if not name:
        raise OpsError("the database URL names no database")
    return name


def tool_invocation(database_url: str) -> tuple[list[str], dict[str, str]]:
    """`--dbname` arguments without the password, and an environment carrying it in PGPASSWORD (never on argv)."""
    url = make_url(database_url)
    no_password = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return ["--dbname", no_password], env


def pg_tool(name: str) -> Path:
    """`pg_dump` / `pg_restore`: next to the stack's server when there is one, else the newest client installed
    under /usr/lib/postgresql/<version>/bin (a job image carries only postgresql-client)."""
    try:
        return pg_bin_dir() / name
    except StackError:
        pass
    clients = sorted(
        PG_ROOT.glob(f"*/bin/{name}"), key=lambda path: int(re.sub(r"\D", "", path.parent.parent.name) or 0)
    )
    if not clients:
        raise OpsError(f"{name} not found under {PG_ROOT}/*/bin (install postgresql-client-15 or newer)")
    return clients[-1]


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(s), str(t)) for s, t in conn.execute(_TABLES, (list(SYSTEM_SCHEMAS),)).fetchall()]


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact row count of every user table, as `schema.table` -> count (in the connection's snapshot)."""
    counts: dict[str, int] = {}
    for schema, table in user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def schema_version(conn: psycopg.Connection[Any]) -> str | None:
    """The Alembic revision of the database (None before the first migration)."""
    exists = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(
        "SELECT string_agg(version_num, ',' ORDER BY version_num) FROM public.alembic_version"
    ).fetchone()
    return None if row is None else row[0]


def connect(database_url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection; an OpsError naming the database (never the password) when it cannot connect."""
    try:
        return psycopg.connect(libpq_url(database_url), connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        cause = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OpsError(f"cannot connect to database {database_name(database_url)!r}: {cause}") from None
