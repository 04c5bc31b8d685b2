"""The scheduler's use cases and its decision loop, over one in-memory state.

The scheduler is a single writer: every change (API call or scheduling cycle) runs under one lock,
is written to the store with its events in one transaction, and only then applied to the state in
memory. A failed commit leaves memory as it was (API calls) or reloads it from the store (cycles).
At start the whole state is read back from the store, so a restart loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from pai_common.clock import utcnow
from pai_common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pai_scheduler import mapping
from pai_scheduler.db.store import UnitOfWork, UnitOfWorkFactory
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.records import NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.scheduling import Changes, GroupScheduler
from pai_scheduler.domain.workload import State, Workload

log = logging.getLogger(__name__)


def check_etag(given: str, version: int) -> None:
    if given and given != mapping.etag(version):
        raise Aborted("ETAG_MISMATCH", "the resource changed since it was read; re-read and retry")


@dataclass
class DecisionStats:
    admitted_total: int = 0
    preempted_total: int = 0
    attempts_total: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    admit_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    last_cycle: dt.datetime | None = None


class Scheduler:
    """All of the scheduler's state and the operations on it."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.uow = uow
        self.clock = clock
        self.lock = asyncio.Lock()
        self.groups: dict[str, ResourceGroup] = {}
        self.engines: dict[str, GroupScheduler] = {}
        self.nodes: dict[str, dict[str, NodeRecord]] = {}
        self.quotas: dict[str, QuotaRecord] = {}
        self.workloads: dict[str, Workload] = {}
        self.stats: dict[str, DecisionStats] = {}
        self.seq = 0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0
        self._stopping = False
        self._creates: list[_Create] = []
        self._flusher: asyncio.Task[None] | None = None
        self.finished_names: set[str] = set()
        self.request_ids: dict[str, str] = {}  # request_id -> workload name
        self.dirty = False  # memory may differ from the store (a failed write); reload before use

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The writer lock, with the state known to match the store."""
        async with self.lock:
            if self.dirty:
                await self._recover()
                if self.dirty:
                    raise Unavailable(
                        "STORE_UNAVAILABLE", "the scheduler's store is unavailable; retry later"
                    )
            yield

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work whose failure puts memory back to what the store holds (changes made to
        memory before the commit are undone by reloading)."""
        try:
            async with self.uow() as uow:
                yield uow
        except DomainError as exc:
            if isinstance(exc, Aborted):
                await self._recover()
            raise
        except asyncio.CancelledError:
            # cancelled (a caller gone, or shutdown): whether the commit happened is unknown, and a
            # reload now would wait on the connection being cancelled; reload before the next use
            self.dirty = True
            raise
        except Exception:
            await self._recover()
            raise

    async def _recover(self) -> None:
        self.dirty = True  # until the reload is done, even if it is cancelled
        try:
            await self.load()
            self.dirty = False
        except Exception:
            self.dirty = True
            log.exception("cannot reload the scheduler's state from the store")

    # ---- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """(Re)build the whole state from the store."""
        async with self.uow() as uow:
            snap = await uow.store.load()
            self.seq = await uow.store.max_seq()
            index = await uow.store.workload_index()
        self.finished_names = {name for name, state, _ in index if state == "FINISHED"}
        self.request_ids = {rid: name for name, _, rid in index if rid}
        self.groups = {g.id: g for g in snap.groups}
        self.nodes = {g.id: {} for g in snap.groups}
        for n in snap.nodes:
            self.nodes.setdefault(n.resource_group, {})[n.id] = n
        self.quotas = {q.name: q for q in snap.quotas}
        self.workloads = {w.name: w for w in snap.workloads}
        self.engines = {}
        for g in snap.groups:
            self._rebuild_group(g.id)
        self.stats = {g: self.stats.get(g, DecisionStats()) for g in self.groups}
        await self._report_orphans()

    async def _report_orphans(self) -> None:
        """Workloads whose stored placement no longer fits its node lost it: store and publish that."""
        orphans = [w for e in self.engines.values() for w in e.orphans]
        if not orphans:
            return
        now = self.clock()
        async with self.uow() as uow:
            for w in orphans:
                log.warning("%s lost its placement: %s", w.name, w.preemption.message if w.preemption else "")
                await uow.outbox.add(mapping.workload_event("evicted", _bump(w, now), State.ADMITTED))
                await uow.store.put_workload(w)
            await uow.commit()
        for e in self.engines.values():
            e.orphans.clear()

    def _rebuild_group(self, rg: str) -> None:
        group = self.groups[rg]
        engine = GroupScheduler(group.name, [n.info() for n in self.nodes[rg].values()], group.policy)
        specs = [q.spec for q in self.quotas.values() if q.resource_group == rg]
        by_name = {s.name: s for s in specs}
        done: set[str] = set()

        def put(spec: QuotaSpec) -> None:  # parents first
            if spec.name in done:
                return
            if spec.parent in by_name:
                put(by_name[spec.parent])
            engine.quotas.put(spec)
            done.add(spec.name)

        for spec in sorted(specs, key=lambda s: s.name):
            put(spec)
        for w in sorted(self.workloads.values(), key=lambda w: w.seq):
            if w.resource_group == group.name:
                engine.add(w)
        self.engines[rg] = engine

    def _reshape(self, rg: str) -> None:
        """Node set or policy changed: rebuild the group's engine keeping its quotas and workloads."""
        engine = self.engines[rg]
        engine.nodes = {n.id: n.info() for n in self.nodes[rg].values()}
        engine.policy = self.groups[rg].policy
        engine.rebuild()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="scheduler-loop")
        self.kick()

    async def stop(self) -> None:
        if self._flusher is not None:  # creates already accepted are written, not dropped
            with contextlib.suppress(Exception):
                await self._flusher
        if self._task is not None:  # let a cycle in progress finish its write, then stop
            self._stopping = True
            self._kick.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    def kick(self) -> None:
        """Run a scheduling cycle soon."""
        self._kick.set()

    # ---- the decision loop -------------------------------------------------------------------

    def _next_deadline(self) -> float:
        now = self.clock()
        soonest = 5.0
        for engine in self.engines.values():
            deadline = engine.next_deadline()
            if deadline is not None:
                soonest = min(soonest, max(0.0, (deadline - now).total_seconds()))
        return soonest

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._next_deadline())
            self._kick.clear()
            if self._stopping:
                return
            try:
                more = await self.run_cycle()
            except Exception:  # the loop must outlive any failure: back off, reload, go on
                log.exception("scheduling cycle failed; the state is reloaded from the store")
                async with self.lock:
                    await self._recover()
                more = True
                await asyncio.sleep(1.0)
            if more:
                self._kick.set()
            await asyncio.sleep(0)  # let API calls in between cycles

    async def run_cycle(self) -> bool:
        """One cycle over every group; True when there is more to do at once."""
        more = False
        async with self._locked():
            now = self.clock()
            for rg, engine in self.engines.items():
                started = time.perf_counter()
                changes = engine.cycle(now)
                elapsed = time.perf_counter() - started
                stats = self.stats.setdefault(rg, DecisionStats())
                stats.last_cycle = now
                if changes.decisions:
                    stats.attempts_total += changes.decisions
                    stats.latencies.append(elapsed / changes.decisions)
                if changes:
                    await self._persist(changes, now, stats)
                more = more or changes.more
            self.cycles += 1
        return more

    async def _persist(self, changes: Changes, now: dt.datetime, stats: DecisionStats) -> None:
        touched: dict[str, Workload] = {}
        async with self._write() as uow:
            for w in changes.admitted:
                touched[w.name] = w
                await uow.outbox.add(mapping.workload_event("admitted", _bump(w, now), State.PENDING))
            for w in changes.preempting:
                touched[w.name] = w
                await uow.outbox.add(mapping.workload_event("preempted", _bump(w, now), State.ADMITTED))
            for w in changes.preempted:
                touched[w.name] = w
                await uow.outbox.add(mapping.workload_event("evicted", _bump(w, now), State.PREEMPTING))
            for w, previous in changes.reasons:
                if w.name in touched or w.pending_code == "QUEUED_BEHIND":
                    continue  # where a workload waits in the queue is shown, not stored
                touched[w.name] = w
                await uow.outbox.add(
                    mapping.workload_event(
                        "pending_reason_changed",
                        _bump(w, now),
                        previous_pending_reason_code=mapping.W.PendingReasonCode.Value(
                            previous or "NOT_EVALUATED"
                        ),
                    )
                )
            await uow.store.put_workloads(touched.values())
            await uow.commit()
        stats.admitted_total += len(changes.admitted)
        stats.preempted_total += len(changes.preempting)
        for w in changes.admitted:
            if w.enqueue_time is not None:
                stats.waits.append((now - w.enqueue_time).total_seconds())
            stats.admit_times.append(time.monotonic())

    # ---- lookups -----------------------------------------------------------------------------

    def group(self, name: str) -> ResourceGroup:
        rg = name.split("/")[1] if name.startswith("resourceGroups/") else name
        g = self.groups.get(rg)
        if g is None:
            raise NotFound("RESOURCE_GROUP_NOT_FOUND", f"{name} does not exist", resource_group=name)
        return g

    def node(self, name: str) -> NodeRecord:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "resourceGroups" or parts[2] != "nodes":
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                f"{name!r} is not a node name (resourceGroups/{{group}}/nodes/{{node}})",
                violations=[FieldViolation("name", "must be resourceGroups/{group}/nodes/{node}")],
            )
        _, rg, _, nid = parts
        self.group(rg)
        n = self.nodes[rg].get(nid)
        if n is None:
            raise NotFound("NODE_NOT_FOUND", f"{name} does not exist", node=name)
        return n

    def quota(self, name: str) -> QuotaRecord:
        q = self.quotas.get(name)
        if q is None:
            raise NotFound("QUOTA_NOT_FOUND", f"{name} does not exist", quota=name)
        return q

    async def workload(self, name: str) -> Workload:
        w = self.workloads.get(name)
        if w is not None:
            return w
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "workspaces" or parts[2] != "workloads":
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                f"{name!r} is not a workload name (workspaces/{{workspace}}/workloads/{{workload}})",
                violations=[FieldViolation("name", "must be workspaces/{workspace}/workloads/{workload}")],
            )
        ws, wid = name.split("/")[1], name.rsplit("/", 1)[1]
        async with self.uow() as uow:
            stored = await uow.store.finished_workload(ws, wid)
        if stored is None:
            raise NotFound("WORKLOAD_NOT_FOUND", f"{name} does not exist", workload=name)
        return stored

    def engine_of(self, w: Workload) -> GroupScheduler:
        return self.engines[w.resource_group.split("/")[1]]

    def queue_position(self, w: Workload) -> int:
        engine = self.engines.get(w.resource_group.split("/")[1])
        return engine.queue_position(w) if engine is not None and w.name in engine.workloads else 0

    # ---- resource groups ---------------------------------------------------------------------

    async def create_group(self, group: ResourceGroup, request_id: str) -> ResourceGroup:
        async with self._locked():
            if group.id in self.groups:
                existing = self.groups[group.id]
                if await self._same_request("ResourceGroupRow", request_id, id=group.id):
                    return existing
                raise AlreadyExists(
                    "RESOURCE_GROUP_ALREADY_EXISTS", f"{group.name} exists", resource_group=group.name
                )
            now = self.clock()
            group.uid, group.create_time, group.update_time = str(uuid.uuid4()), now, now
            async with self._write() as uow:
                await uow.store.put_group(group, request_id or None)
                await uow.outbox.add(mapping.group_event("created", group))
                await uow.commit()
            self.groups[group.id] = group
            self.nodes[group.id] = {}
            self.stats[group.id] = DecisionStats()
            self._rebuild_group(group.id)
            return group

    async def _same_request(self, row: str, request_id: str, **key: str) -> bool:
        """Whether `request_id` created the resource with `key` (a retry); an id that created
        something else is a conflict."""
        from pai_scheduler.db import rows

        if not request_id:
            return False
        async with self.uow() as uow:
            found = await uow.store.by_request_id(getattr(rows, row), request_id)
        if found is None:
            return False
        if all(getattr(found, k) == v for k, v in key.items()):
            return True
        raise InvalidArgument(
            "REQUEST_ID_CONFLICT",
            "request_id was already used for another request",
            violations=[FieldViolation("request_id", "already used for another request")],
        )

    async def update_group(self, group: ResourceGroup) -> ResourceGroup:
        async with self._locked():
            now = self.clock()
            group.version += 1
            group.update_time = now
            async with self._write() as uow:
                await uow.store.put_group(group)
                await uow.outbox.add(mapping.group_event("updated", group))
                await uow.commit()
            self.groups[group.id] = group
            self._reshape(group.id)
        self.kick()
        return group

    async def delete_group(self, name: str, etag: str, force: bool) -> None:
        from pai_scheduler.db.rows import QuotaRow, ResourceGroupRow

        async with self._locked():
            g = self.group(name)
            check_etag(etag, g.version)
            live = [w for w in self.workloads.values() if w.resource_group == g.name]
            if (
                live or self.nodes[g.id] or any(q.resource_group == g.id for q in self.quotas.values())
            ) and not force:
                raise FailedPrecondition(
                    "RESOURCE_GROUP_NOT_EMPTY",
                    f"{name} still has nodes, quotas or workloads; delete them first or use force",
                    resource_group=name,
                )
            if live:
                raise FailedPrecondition(
                    "RESOURCE_GROUP_NOT_EMPTY",
                    f"{name} has {len(live)} unfinished workloads",
                    resource_group=name,
                )
            async with self._write() as uow:
                await uow.store.delete_nodes(g.id, list(self.nodes[g.id]))
                for q in [q for q in self.quotas.values() if q.resource_group == g.id]:
                    await uow.store.delete(QuotaRow, g.id, q.name.rsplit("/", 1)[1])
                await uow.store.delete(ResourceGroupRow, g.id)
                await uow.outbox.add(mapping.group_event("deleted", g))
                await uow.commit()
            for q in [q for q in self.quotas.values() if q.resource_group == g.id]:
                del self.quotas[q.name]
            del self.groups[g.id], self.nodes[g.id], self.engines[g.id]

    # ---- nodes -------------------------------------------------------------------------------

    async def put_nodes(
        self, rg: str, nodes: list[NodeRecord], *, replace: bool = False, request_id: str = ""
    ) -> tuple[int, int, int]:
        """Register or update nodes (and with `replace`, delete the group's others): counts."""
        async with self._locked():
            g = self.group(rg)
            now = self.clock()
            current = self.nodes[g.id]
            created = updated = 0
            gone = [nid for nid in current if replace and nid not in {n.id for n in nodes}]
            busy = self._busy_nodes(g)
            for n in nodes:
                why = self.engines[g.id].can_host(n.info()) if n.id in busy else ""
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
            async with self._write() as uow:
                for n in nodes:
                    old = current.get(n.id)
                    if old is None:
                        n.uid, n.create_time, n.version = str(uuid.uuid4()), now, 1
                        created += 1
                    else:
                        n.uid, n.create_time, n.version = old.uid, old.create_time, old.version + 1
                        n.ready, n.state_message = old.ready, old.state_message
                        n.cordoned, n.cordon_reason = old.cordoned, old.cordon_reason
                        updated += 1
                    n.update_time = now
                    n.report_time = n.report_time or now
                    await uow.store.put_node(n, request_id if len(nodes) == 1 else None)
                await uow.store.delete_nodes(g.id, gone)
                if len(nodes) == 1 and not gone:
                    await uow.outbox.add(mapping.node_event("registered" if created else "updated", nodes[0]))
                else:
                    capacity = GroupScheduler.capacity_of([n.info() for n in nodes])
                    await uow.outbox.add(mapping.nodes_imported(g.id, created, updated, len(gone), capacity))
                await uow.commit()
            for n in nodes:
                current[n.id] = n
            for nid in gone:
                del current[nid]
            self._reshape(g.id)
            await self._report_orphans()
        self.kick()
        return created, updated, len(gone)

    def _busy_nodes(self, g: ResourceGroup) -> set[str]:
        return {
            p.node
            for w in self.workloads.values()
            if w.resource_group == g.name and w.holds
            for p in w.placements
        }

    async def change_node(
        self, name: str, etag: str, change: Callable[[NodeRecord], None], *, drain: bool = False
    ) -> NodeRecord:
        """Change a node; with `drain`, every workload on it gets a preemption notice (NODE_DRAINED)."""
        async with self._locked():
            n = self.node(name)
            check_etag(etag, n.version)
            import copy

            new = copy.deepcopy(n)
            change(new)
            now = self.clock()
            new.version += 1
            new.update_time = now
            engine = self.engines[n.resource_group]
            why = engine.can_host(new.info())
            if why:
                raise FailedPrecondition(
                    "NODE_CAPACITY_BELOW_ALLOCATED", f"{name} cannot change so: {why}", node=name
                )
            victims = engine.drain(n.id, now) if drain else []
            async with self._write() as uow:
                await uow.store.put_node(new)
                await uow.outbox.add(mapping.node_event("updated", new, n))
                for v in victims:
                    await uow.outbox.add(mapping.workload_event("preempted", _bump(v, now), State.ADMITTED))
                    await uow.store.put_workload(v)
                await uow.commit()
            self.nodes[n.resource_group][n.id] = new
            engine.update_node(new.info())
            await self._report_orphans()
        self.kick()
        return new

    async def delete_node(self, name: str, etag: str, force: bool) -> None:
        from pai_scheduler.db.rows import NodeRow

        async with self._locked():
            n = self.node(name)
            check_etag(etag, n.version)
            g = self.groups[n.resource_group]
            if n.id in self._busy_nodes(g):
                if not force:
                    raise FailedPrecondition(
                        "NODE_HAS_WORKLOADS",
                        f"{name} has workloads placed on it; cordon and drain it, or delete with force",
                        node=name,
                    )
                await self._evict_from_node(g, n.id)
            async with self._write() as uow:
                await uow.store.delete(NodeRow, n.resource_group, n.id)
                await uow.outbox.add(mapping.node_event("deleted", n))
                await uow.commit()
            del self.nodes[n.resource_group][n.id]
            self._reshape(n.resource_group)
        self.kick()

    async def _evict_from_node(self, g: ResourceGroup, node_id: str) -> None:
        """A node goes away: the workloads on it lose their resources at once (NODE_DELETED)."""
        engine = self.engines[g.id]
        now = self.clock()
        victims = [
            w for w in self.workloads.values() if w.holds and any(p.node == node_id for p in w.placements)
        ]
        async with self._write() as uow:
            for w in victims:
                previous = engine.evict(w, "NODE_DELETED", f"node {node_id} was deleted", now)
                await uow.outbox.add(mapping.workload_event("evicted", _bump(w, now), previous))
                await uow.store.put_workload(w)
            await uow.commit()

    # ---- quotas ------------------------------------------------------------------------------

    async def put_quota(
        self, record: QuotaRecord, *, create: bool, request_id: str = "", etag: str = ""
    ) -> QuotaRecord:
        from pai_scheduler.domain.quota import QuotaError

        async with self._locked():
            rg = record.resource_group
            self.group(rg)
            existing = self.quotas.get(record.name)
            if create and existing is not None:
                rg_id, quota_id = record.resource_group, record.name.rsplit("/", 1)[1]
                if await self._same_request("QuotaRow", request_id, resource_group=rg_id, id=quota_id):
                    return existing
                raise AlreadyExists("QUOTA_ALREADY_EXISTS", f"{record.name} exists", quota=record.name)
            if not create and existing is None:
                raise NotFound("QUOTA_NOT_FOUND", f"{record.name} does not exist", quota=record.name)
            engine = self.engines[rg]
            if existing is not None:
                check_etag(etag, existing.version)
                record.spec.held = existing.spec.held
            if record.spec.parent and record.spec.parent.split("/")[1] != rg:
                raise InvalidArgument(
                    "PARENT_QUOTA_NOT_FOUND",
                    "the parent quota must be in the same resource group",
                    violations=[FieldViolation("quota.parent", "must be a quota of the same resource group")],
                )
            if record.spec.parent:
                charged = [w for w in self.workloads.values() if w.quota == record.spec.parent]
                if charged:
                    raise FailedPrecondition(
                        "QUOTA_IN_USE",
                        f"{record.spec.parent} has workloads charged to it and cannot get children",
                        quota=record.spec.parent,
                    )
            try:
                engine.quotas.validate(record.spec, replacing=record.name if existing else None)
            except QuotaError as exc:
                raise FailedPrecondition(exc.reason, str(exc), quota=record.name) from exc
            now = self.clock()
            if existing is None:
                record.uid, record.create_time, record.version = str(uuid.uuid4()), now, 1
            else:
                record.uid, record.create_time, record.version = (
                    existing.uid,
                    existing.create_time,
                    existing.version + 1,
                )
            record.update_time = now
            verb = "created" if existing is None else "updated"
            async with self._write() as uow:
                await uow.store.put_quota(record, request_id or None)
                await uow.outbox.add(mapping.quota_event(verb, record))
                await uow.commit()
            self.quotas[record.name] = record
            engine.quotas.put(record.spec)
            engine.touch()
        self.kick()
        return record

    async def set_quota_held(self, name: str, etag: str, held: bool) -> QuotaRecord:
        async with self._locked():
            q = self.quota(name)
            check_etag(etag, q.version)
            if q.spec.held == held:
                return q
            import copy

            new = copy.deepcopy(q)
            new.spec.held = held
            new.version += 1
            new.update_time = self.clock()
            async with self._write() as uow:
                await uow.store.put_quota(new)
                await uow.outbox.add(mapping.quota_event("state_changed", new, q.spec.held))
                await uow.commit()
            self.quotas[name] = new
            self.engines[new.resource_group].quotas.put(new.spec)
            self.engines[new.resource_group].touch()
        self.kick()
        return new

    async def delete_quota(self, name: str, etag: str) -> None:
        from pai_scheduler.db.rows import QuotaRow

        async with self._locked():
            q = self.quota(name)
            check_etag(etag, q.version)
            engine = self.engines[q.resource_group]
            if engine.quotas.children.get(name):
                raise FailedPrecondition("QUOTA_HAS_CHILDREN", f"{name} has child quotas", quota=name)
            if any(w.quota == name for w in self.workloads.values()):
                raise FailedPrecondition("QUOTA_IN_USE", f"{name} has unfinished workloads", quota=name)
            async with self._write() as uow:
                await uow.store.delete(QuotaRow, q.resource_group, name.rsplit("/", 1)[1])
                await uow.outbox.add(mapping.quota_event("deleted", q))
                await uow.commit()
            del self.quotas[name]
            engine.quotas.remove(name)
            engine.queues.pop(name, None)
            engine.touch()

    # ---- workloads ---------------------------------------------------------------------------

    def resolve_quota(self, workspace: str, quota: str, resource_group: str) -> QuotaRecord:
        if quota:
            q = self.quota(quota)
            if q.spec.workspace != workspace:
                raise FailedPrecondition(
                    "QUOTA_WORKSPACE_MISMATCH", f"{quota} is not a quota of {workspace}", quota=quota
                )
            if resource_group and q.resource_group != resource_group.split("/")[1]:
                raise InvalidArgument(
                    "RESOURCE_GROUP_MISMATCH",
                    f"{quota} is not in {resource_group}",
                    violations=[
                        FieldViolation("workload.resource_group", f"does not match the quota {quota}")
                    ],
                )
            return q
        mine = [q for q in self.quotas.values() if q.spec.workspace == workspace]
        if resource_group:
            self.group(resource_group)
            mine = [q for q in mine if q.resource_group == resource_group.split("/")[1]]
        if not mine:
            where = f" in {resource_group}" if resource_group else ""
            raise FailedPrecondition(
                "WORKSPACE_HAS_NO_QUOTA",
                f"{workspace} has no quota{where}; ask an admin for one",
                workspace=workspace,
            )
        if len(mine) > 1:
            raise FailedPrecondition(
                "WORKSPACE_QUOTA_AMBIGUOUS",
                f"{workspace} has quotas in several resource groups; name the resource group or quota",
                workspace=workspace,
            )
        return mine[0]

    async def create_workload(self, w: Workload, request_id: str) -> Workload:
        """Queue a new workload. Creates that arrive together are written in one transaction (group
        commit): under load the lock and the commit, not the decision, bound how fast owners submit.
        """
        q = self.quota(w.quota)
        now = self.clock()
        w.uid = str(uuid.uuid4())
        w.create_time = w.update_time = w.enqueue_time = now
        w.grace_seconds = min(w.grace_seconds, self.groups[q.resource_group].policy.max_grace)
        pending = _Create(w, request_id, mapping.workload_event("created", w).row())
        self._creates.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_creates(), name="scheduler-creates")
        return await pending.future

    async def _flush_creates(self) -> None:
        while self._creates:
            batch, self._creates = self._creates, []
            try:
                await self._create_batch(batch)
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                else:  # one create's row may have failed them all: write each on its own
                    for c in batch:
                        if c.future.done():
                            continue
                        try:
                            await self._create_batch([c])
                        except Exception as single:
                            if not c.future.done():
                                c.future.set_exception(single)
            self.kick()

    async def _create_batch(self, batch: list[_Create]) -> None:
        async with self._locked():
            accepted: list[_Create] = []
            names: dict[str, _Create] = {}
            rids: dict[str, _Create] = {}
            for c in batch:
                w, rid = c.workload, c.request_id
                try:
                    # names and request ids of every stored workload are kept in memory, so a create
                    # reads nothing from the store
                    target = self.request_ids.get(rid) if rid else None
                    if target is not None:
                        if target != w.name:
                            raise InvalidArgument(
                                "REQUEST_ID_CONFLICT",
                                "request_id was already used for another request",
                                violations=[FieldViolation("request_id", "already used for another request")],
                            )
                        existing = await self.workload(w.name)  # a retry
                        if not c.future.done():
                            c.future.set_result(existing)
                        continue
                    first = names.get(w.name)
                    if first is not None and rid and first.request_id == rid:
                        c.same_as = first  # the same request twice in one batch
                        continue
                    if rid and rid in rids:
                        raise InvalidArgument(
                            "REQUEST_ID_CONFLICT",
                            "request_id was already used for another request",
                            violations=[FieldViolation("request_id", "already used for another request")],
                        )
                    if w.name in self.workloads or w.name in self.finished_names or first is not None:
                        raise AlreadyExists("WORKLOAD_ALREADY_EXISTS", f"{w.name} exists", workload=w.name)
                    q = self.quota(w.quota)
                    if self.engines[q.resource_group].quotas.children.get(q.name):
                        raise FailedPrecondition(
                            "QUOTA_HAS_CHILDREN",
                            f"{q.name} has child quotas; charge workloads to a leaf quota",
                            quota=q.name,
                        )
                except DomainError as exc:
                    if not c.future.done():
                        c.future.set_exception(exc)
                    continue
                names[w.name] = c
                if rid:
                    rids[rid] = c
                accepted.append(c)
            if accepted:
                for c in accepted:
                    self.seq += 1
                    c.workload.seq = self.seq
                async with self._write() as uow:
                    await uow.store.insert_workloads([(c.workload, c.request_id or None) for c in accepted])
                    await uow.outbox.add_rows([c.event for c in accepted])
                    await uow.commit()
                for c in accepted:
                    w = c.workload
                    self.workloads[w.name] = w
                    if c.request_id:
                        self.request_ids[c.request_id] = w.name
                    self.engines[self.quota(w.quota).resource_group].add(w)
            for c in batch:
                if c.future.done():
                    continue
                c.future.set_result(c.same_as.workload if c.same_as is not None else c.workload)

    async def update_workload(
        self, name: str, etag: str, apply: Callable[[Workload], int | None]
    ) -> Workload:
        async with self._locked():
            w = self.workloads.get(name)
            if w is None:
                raise (await self._finished_error(name, "updated"))
            check_etag(etag, w.version)
            priority = apply(w)
            if priority is not None and priority != w.priority:
                self.engine_of(w).reprioritise(w, priority)
            async with self._write() as uow:
                await uow.outbox.add(mapping.workload_event("updated", _bump(w, self.clock())))
                await uow.store.put_workload(w)
                await uow.commit()
        self.kick()
        return w

    async def _finished_error(self, name: str, verb: str) -> Exception:
        await self.workload(name)  # NotFound when it never existed
        return FailedPrecondition(
            "ILLEGAL_STATE_TRANSITION", f"{name} is FINISHED and cannot be {verb}", workload=name
        )

    async def finish_workload(self, name: str, etag: str, outcome: str, message: str) -> Workload:
        async with self._locked():
            w = self.workloads.get(name)
            if w is None:
                done = await self.workload(name)
                if done.outcome == outcome:
                    return done
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION", f"{name} already finished as {done.outcome}", workload=name
                )
            check_etag(etag, w.version)
            now = self.clock()
            previous = self.engine_of(w).finish(w, outcome, message, now)
            del self.workloads[name]
            async with self._write() as uow:
                await uow.outbox.add(mapping.workload_event("finished", _bump(w, now), previous))
                await uow.store.put_workload(w)
                await uow.commit()
            self.finished_names.add(name)
        self.kick()
        return w

    async def requeue_workload(self, name: str, etag: str, reason: str, reset: bool) -> Workload:
        async with self._locked():
            w = self.workloads.get(name)
            if w is None:
                raise (await self._finished_error(name, "requeued"))
            check_etag(etag, w.version)
            if w.state == State.PENDING:
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION", f"{name} is PENDING: nothing to give back", workload=name
                )
            now = self.clock()
            seq = None
            if reset:
                self.seq += 1
                seq = self.seq
            previous = self.engine_of(w).requeue(w, now, seq)
            async with self._write() as uow:
                await uow.outbox.add(
                    mapping.workload_event("requeued", _bump(w, now), previous, reason=reason)
                )
                await uow.store.put_workload(w)
                await uow.commit()
        self.kick()
        return w

    async def delete_workload(self, name: str, etag: str) -> None:
        from pai_scheduler.db.rows import WorkloadRow

        async with self._locked():
            w = await self.workload(name)
            check_etag(etag, w.version)
            now = self.clock()
            async with self._write() as uow:
                if w.name in self.workloads:
                    if w.holds or w.state == State.PREEMPTED:
                        previous = self.engine_of(w).finish(w, "CANCELLED", "deleted", now)
                        await uow.outbox.add(mapping.workload_event("finished", _bump(w, now), previous))
                    else:
                        self.engine_of(w).forget(w)
                await uow.outbox.add(mapping.workload_event("deleted", w))
                await uow.store.delete(WorkloadRow, name.split("/")[1], name.rsplit("/", 1)[1])
                await uow.commit()
            self.workloads.pop(name, None)
            self.finished_names.discard(name)  # the name and its request id are free again
            for rid in [r for r, n in self.request_ids.items() if n == name]:
                del self.request_ids[rid]
        self.kick()

    async def finished(self, workspace: str | None) -> list[Workload]:
        async with self.uow() as uow:
            return await uow.store.finished_workloads(workspace)


@dataclass(eq=False)
class _Create:
    """A create waiting for the next group commit."""

    workload: Workload
    request_id: str
    event: dict[str, object]  # the WorkloadCreated outbox row, taken in the caller's trace context
    future: asyncio.Future[Workload] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    same_as: _Create | None = None


def _bump(w: Workload, now: dt.datetime) -> Workload:
    w.version += 1
    w.update_time = now
    return w


__all__ = ["Scheduler", "UnitOfWork"]
