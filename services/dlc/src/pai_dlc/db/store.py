"""dlc's store: jobs and their history, on one connection inside the caller's transaction.

Everything goes through a plain `AsyncConnection`, so the API, the controller and the event
consumers (whose handler gets the inbox transaction's connection) write the same way, each change
in the same transaction as the events it causes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from pai.dlc.v1 import job_pb2, sweep_pb2
from pai_common.clock import utcnow
from pai_common.errors import Aborted
from pai_common.etags import etag_of
from pai_common.events import Outbox, OutboxEvent
from pai_dlc.db.rows import EVENTS, JobEventRow, JobFactRow, JobRow, SweepRow, TrialRow

Job = job_pb2.Job
JOBS: sa.Table = JobRow.__table__  # type: ignore[assignment]
HISTORY: sa.Table = JobEventRow.__table__  # type: ignore[assignment]
FACTS: sa.Table = JobFactRow.__table__  # type: ignore[assignment]
SOURCE = "pai.dlc"


@dataclass
class StoredJob:
    """A job as stored: the API resource, dlc's runtime notes about it, and its row version."""

    job: job_pb2.Job
    runtime: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    request_id: str | None = None

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def state(self) -> int:
        return self.job.state


def stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def split_name(name: str) -> tuple[str, str]:
    """`workspaces/w/jobs/j` → (`w`, `j`)."""
    parts = name.split("/")
    return parts[1], parts[3]


def _from_row(row: sa.Row[Any]) -> StoredJob:
    job = Job.FromString(row.job)
    job.etag = etag_of(row.version)
    return StoredJob(job, dict(row.runtime or {}), row.version, row.request_id)


class JobStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.outbox = Outbox(conn, EVENTS.outbox)

    async def get(self, name: str) -> StoredJob | None:
        ws, jid = split_name(name)
        row = (
            await self.conn.execute(sa.select(JOBS).where(JOBS.c.workspace == ws, JOBS.c.id == jid))
        ).first()
        return _from_row(row) if row else None

    async def by_request_id(self, request_id: str) -> StoredJob | None:
        row = (await self.conn.execute(sa.select(JOBS).where(JOBS.c.request_id == request_id))).first()
        return _from_row(row) if row else None

    async def by_workload(self, workload: str) -> StoredJob | None:
        row = (await self.conn.execute(sa.select(JOBS).where(JOBS.c.workload == workload))).first()
        return _from_row(row) if row else None

    async def names_in_states(self, states: Sequence[int]) -> list[str]:
        names = [job_pb2.Job.State.Name(s) for s in states]  # type: ignore[arg-type]
        rows = await self.conn.execute(
            sa.select(JOBS.c.workspace, JOBS.c.id).where(JOBS.c.state.in_(names)).order_by(JOBS.c.create_time)
        )
        return [f"workspaces/{ws}/jobs/{jid}" for ws, jid in rows]

    async def names_with_pending_finish(self) -> list[str]:
        rows = await self.conn.execute(
            sa.select(JOBS.c.workspace, JOBS.c.id).where(JOBS.c.finish_pending.is_(True))
        )
        return [f"workspaces/{ws}/jobs/{jid}" for ws, jid in rows]

    async def page(
        self, workspace: str, *, after: tuple[dt.datetime, str] | None, limit: int, states: Sequence[int] = ()
    ) -> list[StoredJob]:
        q = sa.select(JOBS).where(JOBS.c.workspace == workspace)
        if states:
            q = q.where(JOBS.c.state.in_([job_pb2.Job.State.Name(s) for s in states]))  # type: ignore[arg-type]
        if after is not None:
            t, jid = after
            q = q.where(sa.or_(JOBS.c.create_time < t, sa.and_(JOBS.c.create_time == t, JOBS.c.id > jid)))
        q = q.order_by(JOBS.c.create_time.desc(), JOBS.c.id).limit(limit)
        return [_from_row(r) for r in await self.conn.execute(q)]

    async def insert(self, s: StoredJob) -> None:
        ws, jid = split_name(s.name)
        # the row orders the list and the page tokens carry the job's create_time: one clock for both
        now = s.job.create_time.ToDatetime(dt.UTC) if s.job.HasField("create_time") else utcnow()
        await self.conn.execute(
            sa.insert(JOBS).values(
                workspace=ws,
                id=jid,
                uid=s.job.uid,
                request_id=s.request_id,
                state=Job.State.Name(s.job.state),
                workload=s.job.workload,
                job=_clean(s.job),
                runtime=s.runtime,
                finish_pending="finish" in s.runtime,
                create_time=now,
                update_time=now,
                version=1,
            )
        )
        s.version = 1
        s.job.etag = etag_of(1)

    async def save(self, s: StoredJob) -> None:
        """Write `s` back if nobody else changed it since it was read (else ABORTED)."""
        ws, jid = split_name(s.name)
        s.job.update_time.CopyFrom(stamp(utcnow()))
        result = await self.conn.execute(
            sa.update(JOBS)
            .where(JOBS.c.workspace == ws, JOBS.c.id == jid, JOBS.c.version == s.version)
            .values(
                state=Job.State.Name(s.job.state),
                workload=s.job.workload,
                job=_clean(s.job),
                runtime=s.runtime,
                finish_pending="finish" in s.runtime,
                update_time=utcnow(),
                version=s.version + 1,
            )
        )
        if result.rowcount != 1:
            raise Aborted("CONCURRENT_MODIFICATION", f"{s.name} changed meanwhile; retry")
        s.version += 1
        s.job.etag = etag_of(s.version)

    async def delete(self, s: StoredJob) -> None:
        ws, jid = split_name(s.name)
        await self.conn.execute(sa.delete(JOBS).where(JOBS.c.workspace == ws, JOBS.c.id == jid))
        await self.conn.execute(sa.delete(HISTORY).where(HISTORY.c.job_uid == s.job.uid))
        await self.conn.execute(sa.delete(FACTS).where(FACTS.c.job == s.name))

    async def add_fact(self, job: str, kind: str, workload: bytes) -> None:
        await self.conn.execute(
            sa.insert(FACTS).values(job=job, kind=kind, workload=workload, create_time=utcnow())
        )

    async def facts(self, job: str) -> list[tuple[int, str, bytes]]:
        rows = await self.conn.execute(
            sa.select(FACTS.c.seq, FACTS.c.kind, FACTS.c.workload)
            .where(FACTS.c.job == job)
            .order_by(FACTS.c.seq)
        )
        return [(seq, kind, data) for seq, kind, data in rows]

    async def drop_facts(self, job: str, upto: int) -> None:
        await self.conn.execute(sa.delete(FACTS).where(FACTS.c.job == job, FACTS.c.seq <= upto))

    async def names_with_facts(self) -> list[str]:
        return [name for (name,) in await self.conn.execute(sa.select(FACTS.c.job).distinct())]

    async def record(self, s: StoredJob, event: job_pb2.JobEvent) -> None:
        """Append to the job's history (what `ListJobEvents` shows)."""
        seq = await self.conn.scalar(
            sa.select(sa.func.coalesce(sa.func.max(HISTORY.c.seq), 0)).where(HISTORY.c.job_uid == s.job.uid)
        )
        n = int(seq or 0) + 1
        event.name = f"{s.name}/events/{n}"
        event.etag = etag_of(1)
        await self.conn.execute(
            sa.insert(HISTORY).values(
                job_uid=s.job.uid, seq=n, event=event.SerializeToString(), create_time=utcnow()
            )
        )

    async def history(self, s: StoredJob, *, after: int, limit: int) -> list[tuple[int, job_pb2.JobEvent]]:
        rows = await self.conn.execute(
            sa.select(HISTORY.c.seq, HISTORY.c.event)
            .where(HISTORY.c.job_uid == s.job.uid, HISTORY.c.seq > after)
            .order_by(HISTORY.c.seq)
            .limit(limit)
        )
        return [(seq, job_pb2.JobEvent.FromString(data)) for seq, data in rows]

    async def publish(self, subject: str, message: Any) -> None:
        await self.outbox.add(OutboxEvent(subject, message, SOURCE))


def _clean(job: job_pb2.Job) -> bytes:
    copy = job_pb2.Job()
    copy.CopyFrom(job)
    copy.etag = ""
    return copy.SerializeToString(deterministic=True)


SWEEPS: sa.Table = SweepRow.__table__  # type: ignore[assignment]
TRIALS: sa.Table = TrialRow.__table__  # type: ignore[assignment]


@dataclass
class StoredSweep:
    sweep: sweep_pb2.Sweep
    version: int = 0
    request_id: str | None = None

    @property
    def name(self) -> str:
        return self.sweep.name


def _sweep_from_row(row: sa.Row[Any]) -> StoredSweep:
    sweep = sweep_pb2.Sweep.FromString(row.sweep)
    sweep.etag = etag_of(row.version)
    return StoredSweep(sweep, row.version, row.request_id)


