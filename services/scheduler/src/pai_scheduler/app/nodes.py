"""Nodes: register, import, change, cordon, drain and delete them, through the single writer.

A node never changes so that it holds less than is placed on it; deleting one that holds workloads
(with `force`) evicts them at once, draining one gives them notices.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Callable, Mapping

from pai_common.errors import AlreadyExists, FailedPrecondition, bad_request
from pai_common.pagination import page
from pai_scheduler import mapping
from pai_scheduler.app.engine import Scheduler, bump
from pai_scheduler.domain import filters
from pai_scheduler.domain.capacity import capacity_of
from pai_scheduler.domain.quota import Amounts
from pai_scheduler.domain.records import Gpu, NodeRecord, ResourceGroup, check_gpu_indices
from pai_scheduler.domain.usage import NodeUsage, Placed, node_usage, placed_pods
from pai_scheduler.domain.workload import State
from pai_scheduler.inventory import InventoryError, NodeSpec, parse_openb_nodes

NodeView = tuple[NodeRecord, NodeUsage]
Imported = tuple[int, int, int, Amounts]
"""Nodes created, updated and deleted by an import, and the capacity of the imported ones."""


def node_record(rg: str, spec: NodeSpec, source: str) -> NodeRecord:
    """A node of group `rg` as an inventory source (`source`) reports it."""
    gpus = [Gpu(g.index, g.model, g.memory_bytes, g.uuid) for g in spec.gpus]
    return NodeRecord(
        rg, spec.node_id, "", source, spec.cpu_milli, spec.memory_bytes, gpus, dict(spec.labels),
        provider_id=spec.provider_id,
    )  # fmt: skip


def _stamp(n: NodeRecord, old: NodeRecord | None, now: dt.datetime) -> bool:
    """Identity, version and times for `n` (True: it is new); a node registered again keeps its
    state and cordon."""
    if old is None:
        n.uid, n.create_time, n.version = str(uuid.uuid4()), now, 1
    else:
        n.uid, n.create_time, n.version = old.uid, old.create_time, old.version + 1
        n.ready, n.state_message = old.ready, old.state_message
        n.cordoned, n.cordon_reason = old.cordoned, old.cordon_reason
    n.update_time = now
    n.report_time = n.report_time or now
    return old is None


class Nodes:
    """The node use cases."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def view(self, n: NodeRecord, placed: Placed | None = None) -> NodeView:
        """`n` with what is placed on it (`placed`: its group's pods, when already worked out)."""
        if placed is None:
            placed = placed_pods(self._s.workloads.values(), f"resourceGroups/{n.resource_group}")
        return n, node_usage(n, placed)

    def get(self, name: str) -> NodeView:
        return self.view(self._s.node(name))

    def list_nodes(
        self, parent: str, expression: str, page_size: int, page_token: str
    ) -> tuple[list[NodeView], str]:
        """The nodes of group `parent` (`resourceGroups/-`: of every group) that pass `expression`."""
        s = self._s
        rg = parent.split("/")[1]
        if rg == "-":
            nodes = [n for g in sorted(s.nodes) for n in s.nodes[g].values()]
        else:
            s.group(rg)
            nodes = list(s.nodes[rg].values())
        nodes.sort(key=lambda n: (n.resource_group, n.id))
        terms = filters.parse(expression, filters.NODE_FIELDS)
        nodes = [n for n in nodes if filters.node_matches(n, terms)]
        items, token = page(nodes, page_size, page_token, parent=parent, filter=expression)
        placed: dict[str, Placed] = {}  # one walk over the workloads per group on the page
        for n in items:
            if n.resource_group not in placed:
                placed[n.resource_group] = placed_pods(
                    s.workloads.values(), f"resourceGroups/{n.resource_group}"
                )
        return [self.view(n, placed[n.resource_group]) for n in items], token

    async def register(self, node: NodeRecord, request_id: str) -> NodeView:
        """Register `node`; the same source and provider id registering again (an agent restarting)
        refreshes it."""
        s = self._s
        rg = node.resource_group
        s.group(rg)
        existing = s.nodes[rg].get(node.id)
        check_gpu_indices(node.gpus)
        if existing is not None and (existing.source, existing.provider_id) != (
            node.source,
            node.provider_id,
        ):
            raise AlreadyExists("NODE_ALREADY_EXISTS", f"{existing.name} exists", node=existing.name)
        await self.put(rg, [node], request_id=request_id)
        return self.view(s.nodes[rg][node.id])

    async def import_nodes(
        self,
        parent: str,
        csv_content: str,
        *,
        replicas: int,
        gpu_memory_bytes: Mapping[str, int],
        labels: Mapping[str, str],
        replace: bool,
        validate_only: bool,
    ) -> Imported:
        """Simulated nodes from an openb node list; with `replace`, the group's others go."""
        rg = parent.split("/")[1]
        self._s.group(rg)
        try:
            specs = parse_openb_nodes(
                csv_content, replicas=replicas, gpu_memory_bytes=gpu_memory_bytes, labels=labels
            )
        except InventoryError as exc:
            raise bad_request("csv_content", str(exc), "INVALID_NODE_CSV") from exc
        records = [node_record(rg, spec, "SIMULATED") for spec in specs]
        capacity = capacity_of([r.info() for r in records])
        if validate_only:
            existing = self._s.nodes[rg]
            created = sum(1 for r in records if r.id not in existing)
            deleted = sum(1 for nid in existing if nid not in {r.id for r in records}) if replace else 0
            return created, len(records) - created, deleted, capacity
        created, updated, deleted = await self.put(rg, records, replace=replace)
        return created, updated, deleted, capacity

    async def put(
        self, rg: str, nodes: list[NodeRecord], *, replace: bool = False, request_id: str = ""
    ) -> tuple[int, int, int]:
        """Register or update nodes (and with `replace`, delete the group's others): counts."""
        s = self._s
        async with s.locked():
            g = s.group(rg)
            current = s.nodes[g.id]
            gone = [nid for nid in current if replace and nid not in {n.id for n in nodes}]
            self._check_can_host(g, nodes, gone)
            now = s.clock()
            created = updated = 0
            async with s.write() as uow:
                for n in nodes:
                    if _stamp(n, current.get(n.id), now):
                        created += 1
                    else:
                        updated += 1
                    await uow.store.put_node(n, request_id if len(nodes) == 1 else None)
                await uow.store.delete_nodes(g.id, gone)
                if len(nodes) == 1 and not gone:
                    await uow.outbox.add(mapping.node_event("registered" if created else "updated", nodes[0]))
                else:
                    capacity = capacity_of([n.info() for n in nodes])
                    await uow.outbox.add(mapping.nodes_imported(g.id, created, updated, len(gone), capacity))
                await uow.commit()
            for n in nodes:
                current[n.id] = n
            for nid in gone:
                del current[nid]
            s.reshape(g.id)
            await s.report_orphans()
        s.kick()
        return created, updated, len(gone)

    def _check_can_host(self, g: ResourceGroup, nodes: list[NodeRecord], gone: list[str]) -> None:
        busy = self._busy_nodes(g)
        for n in nodes:
            why = self._s.engines[g.id].can_host(n.info()) if n.id in busy else ""
            if why:
                raise FailedPrecondition(
                    "NODE_CAPACITY_BELOW_ALLOCATED", f"node {n.id} cannot change so: {why}", node=n.name
                )
        for nid in gone:
            if nid in busy:
                raise FailedPrecondition(
                    "NODE_HAS_WORKLOADS",
                    f"node {nid} has workloads placed on it",
                    node=f"{g.name}/nodes/{nid}",
                )

    def _busy_nodes(self, g: ResourceGroup) -> set[str]:
        return {
            p.node
            for w in self._s.workloads.values()
            if w.resource_group == g.name and w.holds
            for p in w.placements
        }

    async def update(self, name: str, etag: str, change: Callable[[NodeRecord], None]) -> NodeView:
        return self.view(await self._change(name, etag, change))

    async def cordon(self, name: str, etag: str, reason: str, *, drain: bool) -> NodeView:
        """Take a node out of placement; with `drain`, every workload on it gets a notice."""

        def change(n: NodeRecord) -> None:
            n.cordoned, n.cordon_reason = True, reason

        return self.view(await self._change(name, etag, change, drain=drain))

    async def uncordon(self, name: str, etag: str) -> NodeView:
        def change(n: NodeRecord) -> None:
            n.cordoned, n.cordon_reason = False, ""

        return self.view(await self._change(name, etag, change))

    async def report_health(self, name: str, ready: bool, message: str) -> NodeView:
        now = self._s.clock()

        def change(n: NodeRecord) -> None:
            n.ready = ready
            n.state_message, n.report_time = message, now

        return self.view(await self._change(name, "", change))

    async def _change(
        self, name: str, etag: str, change: Callable[[NodeRecord], None], *, drain: bool = False
    ) -> NodeRecord:
        """Change a node; with `drain`, every workload on it gets a preemption notice (NODE_DRAINED)."""
        s = self._s
        async with s.locked():
            n = s.node(name)
            n.check_etag(etag)
            new = copy.deepcopy(n)
            change(new)
            if new.gpus != n.gpus:
                check_gpu_indices(new.gpus)
            now = s.clock()
            new.version += 1
            new.update_time = now
            engine = s.engines[n.resource_group]
            why = engine.can_host(new.info())
            if why:
                raise FailedPrecondition(
                    "NODE_CAPACITY_BELOW_ALLOCATED", f"{name} cannot change so: {why}", node=name
                )
            victims = engine.drain(n.id, now) if drain else []
            async with s.write() as uow:
                await uow.store.put_node(new)
                await uow.outbox.add(mapping.node_event("updated", new, n))
                for v in victims:
                    await uow.outbox.add(mapping.workload_event("preempted", bump(v, now), State.ADMITTED))
                    await uow.store.put_workload(v)
                await uow.commit()
            s.nodes[n.resource_group][n.id] = new
            engine.update_node(new.info())
            await s.report_orphans()
        s.kick()
        return new

    async def delete(self, name: str, etag: str, force: bool) -> None:
        """Delete a node; one holding workloads only with `force`, which evicts them (NODE_DELETED)."""
        s = self._s
        async with s.locked():
            n = s.node(name)
            n.check_etag(etag)
            g = s.groups[n.resource_group]
            if n.id in self._busy_nodes(g):
                if not force:
                    raise FailedPrecondition(
                        "NODE_HAS_WORKLOADS",
                        f"{name} has workloads placed on it; cordon and drain it, or delete with force",
                        node=name,
                    )
                await self._evict_from(g, n.id)
            async with s.write() as uow:
                await uow.store.delete_node(n.resource_group, n.id)
                await uow.outbox.add(mapping.node_event("deleted", n))
                await uow.commit()
            del s.nodes[n.resource_group][n.id]
            s.reshape(n.resource_group)
        s.kick()

    async def _evict_from(self, g: ResourceGroup, node_id: str) -> None:
        """A node goes away: the workloads on it lose their resources at once (NODE_DELETED)."""
        s = self._s
        engine = s.engines[g.id]
        now = s.clock()
        victims = [
            w for w in s.workloads.values() if w.holds and any(p.node == node_id for p in w.placements)
        ]
        async with s.write() as uow:
            for w in victims:
                previous = engine.evict(w, "NODE_DELETED", f"node {node_id} was deleted", now)
                await uow.outbox.add(mapping.workload_event("evicted", bump(w, now), previous))
                await uow.store.put_workload(w)
            await uow.commit()
