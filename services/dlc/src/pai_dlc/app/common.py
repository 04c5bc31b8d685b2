"""What dlc's use cases share: options, per-resource locks, and saving a job with its history and events."""

from __future__ import annotations

import asyncio
import pathlib
from dataclasses import dataclass

from pai_common.events import OutboxEvent
from pai_dlc.app.ports import UnitOfWork, UnitOfWorkFactory
from pai_dlc.domain.job import Job
from pai_dlc.domain.spec import Engine
from pai_dlc.mapping import jobs as mapping


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
