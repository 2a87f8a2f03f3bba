"""Async SQLAlchemy engine on psycopg 3."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.config import AetherSettings


def create_engine(settings: AetherSettings, *, application_name: str | None = None) -> AsyncEngine:
    """Create the process's engine; the URL must use the psycopg driver."""
    url = make_url(settings.database_url.get_secret_value())
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=5,
        pool_recycle=1_800,
        connect_args={
            "application_name": application_name or settings.service_name,
            "connect_timeout": 5,
        },
    )


def sessionmaker_for(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def sync_url(url: str) -> str:
    """The same URL for synchronous use (Alembic, scripts): psycopg 3 serves both."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)
