"""Writing the graph: nodes for entities and edges between them, each new edge with its event.

Used by the registrations (a version with a `source_job` records the PRODUCED edge itself), by the
event handlers, and by RecordLineage. Recording an edge that exists changes nothing and publishes
nothing; a deleted edge is not derived again from an event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from pai.lineage.v1 import events_pb2, lineage_pb2
from pai_common.clock import utcnow
from pai_common.etags import etag_of
from pai_common.wire import ts
from pai_lineage.db.store import EdgeRecord, Store
from pai_lineage.domain import graph

Edge = lineage_pb2.LineageEdge
Node = lineage_pb2.LineageNode
EVENT = "EVENT"
API = "API"


def default_display_name(name: str, kind: str) -> str:
    """`qa:1` for versions, the id for jobs and other pai entities, the URI itself for EXTERNAL."""
    parts = name.split("/")
    if kind in (graph.DATASET_VERSION, graph.MODEL_VERSION) and len(parts) == 6:
        return f"{parts[3]}:{parts[5]}"
    if kind == graph.EXTERNAL or graph.workspace_of(name) is None:
        return name
    return parts[-1]


def node_workspace(name: str, context: str) -> str:
    """The workspace id a node is kept under: its own for pai entities, `context`'s for URIs."""
    return (graph.workspace_of(name) or context).split("/")[1]


async def put_node(
    store: Store,
    name: str,
    kind: str,
    *,
    context: str = "",
    display_name: str | None = None,
    attributes: Mapping[str, str] | None = None,
    deleted: bool | None = None,
    observed: dt.datetime | None = None,
) -> None:
    """Create or refresh the node of an entity; only what is given changes."""
    values: dict[str, Any] = {"kind": kind}
    if display_name is not None:
        values["display_name"] = display_name[:256]
    if attributes is not None:
        values["attributes"] = dict(attributes)
    if deleted is not None:
        values["deleted"] = deleted
    if observed is not None:
        values["observed_time"] = observed
    ws = node_workspace(name, context)
    if await store.node(ws, name) is None:
        values.setdefault("display_name", default_display_name(name, kind))
    await store.put_node(ws, name, **values)


async def ensure_node(store: Store, name: str, kind: str, context: str) -> None:
    """A node for an edge's end that lineage has not heard of yet (a job whose events are late)."""
    if await store.node(node_workspace(name, context), name) is None:
        await put_node(store, name, kind, context=context)


async def mark_deleted(store: Store, name: str, kind: str) -> None:
    await put_node(store, name, kind, deleted=True)


def edge_message(row: EdgeRecord) -> lineage_pb2.LineageEdge:
    return Edge(
        name=f"workspaces/{row.workspace}/lineageEdges/{row.id}",
        uid=row.uid,
        source=row.source,
        source_kind=Node.Kind.Value(row.source_kind),
        target=row.target,
        target_kind=Node.Kind.Value(row.target_kind),
        type=Edge.Type.Value(row.type),
        attributes=dict(row.attributes or {}),
        event_time=ts(row.event_time),
        origin=Edge.Origin.Value(row.origin),
        recorder=row.recorder,
        create_time=ts(row.create_time),
        etag=etag_of(row.version),
    )


async def record_edge(
    store: Store,
    workspace: str,
    source: str,
    source_kind: str,
    type_: str,
    target: str,
    target_kind: str,
    *,
    origin: str,
    recorder: str,
    attributes: Mapping[str, str] | None = None,
    event_time: dt.datetime | None = None,
) -> tuple[lineage_pb2.LineageEdge, bool]:
    """The edge (source, type, target) in `workspace` (`workspaces/{w}`), and whether it is new.

    An existing edge is returned unchanged. A deleted one stays deleted for events ("an edge derived
    from an event is not derived again") and is restored by an explicit RecordLineage.
    """
    ws = workspace.split("/")[1]
    eid = graph.edge_id(source, type_, target)
    existing = await store.edge(ws, eid)
    if existing is not None and (not existing.deleted or origin == EVENT):
        return edge_message(existing), False
    await ensure_node(store, source, source_kind, workspace)
    await ensure_node(store, target, target_kind, workspace)
    now = utcnow()
    values = {
        "uid": str(uuid.uuid4()),
        "source": source,
        "source_kind": source_kind,
        "target": target,
        "target_kind": target_kind,
        "type": type_,
        "attributes": dict(attributes or {}),
        "event_time": event_time or now,
        "origin": origin,
        "recorder": recorder[:256],
        "deleted": False,
        "create_time": now,
    }
    if existing is None:
        await store.insert_edge(workspace=ws, id=eid, version=1, **values)
    else:
        await store.update_edge(ws, eid, version=existing.version + 1, **values)
    row = await store.edge(ws, eid)
    assert row is not None
    edge = edge_message(row)
    await store.publish(
        "pai.lineage.lineage_edge.recorded", events_pb2.LineageEdgeRecorded(lineage_edge=edge)
    )
    return edge, True
