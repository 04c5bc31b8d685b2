"""The scheduler's tables. Rows never leave db/: the store turns them into domain records.

Nested parts (GPU lists, limits, pod sets, placements) are JSON columns: the scheduler keeps its
whole state in memory and reads the tables only at start, so only what identifies and orders a row
is a column of its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pai_common.db import UtcDateTime, metadata
from pai_common.events import event_tables


class Base(DeclarativeBase):
    metadata = metadata()
    type_annotation_map = {dt.datetime: UtcDateTime(), dict[str, Any]: sa.JSON()}


EVENTS = event_tables(Base.metadata)


class _Stored:
    """The columns every stored record has besides its key (columns of a mixin are copied)."""

    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    data: Mapped[dict[str, Any]]
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class ResourceGroupRow(_Stored, Base):
    __tablename__ = "resource_groups"
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)


class NodeRow(_Stored, Base):
    __tablename__ = "nodes"
    resource_group: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)


class QuotaRow(_Stored, Base):
    __tablename__ = "quotas"
    resource_group: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)


class WorkloadRow(_Stored, Base):
    __tablename__ = "workloads"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
