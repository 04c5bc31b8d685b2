"""Job use cases: create, read, list, update, stop, restart, delete, and the job's history.

Each changes the job under its lock and writes it with its history and events in one transaction;
the reconciler does the rest (asking the scheduler, starting and watching the replicas).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Collection, Sequence

from pai_common.clock import utcnow
from pai_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pai_dlc.app.common import CreateOnce, Locks, Options, save
from pai_dlc.app.gangs import Finisher, Gangs
from pai_dlc.app.ports import Datasets, UnitOfWorkFactory
from pai_dlc.domain.job import ACTIVE, TERMINAL, Change, Job, JobState
from pai_dlc.domain.runtime import Outcome
from pai_dlc.domain.spec import Engine, JobSpec, local_path, normalize, with_resolved_data
from pai_dlc.domain.validation import validate
from pai_dlc.mapping import jobs as mapping
from pai_dlc.mapping.scheduler import workload_name

S = JobState


@dataclasses.dataclass(frozen=True)
class NewJob:
    """What a caller may set on a new job; every output-only field starts empty."""

    spec: JobSpec
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


class JobUseCases:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        gangs: Gangs,
        finisher: Finisher,
        options: Options,
        locks: Locks,
        wake: Callable[[], None],
        datasets: Datasets | None = None,
    ) -> None:
        self.uows, self.gangs, self.finisher, self.options = uows, gangs, finisher, options
        self.locks, self.wake, self.datasets = locks, wake, datasets
        self.once = CreateOnce(uows, lambda uow: uow.jobs, _taken)

    @property
    def engines(self) -> Collection[Engine]:
        return self.gangs.engines.keys()

    # ---- create --------------------------------------------------------------------------------

    async def create(
        self, parent: str, job_id: str, new: NewJob, *, request_id: str = "", creator: str = "",
        validate_only: bool = False, trial: str = "",
    ) -> Job:  # fmt: skip
        name = f"{parent}/jobs/{job_id}"
        earlier = await self.once.earlier(name, request_id)
        if earlier is not None:
            return earlier
        uid = str(uuid.uuid4())
        spec = normalize(
            new.spec,
            default_engine=self.options.default_engine,
            storage_root=self.options.storage_root,
            uid=uid,
        )
        spec = await self.resolve_data(name, spec, pinned=bool(trial))
        self.check(spec, parent, "job.spec", "INVALID_JOB_SPEC")
        job = Job.create(
            name, uid, spec, utcnow(), workload=workload_name(name, uid), creator=creator,
            display_name=new.display_name, description=new.description, labels=dict(new.labels), trial=trial,
        )  # fmt: skip
        job.request_id = request_id or None
        if validate_only:
            job.take_changes()
            return job
        try:
            await save(self.uows, job)
        except AlreadyExists:  # a concurrent create of the same name or request id won
            return await self.once.raced(name, request_id)
        self.wake()
        return job

    def check(self, spec: JobSpec, parent: str, where: str, reason: str) -> None:
        """INVALID_ARGUMENT `reason` with every problem of a normalized spec."""
        problems = validate(spec, engines=self.engines, workspace=parent, where=where)
        if spec.code.uri and not any(v.field == f"{where}.code.uri" for v in problems):
            code = local_path(spec.code.uri)
            if not code.is_dir():
                problems.append(
                    FieldViolation(f"{where}.code.uri", f"{code} is not a directory on the dlc server")
                )
        if problems:
            raise InvalidArgument(reason, problems[0].description, violations=problems)

    async def resolve_data(
        self, owner: str, spec: JobSpec, where: str = "job.spec", *, pinned: bool = False
    ) -> JobSpec:
        """Resolve every dataset version (`@latest` included) through lineage to its concrete name and
        URI, so the job says exactly which data it read. `pinned`: a sweep trial, whose template the
        sweep resolved at create, so lineage is not asked again."""
        workspace = owner.split("/")[:2]
        resolved: dict[int, tuple[str, str]] = {}
        for i, ds in enumerate(spec.data_sources):
            field = f"{where}.data_sources[{i}].dataset_version"
            if not ds.dataset_version or (pinned and ds.resolved_uri):
                continue
            if ds.dataset_version.split("/")[:2] != workspace:
                message = f"{ds.dataset_version} is not in workspace {workspace[1]}"
                raise InvalidArgument(
                    "INVALID_JOB_SPEC", message, violations=[FieldViolation(field, message)]
                )
            if self.datasets is None:
                raise Unavailable(
                    "LINEAGE_UNAVAILABLE",
                    "this dlc has no lineage to resolve dataset versions with; give a uri",
                )
            resolved[i] = await self.datasets.resolve(field, ds.dataset_version)
        return with_resolved_data(spec, resolved)

    # ---- read ----------------------------------------------------------------------------------

    async def get(self, name: str) -> Job:
        async with self.uows() as uow:
            job = await uow.jobs.get(name)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", f"{name} does not exist", job=name)
        return job

    async def find(self, names: Collection[str]) -> dict[str, Job]:
        """The jobs of `names` that exist, by name, read in one transaction."""
        async with self.uows() as uow:
            found = [await uow.jobs.get(name) for name in names]
        return {job.name: job for job in found if job is not None}

    async def page(
        self, workspace: str, after: tuple[dt.datetime, str] | None, limit: int, states: Sequence[JobState]
    ) -> list[Job]:
        async with self.uows() as uow:
            return await uow.jobs.page(workspace, after=after, limit=limit, states=states)

    async def history(self, job: Job, after: int, limit: int) -> list[tuple[int, Change]]:
        async with self.uows() as uow:
            return await uow.jobs.history(job, after=after, limit=limit)

    # ---- change --------------------------------------------------------------------------------

    async def update(self, name: str, etag: str, change: Callable[[Job], None]) -> Job:
        """Change a job's descriptive fields; a given `etag` must be the current one."""
        async with self.locks(name):
            job = await self.get(name)
            job.check_etag(etag)
            change(job)
            await save(self.uows, job, mapping.job_updated(job))
        return job

    async def stop(self, name: str, etag: str, grace: float | None = None) -> Job:
        """Stop a job; `grace` is SIGTERM → SIGKILL (None: the server's default, 0: SIGKILL at once)."""
        async with self.locks(name):
            job = await self.get(name)
            job.check_etag(etag)
            if job.state in (S.SUCCEEDED, S.FAILED):
                message = f"{name} already {job.state.name.lower()}; there is nothing to stop"
                raise FailedPrecondition("ILLEGAL_STATE_TRANSITION", message, job=name)
            if job.state in (S.STOPPED, S.STOPPING):
                return job
            if grace is not None:
                job.runtime.stop_grace = grace
            now = utcnow()
            if job.state in (S.CREATING, S.QUEUED, S.PREEMPTED) and not job.runtime.handles:
                job.end(
                    S.STOPPED, "STOP_REQUESTED", "stopped by a user before it ran", now, Outcome.CANCELLED
                )
                await save(self.uows, job)
                await self.finisher.report(job)
            else:
                job.transition_to(S.STOPPING, "STOP_REQUESTED", "stopping every replica", now)
                await save(self.uows, job)
        self.wake()
        return job

    async def restart(self, name: str, etag: str) -> Job:
        """Restart a running gang from its newest checkpoint; does not count against `max_restarts`."""
        async with self.locks(name):
            job = await self.get(name)
            job.check_etag(etag)
            if job.state not in ACTIVE:
                message = f"{name} is {job.state.name}; only a STARTING or RUNNING job restarts"
                raise FailedPrecondition("ILLEGAL_STATE_TRANSITION", message, job=name)
            # the handles stay stored: the RESTARTING step kills the gang, so a crash between
            # killing and writing can never be judged a replica failure
            job.transition_to(
                S.RESTARTING, "RESTART_REQUESTED", "restarting every replica, as a user asked", utcnow()
            )
            await save(self.uows, job)
        self.wake()
        return job

    async def delete(self, name: str, etag: str, force: bool = False) -> None:
        """Delete a terminal job with its logs and history (checkpoints and outputs stay); with
        `force`, a job that is not terminal is stopped first, no process of it left."""
        async with self.locks(name):
            job = await self.get(name)
            job.check_etag(etag)
            if job.state not in TERMINAL:
                if not force:
                    message = f"{name} is {job.state.name}; stop it first (or delete with force)"
                    raise FailedPrecondition("JOB_NOT_TERMINAL", message, job=name)
                await self._kill_everything(job)
            if job.runtime.finish is not None:  # the scheduler must hear how it ended before the record goes
                await self.finisher.report(job)
                if job.runtime.finish is not None:
                    message = f"{name} ended but the scheduler has not heard yet (it is unreachable); retry"
                    raise FailedPrecondition("JOB_NOT_TERMINAL", message, job=name)
            async with self.uows() as uow:
                await uow.jobs.delete(job)
                await uow.outbox.add(mapping.job_deleted(job))
                await uow.commit()
        self.locks.forget(name)
        await asyncio.to_thread(self.gangs.remove_files, job)

    async def _kill_everything(self, job: Job) -> None:
        await self.gangs.kill(job, record=False)
        job.runtime.handles = []
        job.runtime.finish = Outcome.CANCELLED


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists("JOB_ALREADY_EXISTS", f"{name} already exists", job=name)
