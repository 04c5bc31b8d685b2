"""The unit of work: one transaction holding the repository and the outbox."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pai_auth.db.repositories import Repository
from pai_auth.db.rows import EVENTS
from pai_common.db import conflict
from pai_common.errors import Aborted
from pai_common.events import Outbox


class UnitOfWork:
    """`async with uow:` opens a transaction; `commit()` ends it; leaving without commit rolls back."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], on_commit: Callable[[], None]) -> None:
        self._sessions = sessions
        self._on_commit = on_commit

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessions()
        await self.session.begin()
        self.repo = Repository(self.session)
        self.outbox = Outbox(self.session, EVENTS.outbox)
        return self

    async def commit(self) -> None:
        await self.session.commit()
        if self.outbox.added:
            self._on_commit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.session.in_transaction():
            await self.session.rollback()
        await self.session.close()
        if exc is not None and conflict(exc):
            raise Aborted(
                "CONCURRENT_MODIFICATION", "a concurrent request changed the same data; retry"
            ) from exc


class UnitOfWorkFactory:
    """Makes units of work on the service's engine; wakes the outbox relay after commits."""

    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] = lambda: None) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.on_commit = on_commit

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self._sessions, lambda: self.on_commit())
