"""The scheduler's single writer: the in-memory model of every resource group, and the decision loop.

Every change — a use case's (`groups`, `nodes`, `quotas`, `workloads`) or a scheduling cycle's — runs
under one lock (`locked`), is written to the store with its events in one transaction (`write`),
and only then applied to the state in memory. A failed commit leaves memory as it was (use cases
change memory after the commit) or reloads it from the store (cycles, and changes made before the
commit). At start the whole state is read back from the store, so a restart loses and repeats
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable

from pai_common.clock import utcnow
from pai_common.errors import Aborted, DomainError, NotFound, Unavailable
from pai_scheduler import mapping
from pai_scheduler.db.store import UnitOfWork, UnitOfWorkFactory
from pai_scheduler.domain import names
from pai_scheduler.domain.outcomes import Changes
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.records import NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.scheduling import GroupScheduler
from pai_scheduler.domain.stats import DecisionStats
from pai_scheduler.domain.workload import State, Workload

log = logging.getLogger(__name__)


class Scheduler:
    """The scheduler's state and its single writer: the lock, the store, the decision loop."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.uow = uow
        self.clock = clock
        self.lock = asyncio.Lock()
        self.groups: dict[str, ResourceGroup] = {}
        self.engines: dict[str, GroupScheduler] = {}
        self.nodes: dict[str, dict[str, NodeRecord]] = {}
        self.quotas: dict[str, QuotaRecord] = {}
        self.workloads: dict[str, Workload] = {}  # unfinished ones; finished ones stay in the store
        self.stats: dict[str, DecisionStats] = {}
        self.seq = 0
        self.cycles = 0
        self.finished_names: set[str] = set()
        self.request_ids: dict[str, str] = {}  # request_id -> workload name
        self.dirty = False  # memory may differ from the store (a failed write); reload before use
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- the single writer -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """The writer lock, with the state known to match the store."""
        async with self.lock:
            if self.dirty:
                await self.recover()
                if self.dirty:
                    raise Unavailable(
                        "STORE_UNAVAILABLE", "the scheduler's store is unavailable; retry later"
                    )
            yield

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work whose failure puts memory back to what the store holds (changes made to
        memory before the commit are undone by reloading). Only under `locked`."""
        try:
            async with self.uow() as uow:
                yield uow
        except DomainError as exc:
            if isinstance(exc, Aborted):
                await self.recover()
            raise
        except asyncio.CancelledError:
            # cancelled (a caller gone, or shutdown): whether the commit happened is unknown, and a
            # reload now would wait on the connection being cancelled; reload before the next use
            self.dirty = True
            raise
        except Exception:
            await self.recover()
            raise

    async def recover(self) -> None:
        """Reload the state from the store; until that succeeds, the state is marked dirty."""
        self.dirty = True  # until the reload is done, even if it is cancelled
        try:
            await self.load()
            self.dirty = False
        except Exception:
            self.dirty = True
            log.exception("cannot reload the scheduler's state from the store")

    def next_seq(self) -> int:
        """The next enqueue order (stored with the workload, so it survives restarts)."""
        self.seq += 1
        return self.seq

    # ---- the state ---------------------------------------------------------------------------

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
            self.rebuild_group(g.id)
        self.stats = {g: self.stats.get(g, DecisionStats()) for g in self.groups}
        await self.report_orphans()

    async def report_orphans(self) -> None:
        """Workloads whose stored placement no longer fits its node lost it: store and publish that."""
        orphans = [w for e in self.engines.values() for w in e.orphans]
        if not orphans:
            return
        now = self.clock()
        async with self.uow() as uow:
            for w in orphans:
                log.warning("%s lost its placement: %s", w.name, w.preemption.message if w.preemption else "")
                await uow.outbox.add(mapping.workload_event("evicted", bump(w, now), State.ADMITTED))
                await uow.store.put_workload(w)
            await uow.commit()
        for e in self.engines.values():
            e.orphans.clear()

    def rebuild_group(self, rg: str) -> None:
        """A fresh engine for group `rg` from its nodes, quotas and workloads in memory."""
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

    def reshape(self, rg: str) -> None:
        """Node set or policy changed: rebuild the group's engine keeping its quotas and workloads."""
        engine = self.engines[rg]
        engine.nodes = {n.id: n.info() for n in self.nodes[rg].values()}
        engine.policy = self.groups[rg].policy
        engine.rebuild()

    # ---- lookups -----------------------------------------------------------------------------

    def group(self, name: str) -> ResourceGroup:
        """The group named `name` (or with that id); NOT_FOUND otherwise."""
        g = self.groups.get(names.group_id(name))
        if g is None:
            raise NotFound("RESOURCE_GROUP_NOT_FOUND", f"{name} does not exist", resource_group=name)
        return g

    def node(self, name: str) -> NodeRecord:
        rg, nid = names.node_parts(name)
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
        """A workload, live from memory or finished from the store; NOT_FOUND otherwise."""
        w = self.workloads.get(name)
        if w is not None:
            return w
        ws, wid = names.workload_parts(name)
        async with self.uow() as uow:
            stored = await uow.store.finished_workload(ws, wid)
        if stored is None:
            raise NotFound("WORKLOAD_NOT_FOUND", f"{name} does not exist", workload=name)
        return stored

    def engine_of(self, w: Workload) -> GroupScheduler:
        return self.engines[names.group_id(w.resource_group)]

    def queue_position(self, w: Workload) -> int:
        engine = self.engines.get(names.group_id(w.resource_group))
        return engine.queue_position(w) if engine is not None and w.name in engine.workloads else 0

    # ---- the decision loop -------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="scheduler-loop")
        self.kick()

    async def stop(self) -> None:
        """Let a cycle in progress finish its write, then stop the loop."""
        if self._task is not None:
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
                    await self.recover()
                more = True
                await asyncio.sleep(1.0)
            if more:
                self._kick.set()
            await asyncio.sleep(0)  # let API calls in between cycles

    async def run_cycle(self) -> bool:
        """One cycle over every group; True when there is more to do at once."""
        more = False
        async with self.locked():
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
        """Store a cycle's decisions with their events, in one transaction."""
        touched: dict[str, Workload] = {}
        async with self.write() as uow:
            for verb, workloads, previous in (
                ("admitted", changes.admitted, State.PENDING),
                ("preempted", changes.preempting, State.ADMITTED),
                ("evicted", changes.preempted, State.PREEMPTING),
            ):
                for w in workloads:
                    touched[w.name] = w
                    await uow.outbox.add(mapping.workload_event(verb, bump(w, now), previous))
            for w, previous_code in changes.reasons:
                if w.name in touched or w.pending_code == "QUEUED_BEHIND":
                    continue  # where a workload waits in the queue is shown, not stored
                touched[w.name] = w
                await uow.outbox.add(mapping.pending_reason_changed(bump(w, now), previous_code))
            await uow.store.put_workloads(touched.values())
            await uow.commit()
        stats.admitted_total += len(changes.admitted)
        stats.preempted_total += len(changes.preempting)
        for w in changes.admitted:
            if w.enqueue_time is not None:
                stats.waits.append((now - w.enqueue_time).total_seconds())
            stats.admit_times.append(time.monotonic())

    async def finished(self, workspace: str | None) -> list[Workload]:
        """The finished workloads (of `workspace`, or all), from the store."""
        async with self.uow() as uow:
            return await uow.store.finished_workloads(workspace)


def bump(w: Workload, now: dt.datetime) -> Workload:
    """A new version of `w`, changed at `now`."""
    w.version += 1
    w.update_time = now
    return w


__all__ = ["Scheduler", "bump"]
