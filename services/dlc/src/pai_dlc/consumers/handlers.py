"""The handlers of dlc's two durable consumers: the scheduler's decisions about job workloads
(`dlc`), and the model versions lineage registers for job outputs (`dlc-lineage`).

Each decodes the event (through `mapping`), and calls one use case with the store joined to the
consumer's inbox transaction (`joined(conn)`), so the handling and the inbox entry commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pai.lineage.v1 import events_pb2 as lineage_events
from pai_common.consumer import Event
from pai_dlc.app.events import OutputModels, SchedulerFacts
from pai_dlc.app.ports import UnitOfWork
from pai_dlc.mapping import outputs
from pai_dlc.mapping.scheduler import SUBJECTS as SCHEDULER_SUBJECTS
from pai_dlc.mapping.scheduler import owned_workload

if TYPE_CHECKING:  # the consumer hands over its inbox transaction's connection; only its type is named here
    from sqlalchemy.ext.asyncio import AsyncConnection

LINEAGE_SUBJECTS = ("pai.lineage.model_version.created",)
Joined = Callable[["AsyncConnection"], UnitOfWork]

__all__ = ["LINEAGE_SUBJECTS", "SCHEDULER_SUBJECTS", "LineageHandler", "SchedulerHandler"]


class SchedulerHandler:
    def __init__(self, facts: SchedulerFacts, joined: Joined) -> None:
        self.facts, self.joined = facts, joined

    async def __call__(self, event: Event, conn: AsyncConnection) -> None:
        found = owned_workload(event.message)
        if found is None:
            return
        kind, w = found
        await self.facts.record(self.joined(conn), w.owner, kind, w.SerializeToString())


class LineageHandler:
    def __init__(self, models: OutputModels, joined: Joined) -> None:
        self.models, self.joined = models, joined

    async def __call__(self, event: Event, conn: AsyncConnection) -> None:
        if isinstance(event.message, lineage_events.ModelVersionCreated):
            await self.models.registered(self.joined(conn), outputs.registered(event.message.model_version))
