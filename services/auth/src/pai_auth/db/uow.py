"""auth's unit of work: the chassis' transaction with auth's repository attached."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from pai_auth.db.repositories import Repository
from pai_auth.db.rows import EVENTS
from pai_common import uow


class UnitOfWork(uow.UnitOfWork):
    repo: Repository

    def opened(self) -> None:
        self.repo = Repository(self.session)


class UnitOfWorkFactory(uow.UnitOfWorkFactory[UnitOfWork]):
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] = lambda: None) -> None:
        super().__init__(engine, EVENTS.outbox, UnitOfWork, on_commit)
