"""Unit of work: the only place in the platform that commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

AfterCommit = Callable[[], Awaitable[None] | None]


class UnitOfWork:
    """`async with UnitOfWork(sm) as uow:` commits on success, rolls back on error, always closes."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None
        self._after_commit: list[AfterCommit] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside `async with`")
        return self._session

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once the transaction has committed (e.g. wake the outbox relay)."""
        self._after_commit.append(callback)

    async def __aenter__(self) -> Self:
        self._session = self._sessionmaker()
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None
        if exc_type is None:
            for callback in self._after_commit:
                result = callback()
                if result is not None:
                    await result
