"""INSERT-only access to the audit log for the application role (a superuser step run after the migrations).

Why not in the migration: migrations run as the application role (LOGIN, CREATEDB, not superuser, no CREATEROLE).
It cannot create the owner role, and PostgreSQL lets a non-superuser give a table away only to a role it is a
member of; that membership would let it `SET ROLE` to the owner and `ALTER TABLE ... DISABLE TRIGGER`, which is the
very thing this step takes away. So a superuser (the stack bootstrap's `postgres`, a DBA in production) runs
`harden_audit_tables` once per database after `alembic upgrade`:

- NOLOGIN role `aether_audit_owner` owns schemas `audit` and `anchors`, their tables and guard functions;
- the application role keeps USAGE on both schemas, SELECT + INSERT on `audit.audit_log` and
  `anchors.audit_anchors`, SELECT + INSERT + UPDATE on `audit.chain_heads` (append creates and advances the head,
  which the guard trigger restricts to "advance to the newest entry"), and SELECT on their identity sequences
  (so `pg_dump` as the application role still works).

Afterwards the application role can no longer disable the guard triggers, drop, truncate, update or delete audit
rows or anchors; only a superuser can. Later migrations that alter these tables must then run as a superuser too.
"""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import sql

AUDIT_OWNER_ROLE = "aether_audit_owner"
GUARDED_SCHEMAS = ("audit", "anchors")
OWNED_TABLES = ("audit.audit_log", "audit.chain_heads", "anchors.audit_anchors")
OWNED_FUNCTIONS = (
    "audit.refuse_audit_log_change()",
    "audit.check_audit_log_insert()",
    "audit.check_chain_heads_change()",
    "anchors.refuse_anchor_change()",
)
APP_GRANTS = (
    ("SELECT, INSERT", "audit.audit_log"),
    ("SELECT, INSERT, UPDATE", "audit.chain_heads"),
    ("SELECT, INSERT", "anchors.audit_anchors"),
)


def _qualified(name: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def _ensure_owner_role(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (AUDIT_OWNER_ROLE,)).fetchone() is not None:
        return
    # Roles are cluster-wide: another database's hardening may create it at the same moment.
    with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(AUDIT_OWNER_ROLE)))


def harden_audit_tables(superuser_libpq_url: str, app_role: str) -> None:
    """Give the audit and anchor tables to `aether_audit_owner`; leave `app_role` SELECT/INSERT (idempotent)."""
    owner, app = sql.Identifier(AUDIT_OWNER_ROLE), sql.Identifier(app_role)
    with psycopg.connect(superuser_libpq_url, autocommit=True) as conn:
        _ensure_owner_role(conn)
        with conn.transaction():
            for schema in GUARDED_SCHEMAS:
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), owner))
            for table in OWNED_TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(_qualified(table), owner))
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(_qualified(table), app))
            for function in OWNED_FUNCTIONS:
                conn.execute(sql.SQL("ALTER FUNCTION " + function + " OWNER TO {}").format(owner))
            for schema in GUARDED_SCHEMAS:
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), app))
                conn.execute(
                    sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(sql.Identifier(schema), app)
                )
            for privileges, table in APP_GRANTS:
                conn.execute(sql.SQL("GRANT " + privileges + " ON {} TO {}").format(_qualified(table), app))
