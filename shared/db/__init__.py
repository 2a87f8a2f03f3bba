"""Database kit: async engine, unit of work, declarative base, Alembic migrations."""

from shared.db.base import Base, Money
from shared.db.engine import create_engine, sessionmaker_for, sync_url
from shared.db.uow import UnitOfWork

__all__ = ["Base", "Money", "UnitOfWork", "create_engine", "sessionmaker_for", "sync_url"]
