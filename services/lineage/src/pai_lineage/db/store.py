"""lineage's store, on one connection inside the caller's transaction.

Everything goes through a plain `AsyncConnection`, so the use cases (on their unit of work's
connection) and the event handlers (on the inbox transaction's connection) write the same way, each
change in the same transaction as the events it causes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from pai.lineage.v1 import dataset_pb2, model_pb2
from pai_common.clock import utcnow
from pai_common.errors import Aborted, bad_request
from pai_common.etags import etag_of
from pai_common.events import Outbox, OutboxEvent
from pai_lineage.db.rows import (
    EVENTS,
    DatasetRow,
    DatasetVersionRow,
    EdgeRow,
    ModelRow,
    ModelVersionRow,
    NodeRow,
    RequestRow,
)

SOURCE = "pai.lineage"
M = TypeVar("M", bound=Message)

DATASETS: sa.Table = DatasetRow.__table__  # type: ignore[assignment]
DATASET_VERSIONS: sa.Table = DatasetVersionRow.__table__  # type: ignore[assignment]
MODELS: sa.Table = ModelRow.__table__  # type: ignore[assignment]
MODEL_VERSIONS: sa.Table = ModelVersionRow.__table__  # type: ignore[assignment]
REQUESTS: sa.Table = RequestRow.__table__  # type: ignore[assignment]
NODES: sa.Table = NodeRow.__table__  # type: ignore[assignment]
EDGES: sa.Table = EdgeRow.__table__  # type: ignore[assignment]


@dataclass
class Stored(Generic[M]):
    """A resource as stored, with the row version behind its etag."""

    msg: M
    version: int

    @property
    def name(self) -> str:
        return str(getattr(self.msg, "name"))  # noqa: B009 - every stored message has a name


# an id in a resource name: a workspace, dataset or model (RFC-1034) or a version (RFC-1123) label
_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Records(Generic[M]):
    """One table of resources kept whole as protobuf messages, keyed by the ids in their names
    (`workspaces/{w}/datasets/{d}` -> workspace, id; `.../versions/{v}` -> workspace, dataset, id)."""

    def __init__(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        cls: type[M],
        keys: Sequence[str],
        collections: Sequence[str],
    ) -> None:
        self.conn, self.table, self.cls, self.keys = conn, table, cls, tuple(keys)
        self.collections = tuple(collections)

    def key(self, name: str) -> dict[str, str]:
        """The key columns of `name`; a name of another shape (a request's embedded resource is not
        checked by the proto) is INVALID_ARGUMENT, not a crash."""
        parts = name.split("/")
        if tuple(parts[0::2]) != self.collections or not all(_ID.match(p) for p in parts[1::2]):
            pattern = "/".join(f"{c}/{{{k}}}" for c, k in zip(self.collections, self.keys, strict=True))
            raise bad_request("name", f"{name!r} is not a name of the form {pattern}")
        return dict(zip(self.keys, parts[1::2], strict=True))

    def _where(self, key: dict[str, str]) -> Any:
        return sa.and_(*(self.table.c[k] == v for k, v in key.items()))

    def _from_row(self, row: sa.Row[Any]) -> Stored[M]:
        msg = self.cls.FromString(row.data)
        setattr(msg, "etag", etag_of(row.version))  # noqa: B010
        return Stored(msg, row.version)

    async def get(self, name: str) -> Stored[M] | None:
        row = (await self.conn.execute(sa.select(self.table).where(self._where(self.key(name))))).first()
        return self._from_row(row) if row else None

    async def under(self, parent: dict[str, str], *, newest_first: bool = False) -> list[Stored[M]]:
        """Every resource under `parent` (a partial key), by id or newest first."""
        q = sa.select(self.table).where(self._where(parent))
        order = (
            [self.table.c.create_time.desc(), self.table.c.id.desc()] if newest_first else [self.table.c.id]
        )
        return [self._from_row(r) for r in await self.conn.execute(q.order_by(*order))]

    async def ids(self, parent: dict[str, str]) -> list[str]:
        rows = await self.conn.execute(sa.select(self.table.c.id).where(self._where(parent)))
        return [i for (i,) in rows]

    def _values(self, s: Stored[M]) -> dict[str, Any]:
        copy = self.cls()
        copy.CopyFrom(s.msg)
        setattr(copy, "etag", "")  # noqa: B010
        values: dict[str, Any] = {"data": copy.SerializeToString(deterministic=True)}
        if "state" in self.table.c:
            values["state"] = type(s.msg).State.Name(getattr(s.msg, "state"))  # type: ignore[attr-defined]  # noqa: B009
        return values

    async def insert(self, s: Stored[M], now: dt.datetime) -> None:
        await self.conn.execute(
            sa.insert(self.table).values(
                **self.key(s.name),
                uid=getattr(s.msg, "uid"),  # noqa: B009
                create_time=now,
                update_time=now,
                version=1,
                **self._values(s),
            )
        )
        s.version = 1
        setattr(s.msg, "etag", etag_of(1))  # noqa: B010

    async def save(self, s: Stored[M]) -> None:
        """Write `s` back if nobody else changed it since it was read (else ABORTED)."""
        result = await self.conn.execute(
            sa.update(self.table)
            .where(self._where(self.key(s.name)), self.table.c.version == s.version)
            .values(update_time=utcnow(), version=s.version + 1, **self._values(s))
        )
        if result.rowcount != 1:
            raise Aborted("CONCURRENT_MODIFICATION", f"{s.name} changed meanwhile; retry", resource=s.name)
        s.version += 1
        setattr(s.msg, "etag", etag_of(s.version))  # noqa: B010

    async def delete(self, name: str) -> None:
        await self.conn.execute(sa.delete(self.table).where(self._where(self.key(name))))


@dataclass(frozen=True)
class EarlierRequest:
    method: str
    target: str
    result: dict[str, Any]


@dataclass(frozen=True)
class NodeRecord:
    """A graph node as stored (`lineage_nodes`)."""

    workspace: str
    name: str
    kind: str
    display_name: str
    attributes: dict[str, Any]
    deleted: bool
    observed_time: dt.datetime | None  # the owner's update_time of the last snapshot applied
    create_time: dt.datetime
    update_time: dt.datetime


@dataclass(frozen=True)
class EdgeRecord:
    """A graph edge as stored (`lineage_edges`), a deleted one kept as a tombstone."""

    workspace: str
    id: str
    uid: str
    source: str
    source_kind: str
    target: str
    target_kind: str
    type: str
    attributes: dict[str, Any]
    event_time: dt.datetime
    origin: str
    recorder: str
    deleted: bool
    create_time: dt.datetime
    version: int


class Store:
    """All of lineage's tables on one connection, and the outbox beside them."""

    def __init__(self, conn: AsyncConnection, outbox: Outbox | None = None) -> None:
        self.conn = conn
        # a unit of work hands in its own outbox, so that its commit knows to wake the relay
        self.outbox = outbox if outbox is not None else Outbox(conn, EVENTS.outbox)
        ds, dv = ("workspaces", "datasets"), ("workspaces", "datasets", "versions")
        ms, mv = ("workspaces", "models"), ("workspaces", "models", "versions")
        self.datasets = Records(conn, DATASETS, dataset_pb2.Dataset, ("workspace", "id"), ds)
        self.dataset_versions = Records(
            conn, DATASET_VERSIONS, dataset_pb2.DatasetVersion, ("workspace", "dataset", "id"), dv
        )
        self.models = Records(conn, MODELS, model_pb2.Model, ("workspace", "id"), ms)
        self.model_versions = Records(
            conn, MODEL_VERSIONS, model_pb2.ModelVersion, ("workspace", "model", "id"), mv
        )

    async def publish(self, subject: str, message: Message) -> None:
        await self.outbox.add(OutboxEvent(subject, message, SOURCE))

    # ---- idempotency keys ------------------------------------------------------------------------

    async def earlier_request(self, workspace: str, request_id: str) -> EarlierRequest | None:
        q = sa.select(REQUESTS).where(REQUESTS.c.workspace == workspace, REQUESTS.c.request_id == request_id)
        row = (await self.conn.execute(q)).first()
        return EarlierRequest(row.method, row.target, dict(row.result)) if row else None

    async def remember_request(
        self, workspace: str, request_id: str, method: str, target: str, result: dict[str, Any]
    ) -> None:
        await self.conn.execute(
            sa.insert(REQUESTS).values(
                workspace=workspace, request_id=request_id, method=method, target=target, result=result,
                create_time=utcnow(),
            )
        )  # fmt: skip

    # ---- graph -----------------------------------------------------------------------------------

    async def node(self, workspace: str, name: str) -> NodeRecord | None:
        q = sa.select(NODES).where(NODES.c.workspace == workspace, NODES.c.name == name)
        row = (await self.conn.execute(q)).first()
        return NodeRecord(**row._asdict()) if row else None

    async def nodes(self, workspace: str, names: Sequence[str]) -> dict[str, NodeRecord]:
        out: dict[str, NodeRecord] = {}
        for chunk in _chunks(list(names)):
            q = sa.select(NODES).where(NODES.c.workspace == workspace, NODES.c.name.in_(chunk))
            out.update({r.name: NodeRecord(**r._asdict()) for r in await self.conn.execute(q)})
        return out

    async def put_node(self, workspace: str, name: str, **values: Any) -> None:
        """Insert the node, or update the given columns of the one there."""
        now = utcnow()
        existing = await self.node(workspace, name)
        if existing is None:
            row = {
                "display_name": "",
                "attributes": {},
                "deleted": False,
                "observed_time": None,
                "create_time": now,
                **values,
            }
            await self.conn.execute(
                sa.insert(NODES).values(workspace=workspace, name=name, update_time=now, **row)
            )
            return
        await self.conn.execute(
            sa.update(NODES)
            .where(NODES.c.workspace == workspace, NODES.c.name == name)
            .values(update_time=now, **values)
        )

    async def edge(self, workspace: str, edge_id: str) -> EdgeRecord | None:
        q = sa.select(EDGES).where(EDGES.c.workspace == workspace, EDGES.c.id == edge_id)
        row = (await self.conn.execute(q)).first()
        return EdgeRecord(**row._asdict()) if row else None

    async def insert_edge(self, **values: Any) -> None:
        await self.conn.execute(sa.insert(EDGES).values(**values))

    async def update_edge(self, workspace: str, edge_id: str, **values: Any) -> None:
        await self.conn.execute(
            sa.update(EDGES).where(EDGES.c.workspace == workspace, EDGES.c.id == edge_id).values(**values)
        )

    async def edges_into(self, workspace: str, names: Sequence[str], *, into: bool) -> list[EdgeRecord]:
        """The live edges of `workspace` that end at (`into`) or start from (not `into`) `names`."""
        end = EDGES.c.target if into else EDGES.c.source
        out: dict[str, EdgeRecord] = {}
        for chunk in _chunks(list(names)):
            q = sa.select(EDGES).where(
                EDGES.c.workspace == workspace, EDGES.c.deleted.is_(False), end.in_(chunk)
            )
            out.update({r.id: EdgeRecord(**r._asdict()) for r in await self.conn.execute(q)})
        return list(out.values())

    async def live_edges(self, workspace: str) -> list[EdgeRecord]:
        """The workspace's live edges, newest first."""
        q = (
            sa.select(EDGES)
            .where(EDGES.c.workspace == workspace, EDGES.c.deleted.is_(False))
            .order_by(EDGES.c.create_time.desc(), EDGES.c.id.desc())
        )
        return [EdgeRecord(**r._asdict()) for r in await self.conn.execute(q)]


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]
