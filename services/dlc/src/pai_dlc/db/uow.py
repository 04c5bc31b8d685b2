"""dlc's unit of work: the chassis transaction with dlc's repositories on its connection; and the same
repositories on a connection someone else's transaction holds (an event consumer's inbox transaction)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pai_common import uow
from pai_common.events import Outbox
from pai_dlc.db.jobs import FactRepository, JobRepository
from pai_dlc.db.rows import EVENTS
from pai_dlc.db.sweeps import SweepRepository


class UnitOfWork(uow.UnitOfWork):
    jobs: JobRepository
    facts: FactRepository
    sweeps: SweepRepository

    def opened(self) -> None:
        self.jobs = JobRepository(self.connection)
        self.facts = FactRepository(self.connection)
        self.sweeps = SweepRepository(self.connection)


class UnitOfWorkFactory(uow.UnitOfWorkFactory[UnitOfWork]):
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] = lambda: None) -> None:
        super().__init__(engine, EVENTS.outbox, UnitOfWork, on_commit)


class Joined:
    """The repositories on a connection whose transaction its owner commits (`commit` does nothing)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.jobs = JobRepository(conn)
        self.facts = FactRepository(conn)
        self.sweeps = SweepRepository(conn)
        self.outbox = Outbox(conn, EVENTS.outbox)

    async def commit(self) -> None:
        """The owner of the transaction commits it."""

    async def __aenter__(self) -> Joined:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
