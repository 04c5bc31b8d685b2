"""The lineage graph's use cases: walk it, record and delete edges by hand."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from pai.lineage.v1 import events_pb2, lineage_pb2
from pai_common.errors import NotFound, bad_request
from pai_common.etags import check_etag, etag_of
from pai_common.wire import ts
from pai_lineage.app import aliases, recording
from pai_lineage.app.datasets import Datasets
from pai_lineage.app.idempotency import earlier_result, remember
from pai_lineage.db.store import EdgeRecord, NodeRecord, Store
from pai_lineage.db.uow import UnitOfWorkFactory
from pai_lineage.domain import graph

Node = lineage_pb2.LineageNode
Edge = lineage_pb2.LineageEdge
DEFAULT_DEPTH = 5
DEFAULT_NODES = 500
_DATASET = re.compile(r"^workspaces/[^/]+/datasets/[^/]+$")
_MODEL = re.compile(r"^workspaces/[^/]+/models/[^/]+$")


@dataclass
class Query:
    """A walk's answer: the root, nodes nearest first (with distances), the edges among them."""

    root: lineage_pb2.LineageNode
    nodes: list[lineage_pb2.LineageNode]
    edges: list[lineage_pb2.LineageEdge]
    truncated: bool
    # node name -> when lineage last saw it (for OpenLineage event times)
    seen: dict[str, dt.datetime]


_DIRECTIONS: dict[int, str] = {lineage_pb2.UPSTREAM: graph.UPSTREAM, lineage_pb2.DOWNSTREAM: graph.DOWNSTREAM}


def direction_name(value: int) -> str:
    """The walk's direction; unspecified is BOTH, as lineage.proto says."""
    return _DIRECTIONS.get(value, graph.BOTH)


def node_message(row: NodeRecord, distance: int) -> lineage_pb2.LineageNode:
    return Node(
        name=row.name,
        kind=Node.Kind.Value(row.kind),
        display_name=row.display_name,
        attributes={str(k): str(v) for k, v in (row.attributes or {}).items()},
        deleted=row.deleted,
        distance=distance,
        create_time=ts(row.create_time),
    )


