"""What dlc's use cases share: options, per-resource locks, and saving a job with its history and events."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pai_common.errors import DomainError, FailedPrecondition
from pai_common.events import OutboxEvent
from pai_dlc.app.ports import UnitOfWork, UnitOfWorkFactory
from pai_dlc.domain.job import Job
from pai_dlc.domain.spec import Engine
from pai_dlc.mapping import jobs as mapping


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)
T_co = TypeVar("T_co", bound=Named, covariant=True)


@dataclass(frozen=True)
class Options:
    storage_root: pathlib.Path  # checkpoints, outputs and attempt directories live under it
    default_engine: Engine = Engine.LOCAL
    poll_interval: float = 0.25
    kill_grace: float = 10.0  # SIGTERM → SIGKILL on stop, restart and failure
    preemption_grace: float = 10.0  # asked of the scheduler: time to checkpoint after a notice


class Locks:
    """One lock per job (or sweep): the reconciler's step and the use cases never interleave on one."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def forget(self, name: str) -> None:
        self._locks.pop(name, None)


class Findable(Protocol[T_co]):
    """A repository of resources created with a caller's name and request id."""

    async def get(self, name: str) -> T_co | None: ...
    async def by_request_id(self, request_id: str) -> T_co | None: ...


class CreateOnce(Generic[T]):
    """Creates are idempotent by request id (AIP-155): a retry gets what the first try made, a request
    id used for another name is FAILED_PRECONDITION, a taken name ALREADY_EXISTS (`taken(name)`)."""

    def __init__(
        self,
        uows: UnitOfWorkFactory,
        repo: Callable[[UnitOfWork], Findable[T]],
        taken: Callable[[str], DomainError],
    ) -> None:
        self.uows, self.repo, self.taken = uows, repo, taken

    async def earlier(self, name: str, request_id: str) -> T | None:
        """What an earlier create with `request_id` made, before anything is checked or written."""
        async with self.uows() as uow:
            repo = self.repo(uow)
            if request_id and (earlier := await repo.by_request_id(request_id)) is not None:
                if earlier.name != name:
                    raise FailedPrecondition(
                        "REQUEST_ID_REUSED", f"request_id was used to create {earlier.name}"
                    )
                return earlier
            if await repo.get(name) is not None:
                raise self.taken(name)
        return None

    async def raced(self, name: str, request_id: str) -> T:
        """After the insert lost to a concurrent create: that one, if it is this request, else the
        name is taken."""
        async with self.uows() as uow:
            earlier = await self.repo(uow).by_request_id(request_id) if request_id else None
        if earlier is not None and earlier.name == name:
            return earlier
        raise self.taken(name) from None


async def persist(uow: UnitOfWork, job: Job) -> None:
    """Write the job's pending changes as history and events, then the job, in `uow`'s transaction."""
    changes = job.take_changes()
    if job.version == 0:
        await uow.jobs.insert(job)
    else:
        await uow.jobs.save(job)
    for change in changes:
        await uow.jobs.record(job, change)
        event = mapping.change_event(change, job)
        if event is not None:
            await uow.outbox.add(event)


async def save(uows: UnitOfWorkFactory, job: Job, *events: OutboxEvent) -> None:
    """`persist` the job (and add `events`) in a transaction of its own."""
    async with uows() as uow:
        await persist(uow, job)
        for event in events:
            await uow.outbox.add(event)
        await uow.commit()
