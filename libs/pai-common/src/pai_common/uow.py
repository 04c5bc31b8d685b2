"""The unit of work every service uses: one transaction holding its repositories and the outbox.

Repositories work on the ORM session or, for Core statements, on the session's connection: both
are the same transaction.

A service subclasses `UnitOfWork` to attach its repositories in `opened()`, and builds them with
`UnitOfWorkFactory(engine, outbox_table, make=TheirUnitOfWork)`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pai_common.db import conflict
from pai_common.errors import Aborted
from pai_common.events import Outbox

U = TypeVar("U", bound="UnitOfWork")


class UnitOfWork:
    """`async with uow:` opens a transaction; `commit()` ends it; leaving without commit rolls back."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: sa.Table, on_commit: Callable[[], None]
    ) -> None:
        self._sessions = sessions
        self._outbox_table = outbox
        self._on_commit = on_commit

    def opened(self) -> None:
        """Attach the service's repositories to `self.session` (ORM) or `self.connection` (Core),
        both in the one transaction (called on entering)."""

    async def __aenter__(self: U) -> U:
        self.session = self._sessions()
        await self.session.begin()
        self.connection = await self.session.connection()
        self.outbox = Outbox(self.session, self._outbox_table)
        self.opened()
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


class UnitOfWorkFactory(Generic[U]):
    """Makes units of work on the service's engine; wakes the outbox relay after commits."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: sa.Table,
        make: Callable[[async_sessionmaker[AsyncSession], sa.Table, Callable[[], None]], U],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._outbox = outbox
        self._make = make
        self.on_commit = on_commit

    def __call__(self) -> U:
        return self._make(self._sessions, self._outbox, lambda: self.on_commit())