class SweepStore:
    """Sweeps and their trials, on the caller's connection (events through the same outbox)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.outbox = Outbox(conn, EVENTS.outbox)

    async def get(self, name: str) -> StoredSweep | None:
        ws, sid = name.split("/")[1], name.split("/")[3]
        q = sa.select(SWEEPS).where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid)
        row = (await self.conn.execute(q)).first()
        return _sweep_from_row(row) if row else None

    async def by_request_id(self, request_id: str) -> StoredSweep | None:
        row = (await self.conn.execute(sa.select(SWEEPS).where(SWEEPS.c.request_id == request_id))).first()
        return _sweep_from_row(row) if row else None

    async def names_in_states(self, states: Sequence[str]) -> list[str]:
        rows = await self.conn.execute(
            sa.select(SWEEPS.c.workspace, SWEEPS.c.id)
            .where(SWEEPS.c.state.in_(states))
            .order_by(SWEEPS.c.create_time)
        )
        return [f"workspaces/{ws}/sweeps/{sid}" for ws, sid in rows]

    async def page(
        self, workspace: str, *, after: str | None, limit: int, states: Sequence[str] = ()
    ) -> list[StoredSweep]:
        q = sa.select(SWEEPS).where(SWEEPS.c.workspace == workspace)
        if states:
            q = q.where(SWEEPS.c.state.in_(states))
        if after is not None:
            q = q.where(SWEEPS.c.id > after)
        rows = await self.conn.execute(q.order_by(SWEEPS.c.id).limit(limit))
        return [_sweep_from_row(r) for r in rows]

    async def insert(self, s: StoredSweep) -> None:
        ws, sid = s.name.split("/")[1], s.name.split("/")[3]
        now = utcnow()
        await self.conn.execute(
            sa.insert(SWEEPS).values(
                workspace=ws, id=sid, uid=s.sweep.uid, request_id=s.request_id,
                state=sweep_pb2.Sweep.State.Name(s.sweep.state), sweep=_clean_sweep(s.sweep),
                create_time=now, update_time=now, version=1,
            )
        )  # fmt: skip
        s.version = 1
        s.sweep.etag = etag_of(1)

    async def save(self, s: StoredSweep) -> None:
        ws, sid = s.name.split("/")[1], s.name.split("/")[3]
        s.sweep.update_time.CopyFrom(stamp(utcnow()))
        result = await self.conn.execute(
            sa.update(SWEEPS)
            .where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid, SWEEPS.c.version == s.version)
            .values(
                state=sweep_pb2.Sweep.State.Name(s.sweep.state),
                sweep=_clean_sweep(s.sweep),
                update_time=utcnow(),
                version=s.version + 1,
            )
        )
        if result.rowcount != 1:
            raise Aborted("CONCURRENT_MODIFICATION", f"{s.name} changed meanwhile; retry")
        s.version += 1
        s.sweep.etag = etag_of(s.version)

    async def delete(self, s: StoredSweep) -> None:
        ws, sid = s.name.split("/")[1], s.name.split("/")[3]
        await self.conn.execute(sa.delete(SWEEPS).where(SWEEPS.c.workspace == ws, SWEEPS.c.id == sid))
        await self.conn.execute(sa.delete(TRIALS).where(TRIALS.c.sweep_uid == s.sweep.uid))

    async def trials(self, s: StoredSweep) -> list[sweep_pb2.Trial]:
        rows = await self.conn.execute(
            sa.select(TRIALS.c.trial).where(TRIALS.c.sweep_uid == s.sweep.uid).order_by(TRIALS.c.seq)
        )
        return [sweep_pb2.Trial.FromString(data) for (data,) in rows]

    async def put_trial(self, s: StoredSweep, seq: int, trial: sweep_pb2.Trial, *, new: bool) -> None:
        data = trial.SerializeToString(deterministic=True)
        if new:
            await self.conn.execute(sa.insert(TRIALS).values(sweep_uid=s.sweep.uid, seq=seq, trial=data))
        else:
            await self.conn.execute(
                sa.update(TRIALS)
                .where(TRIALS.c.sweep_uid == s.sweep.uid, TRIALS.c.seq == seq)
                .values(trial=data)
            )

    async def publish(self, subject: str, message: Any) -> None:
        await self.outbox.add(OutboxEvent(subject, message, SOURCE))


def _clean_sweep(sweep: sweep_pb2.Sweep) -> bytes:
    copy = sweep_pb2.Sweep()
    copy.CopyFrom(sweep)
    copy.etag = ""
    return copy.SerializeToString(deterministic=True)
