"""lineage's tables. Rows never leave db/: the store turns them into API resources and back.

Datasets, models and their versions are kept whole as their `pai.lineage.v1` messages (`data`,
serialized protobuf) beside the columns that identify, order and look them up. The graph is two
tables: nodes (one per entity, kept when the entity is deleted) and edges (one per relation, named by
a digest of source, type and target).
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


class DatasetRow(Base):
    __tablename__ = "datasets"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    dataset: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class ModelRow(Base):
    __tablename__ = "models"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class RequestRow(Base):
    """An idempotency key and what its first request made (`request_id` on the creating methods). Keys
    are per workspace: one workspace's keys neither collide with nor reveal another's."""

    __tablename__ = "requests"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    method: Mapped[str] = mapped_column(sa.String(64))
    # what the request asked for (parent and chosen id): the same key for another request is refused
    target: Mapped[str] = mapped_column(sa.String(600))
    result: Mapped[dict[str, Any]]
    create_time: Mapped[dt.datetime]


class NodeRow(Base):
    """An entity of the graph. pai entities belong to their own workspace, EXTERNAL ones (URIs) to the
    workspace that named them."""

    __tablename__ = "lineage_nodes"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(2048), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    display_name: Mapped[str] = mapped_column(sa.String(256), default="")
    attributes: Mapped[dict[str, Any]]
    deleted: Mapped[bool] = mapped_column(default=False)
    # the owner's update_time of the last snapshot applied, to drop stale ones
    observed_time: Mapped[dt.datetime | None]
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]


class EdgeRow(Base):
    """A relation. Deleting one keeps a tombstone (`deleted`), so an event does not derive it again."""

    __tablename__ = "lineage_edges"
    workspace: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    source: Mapped[str] = mapped_column(sa.String(2048), index=True)
    source_kind: Mapped[str] = mapped_column(sa.String(32))
    target: Mapped[str] = mapped_column(sa.String(2048), index=True)
    target_kind: Mapped[str] = mapped_column(sa.String(32))
    type: Mapped[str] = mapped_column(sa.String(16))
    attributes: Mapped[dict[str, Any]]
    event_time: Mapped[dt.datetime]
    origin: Mapped[str] = mapped_column(sa.String(8))
    recorder: Mapped[str] = mapped_column(sa.String(256))
    deleted: Mapped[bool] = mapped_column(default=False)
    create_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
