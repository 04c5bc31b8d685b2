"""dlc's tables. Rows never leave db/: the store turns them into jobs and back.

A job is kept whole as its `pai.dlc.v1.Job` message (`job`, serialized protobuf: the API resource is
the record, so nothing is lost between them) beside the columns that identify, filter and order it,
and `runtime`: what dlc needs to find the job's replicas again after a restart (the engine handles
of the current attempt, the ports it used, the timers that run against it).
"""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pai_common.db import UtcDateTime, metadata
from pai_common.events import event_tables


class Base(DeclarativeBase):
    metadata = metadata()
    type_annotation_map = {dt.datetime: UtcDateTime(), dict[str, Any]: sa.JSON()}


EVENTS = event_tables(Base.metadata)


class JobRow(Base):
    __tablename__ = "jobs"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    workload: Mapped[str] = mapped_column(sa.String(200), index=True, default="")
    job: Mapped[bytes] = mapped_column(sa.LargeBinary)
    runtime: Mapped[dict[str, Any]]
    # the scheduler has not heard how the job ended yet (dlc retries until it has)
    finish_pending: Mapped[bool] = mapped_column(default=False, index=True)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class JobEventRow(Base):
    """The job's history for people (`ListJobEvents`): every state change with its reason."""

    __tablename__ = "job_events"
    job_uid: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]


class JobFactRow(Base):
    """A scheduler fact about a job (admitted, preempted, evicted, pending reason), waiting for the
    job's next step to act on it: the event consumer only appends here, so it never waits for a job."""

    __tablename__ = "job_facts"
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(sa.String(200), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    workload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]


class SweepRow(Base):
    """A sweep, kept whole as its `pai.dlc.v1.Sweep` message; its trials are rows of their own."""

    __tablename__ = "sweeps"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    sweep: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class TrialRow(Base):
    __tablename__ = "trials"
    sweep_uid: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    trial: Mapped[bytes] = mapped_column(sa.LargeBinary)


MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
