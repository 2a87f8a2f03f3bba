"""Alembic environment: one tree for every schema; migrations are written by hand."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Serialize concurrent `migrate` runs (several pods starting at once).
        connection.exec_driver_sql("SELECT pg_advisory_lock(7352001)")
        try:
            context.configure(connection=connection, version_table_schema="public")
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(7352001)")
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
