"""lineage's unit of work: the chassis' transaction with lineage's store on its connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from pai_common import uow
from pai_lineage.db.rows import EVENTS
from pai_lineage.db.store import Store


class UnitOfWork(uow.UnitOfWork):
    """One write: `store` on the transaction's connection, its events in the same outbox."""

    store: Store

    def opened(self) -> None:
        self.store = Store(self.connection, self.outbox)


class UnitOfWorkFactory(uow.UnitOfWorkFactory[UnitOfWork]):
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] = lambda: None) -> None:
        super().__init__(engine, EVENTS.outbox, UnitOfWork, on_commit)
        self._engine = engine

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[Store]:
        """A store for reads only: whatever it is asked to do is never committed."""
        async with self._engine.connect() as conn:
            yield Store(conn)
