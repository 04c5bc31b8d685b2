"""Use cases driven by other services' events: the scheduler's facts about job workloads, and the model
versions lineage registers for job outputs. Each runs in the consumer's inbox transaction (`uow`)."""

from __future__ import annotations

from collections.abc import Callable

from pai_common.clock import utcnow
from pai_dlc.app.common import persist
from pai_dlc.app.ports import UnitOfWork
from pai_dlc.domain import outputs
from pai_dlc.domain.runtime import FactKind
from pai_dlc.mapping import jobs as mapping


class SchedulerFacts:
    """Notes a scheduler fact for the job it is about; the job's next step applies it.

    Only appends: the consumer holds the inbox transaction, so waiting here for a job's lock (held by a
    step that is about to write) would deadlock on SQLite's single writer.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    async def record(self, uow: UnitOfWork, job: str, kind: FactKind, workload: bytes) -> None:
        await uow.facts.add(job, kind, workload)
        self.wake()


class OutputModels:
    async def registered(self, uow: UnitOfWork, version: outputs.RegisteredVersion) -> None:
        """Lineage registered a job's output: say so on the job, if the version is really its output.

        A concurrent write of the job aborts the transaction, and the event comes again.
        """
        if not version.source_job or not version.name:
            return
        job = await uow.jobs.get(version.source_job)
        if job is None or not outputs.takes(job, version):
            return
        job.output_model_version = version.name
        job.note(
            "MODEL_REGISTERED",
            f"the output directory is registered as model version {version.name}",
            utcnow(),
        )
        await persist(uow, job)
        await uow.outbox.add(mapping.job_updated(job))