class Lineage:
    def __init__(self, uow: UnitOfWorkFactory, datasets: Datasets) -> None:
        self._uow = uow
        self.datasets = datasets

    async def _start(self, s: Store, parent: str, entity: str) -> str:
        """The node a query starts at: aliases and `@latest` resolved, a dataset or model standing for
        its latest version."""
        ws = graph.workspace_of(entity)
        if ws is not None and ws != parent:
            raise bad_request("entity", f"{entity} is not in {parent}", "WORKSPACE_MISMATCH", entity=entity)
        name = entity
        if _DATASET.match(entity) or _MODEL.match(entity):
            name = f"{entity}/versions/@latest"
        try:
            if "/datasets/" in name and name.endswith("/versions/@latest"):
                name = (await self.datasets.version_in(s, name)).name
            elif "/models/" in name and "/versions/@" in name:
                name = await aliases.resolve(s, name)
        except NotFound as error:
            raise NotFound(
                "LINEAGE_NODE_NOT_FOUND", f"lineage knows no entity {entity}: {error.message}", entity=entity
            ) from error
        if await s.node(recording.node_workspace(name, parent), name) is None:
            raise NotFound("LINEAGE_NODE_NOT_FOUND", f"lineage knows no entity {entity}", entity=entity)
        return name

    async def query(self, parent: str, entity: str, direction: int, max_depth: int, max_nodes: int) -> Query:
        depth = max_depth or DEFAULT_DEPTH
        limit = max_nodes or DEFAULT_NODES
        ws = parent.split("/")[1]
        async with self._uow.reading() as s:
            start = await self._start(s, parent, entity)
            # read the edges the walk follows (only its own direction: a dataset's thousand other
            # consumers are not a model's upstream), one hop further than it goes, so that it can
            # tell whether it was cut short
            way = direction_name(direction)
            rows: dict[str, EdgeRecord] = {}
            cut = False  # far more nodes than the limit: the walk is cut short whatever else is there
            for into in {graph.UPSTREAM: [True], graph.DOWNSTREAM: [False]}.get(way, [True, False]):
                frontier, seen = {start}, {start}
                for _ in range(depth + 1):
                    if not frontier:
                        break
                    if len(seen) > limit * 4 + 100:
                        cut = True
                        break
                    found_edges = await s.edges_into(ws, sorted(frontier), into=into)
                    frontier = set()
                    for r in found_edges:
                        rows[r.id] = r
                        end = r.source if into else r.target
                        if end not in seen:
                            seen.add(end)
                            frontier.add(end)
            walked = graph.walk(
                start,
                [graph.Edge(r.id, r.source, r.target, r.type) for r in rows.values()],
                way,
                depth,
                limit,
            )
            names = list(walked.distances)
            found: dict[str, NodeRecord] = {}
            by_ws: dict[str, list[str]] = {}
            for n in names:
                by_ws.setdefault(recording.node_workspace(n, parent), []).append(n)
            for w, group in by_ws.items():
                found.update(await s.nodes(w, group))
        nodes = []
        kinds = {r.source: r.source_kind for r in rows.values()} | {
            r.target: r.target_kind for r in rows.values()
        }
        seen_at: dict[str, dt.datetime] = {}
        for n, d in walked.distances.items():
            row = found.get(n)
            if row is None:  # an edge's end without a node (should not happen): show what the edge says
                nodes.append(
                    Node(name=n, kind=Node.Kind.Value(kinds.get(n, "EXTERNAL")), display_name=n, distance=d)
                )
                continue
            nodes.append(node_message(row, d))
            seen_at[n] = row.observed_time or row.update_time
        edges = [recording.edge_message(rows[e.id]) for e in walked.edges]
        return Query(nodes[0], nodes, edges, walked.truncated or cut, seen_at)

    # ---- edges -----------------------------------------------------------------------------------

    async def record(
        self,
        parent: str,
        edges: list[lineage_pb2.LineageEdge],
        nodes: list[lineage_pb2.LineageNode],
        request_id: str,
        recorder: str,
    ) -> list[lineage_pb2.LineageEdge]:
        check_record(parent, edges, nodes)
        ids = ",".join(graph.edge_id(e.source, Edge.Type.Name(e.type), e.target) for e in edges)
        # what the request asked for, kept short whatever the number of edges (up to 100)
        target = f"{parent}:{hashlib.sha256(ids.encode()).hexdigest()}"
        ws = parent.split("/")[1]
        async with self._uow() as uow:
            s = uow.store
            earlier = await earlier_result(s, request_id, "RecordLineage", target)
            if earlier:
                rows = [await s.edge(ws, eid) for eid in earlier.split(",")]
                return [recording.edge_message(r) for r in rows if r is not None]
            for n in nodes:
                await recording.put_node(
                    s, n.name, graph.EXTERNAL, context=parent, display_name=n.display_name or n.name,
                    attributes=dict(n.attributes),
                )  # fmt: skip
            out = await self._record_edges(s, parent, edges, recorder)
            await remember(
                s, request_id, "RecordLineage", target,
                ",".join(e.name.rsplit("/", 1)[1] for e in out),
            )  # fmt: skip
            await uow.commit()
        return out

    async def _record_edges(
        self, s: Store, parent: str, edges: list[lineage_pb2.LineageEdge], recorder: str
    ) -> list[lineage_pb2.LineageEdge]:
        """Each edge in turn, none closing a cycle with the workspace's live edges or those before it."""
        ws = parent.split("/")[1]
        known = [graph.Edge(r.id, r.source, r.target, r.type) for r in await s.live_edges(ws)]
        out = []
        for e in edges:
            type_ = Edge.Type.Name(e.type)
            eid = graph.edge_id(e.source, type_, e.target)
            existing = await s.edge(ws, eid)
            if existing is None or existing.deleted:
                graph.check_no_cycle(known, e.source, e.target)
            when = e.event_time.ToDatetime(dt.UTC) if e.HasField("event_time") else None
            edge, _ = await recording.record_edge(
                s, parent, e.source, Node.Kind.Name(e.source_kind), type_, e.target,
                Node.Kind.Name(e.target_kind), origin=recording.API, recorder=recorder,
                attributes=dict(e.attributes), event_time=when,
            )  # fmt: skip
            known.append(graph.Edge(eid, e.source, e.target, type_))
            out.append(edge)
        return out

    async def _edge(self, s: Store, name: str) -> EdgeRecord:
        parts = name.split("/")
        row = await s.edge(parts[1], parts[3])
        if row is None or row.deleted:
            raise NotFound("LINEAGE_EDGE_NOT_FOUND", f"{name} does not exist", lineage_edge=name)
        return row

    async def get_edge(self, name: str) -> lineage_pb2.LineageEdge:
        async with self._uow.reading() as s:
            return recording.edge_message(await self._edge(s, name))

    async def list_edges(self, parent: str) -> list[lineage_pb2.LineageEdge]:
        async with self._uow.reading() as s:
            return [recording.edge_message(r) for r in await s.live_edges(parent.split("/")[1])]

    async def delete_edge(self, name: str, etag: str) -> None:
        async with self._uow() as uow:
            row = await self._edge(uow.store, name)
            check_etag(etag, etag_of(row.version), resource=name)
            edge = recording.edge_message(row)
            await uow.store.update_edge(row.workspace, row.id, deleted=True, version=row.version + 1)
            await uow.store.publish(
                "pai.lineage.lineage_edge.deleted", events_pb2.LineageEdgeDeleted(lineage_edge=edge)
            )
            await uow.commit()


def check_record(
    parent: str, edges: list[lineage_pb2.LineageEdge], nodes: list[lineage_pb2.LineageNode]
) -> None:
    """A RecordLineage request: each edge as `graph.check_edge` wants it, and only the EXTERNAL ends
    of those edges described (a pai entity's node belongs to its owner)."""
    for i, e in enumerate(edges):
        graph.check_edge(
            e.source, Node.Kind.Name(e.source_kind), Edge.Type.Name(e.type), e.target,
            Node.Kind.Name(e.target_kind), parent, i,
        )  # fmt: skip
    external_ends = {e.source for e in edges if e.source_kind == Node.EXTERNAL} | {
        e.target for e in edges if e.target_kind == Node.EXTERNAL
    }
    for i, n in enumerate(nodes):
        if n.kind != Node.EXTERNAL:
            message = (
                "only EXTERNAL entities can be described here; pai entities take theirs from their owners"
            )
            raise bad_request(f"nodes[{i}].kind", message)
        if n.name not in external_ends or graph.workspace_of(n.name) is not None:
            raise bad_request(
                f"nodes[{i}].name", f"{n.name!r} is not the EXTERNAL end of an edge in this request"
            )
