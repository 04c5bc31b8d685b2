"""Jobs, their history and the scheduler's pending facts, on the caller's connection and transaction.

A job is kept whole as its `pai.dlc.v1.Job` message beside the columns that identify, filter and
order it, and its `Runtime` as JSON; `version` is behind the etag and guards every save.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from pai.dlc.v1 import job_pb2
from pai.scheduler.v1 import workload_pb2
from pai_common.clock import utcnow
from pai_common.errors import Aborted, AlreadyExists
from pai_dlc.db import runtime_json
from pai_dlc.db.rows import JobEventRow, JobFactRow, JobRow
from pai_dlc.domain.job import IN_PROGRESS, Change, Job, JobState
from pai_dlc.domain.runtime import FactKind, WorkloadFact
from pai_dlc.mapping import jobs as mapping
from pai_dlc.mapping.scheduler import fact_of

JOBS: sa.Table = JobRow.__table__  # type: ignore[assignment]
HISTORY: sa.Table = JobEventRow.__table__  # type: ignore[assignment]
FACTS: sa.Table = JobFactRow.__table__  # type: ignore[assignment]


def split_name(name: str) -> tuple[str, str]:
    """`workspaces/w/jobs/j` → (`w`, `j`)."""
    parts = name.split("/")
    return parts[1], parts[3]


def _job(row: sa.Row[Any]) -> Job:
    return mapping.job_from(
        job_pb2.Job.FromString(row.job),
        version=row.version,
        runtime=runtime_json.load(row.runtime),
        request_id=row.request_id,
    )


def _stored(job: Job) -> bytes:
    message = mapping.job_to(job)
    message.etag = ""
    return message.SerializeToString(deterministic=True)


def _names(rows: Any) -> list[str]:
    return [f"workspaces/{ws}/jobs/{jid}" for ws, jid in rows]


class JobRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, name: str) -> Job | None:
        ws, jid = split_name(name)
        row = (
            await self.conn.execute(sa.select(JOBS).where(JOBS.c.workspace == ws, JOBS.c.id == jid))
        ).first()
        return _job(row) if row else None

    async def by_request_id(self, request_id: str) -> Job | None:
        row = (await self.conn.execute(sa.select(JOBS).where(JOBS.c.request_id == request_id))).first()
        return _job(row) if row else None

    async def names_to_step(self) -> list[str]:
        """Every job the reconciler must look at: in progress, owing the scheduler its end, or with
        scheduler facts to apply; oldest first."""
        in_progress = [s.name for s in IN_PROGRESS]
        q = sa.select(JOBS.c.workspace, JOBS.c.id).order_by(JOBS.c.create_time)
        names = _names(await self.conn.execute(q.where(JOBS.c.state.in_(in_progress))))
        names += _names(await self.conn.execute(q.where(JOBS.c.finish_pending.is_(True))))
        names += [name for (name,) in await self.conn.execute(sa.select(FACTS.c.job).distinct())]
        return list(dict.fromkeys(names))

    async def page(
        self,
        workspace: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        states: Sequence[JobState] = (),
    ) -> list[Job]:
        q = sa.select(JOBS).where(JOBS.c.workspace == workspace)
        if states:
            q = q.where(JOBS.c.state.in_([s.name for s in states]))
        if after is not None:
            t, jid = after
            q = q.where(sa.or_(JOBS.c.create_time < t, sa.and_(JOBS.c.create_time == t, JOBS.c.id > jid)))
        q = q.order_by(JOBS.c.create_time.desc(), JOBS.c.id).limit(limit)
        return [_job(r) for r in await self.conn.execute(q)]

    async def insert(self, job: Job) -> None:
        ws, jid = split_name(job.name)
        # the row orders the list and the page tokens carry the job's create_time: one clock for both
        now = job.create_time or utcnow()
        try:
            await self.conn.execute(
                sa.insert(JOBS).values(
                    workspace=ws, id=jid, uid=job.uid, request_id=job.request_id, state=job.state.name,
                    workload=job.workload, job=_stored(job), runtime=runtime_json.dump(job.runtime),
                    finish_pending=job.runtime.finish is not None, create_time=now, update_time=now, version=1,
                )
            )  # fmt: skip
        except sa_exc.IntegrityError:  # the name or the request id is taken (maybe by a concurrent create)
            raise AlreadyExists("JOB_ALREADY_EXISTS", f"{job.name} already exists", job=job.name) from None
        job.version = 1

    async def save(self, job: Job) -> None:
        """Write `job` back if nobody else changed it since it was read (else ABORTED)."""
        ws, jid = split_name(job.name)
        job.update_time = utcnow()
        result = await self.conn.execute(
            sa.update(JOBS)
            .where(JOBS.c.workspace == ws, JOBS.c.id == jid, JOBS.c.version == job.version)
            .values(
                state=job.state.name, workload=job.workload, job=_stored(job),
                runtime=runtime_json.dump(job.runtime), finish_pending=job.runtime.finish is not None,
                update_time=job.update_time, version=job.version + 1,
            )
        )  # fmt: skip
        if result.rowcount != 1:
            raise Aborted("CONCURRENT_MODIFICATION", f"{job.name} changed meanwhile; retry")
        job.version += 1

    async def delete(self, job: Job) -> None:
        ws, jid = split_name(job.name)
        await self.conn.execute(sa.delete(JOBS).where(JOBS.c.workspace == ws, JOBS.c.id == jid))
        await self.conn.execute(sa.delete(HISTORY).where(HISTORY.c.job_uid == job.uid))
        await self.conn.execute(sa.delete(FACTS).where(FACTS.c.job == job.name))

    async def record(self, job: Job, change: Change) -> None:
        """Append to the job's history (what `ListJobEvents` shows)."""
        seq = await self.conn.scalar(
            sa.select(sa.func.coalesce(sa.func.max(HISTORY.c.seq), 0)).where(HISTORY.c.job_uid == job.uid)
        )
        n = int(seq or 0) + 1
        entry = mapping.history_to(dataclasses.replace(change, name=f"{job.name}/events/{n}"))
        await self.conn.execute(
            sa.insert(HISTORY).values(
                job_uid=job.uid, seq=n, event=entry.SerializeToString(), create_time=utcnow()
            )
        )

    async def history(self, job: Job, *, after: int, limit: int) -> list[tuple[int, Change]]:
        rows = await self.conn.execute(
            sa.select(HISTORY.c.seq, HISTORY.c.event)
            .where(HISTORY.c.job_uid == job.uid, HISTORY.c.seq > after)
            .order_by(HISTORY.c.seq)
            .limit(limit)
        )
        return [(seq, mapping.history_from(job_pb2.JobEvent.FromString(data))) for seq, data in rows]


class FactRepository:
    """Scheduler facts about jobs, appended by the event consumer and applied by the job's next step
    (the consumer never waits for a job: on SQLite that would deadlock with a step about to write)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, job: str, kind: FactKind, workload: bytes) -> None:
        await self.conn.execute(
            sa.insert(FACTS).values(job=job, kind=kind.value, workload=workload, create_time=utcnow())
        )

    async def of(self, job: str) -> list[tuple[int, WorkloadFact]]:
        rows = await self.conn.execute(
            sa.select(FACTS.c.seq, FACTS.c.kind, FACTS.c.workload)
            .where(FACTS.c.job == job)
            .order_by(FACTS.c.seq)
        )
        return [
            (seq, fact_of(FactKind(kind), workload_pb2.Workload.FromString(data))) for seq, kind, data in rows
        ]

    async def drop(self, job: str, upto: int) -> None:
        await self.conn.execute(sa.delete(FACTS).where(FACTS.c.job == job, FACTS.c.seq <= upto))
