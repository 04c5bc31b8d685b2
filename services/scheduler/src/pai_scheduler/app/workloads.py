"""Workloads: their owners submit, change, finish, requeue and delete them, through the single writer.

Creates that arrive together are written in one transaction (group commit): under load the lock
and the commit, not the decision, bound how fast owners submit. The names and request ids of every
stored workload are kept in memory, so a create reads nothing from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from dataclasses import dataclass, field

from pai_common.errors import AlreadyExists, DomainError, FailedPrecondition, bad_request
from pai_common.pagination import page
from pai_scheduler import mapping
from pai_scheduler.app.engine import Scheduler, bump
from pai_scheduler.app.requests import request_id_conflict
from pai_scheduler.domain import filters, names
from pai_scheduler.domain.explain import Explanation, explain_pending
from pai_scheduler.domain.records import QuotaRecord
from pai_scheduler.domain.workload import State, Workload

WorkloadView = tuple[Workload, int]
"""A workload and its place in its queue (0: not queued)."""


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


class Workloads:
    """The workload use cases."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler
        self._creates: list[_Create] = []
        self._flusher: asyncio.Task[None] | None = None

    def view(self, w: Workload) -> WorkloadView:
        return w, self._s.queue_position(w)

    async def drain(self) -> None:
        """Wait until the creates already accepted are written (before the scheduler stops)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    # ---- reads -------------------------------------------------------------------------------

    async def get(self, name: str) -> WorkloadView:
        """Under the writer's lock: a cycle changes workloads in memory before it commits them with
        their new versions, and a read in between would show new content under the old etag."""
        async with self._s.lock:
            return self.view(await self._s.workload(name))

    async def list_workloads(
        self, parent: str, expression: str, order_by: str, page_size: int, page_token: str
    ) -> tuple[list[WorkloadView], str]:
        """The workloads of workspace `parent` (`workspaces/-`: of every one), finished ones from the
        store only when the filter may want them."""
        s = self._s
        order = filters.workload_order(order_by)
        terms = filters.parse(expression, filters.WORKLOAD_FIELDS)
        states = filters.values_of(terms, "state")
        every = parent == "workspaces/-"
        async with s.lock:  # as `get`: no content a cycle has not committed yet
            # copies: the finished ones are read from the store below, and a cycle may run meanwhile
            live = {
                w.name: (copy.copy(w), s.queue_position(w))
                for w in s.workloads.values()
                if every or w.workspace == parent
            }
        items = [w for w, _ in live.values()]
        if states is None or "FINISHED" in states:
            items += await s.finished(None if every else parent.split("/")[1])
        items = [w for w in items if filters.workload_matches(w, terms)]
        filters.sort_workloads(items, order)
        found, token = page(items, page_size, page_token, parent=parent, filter=expression, order=order)
        return [live[w.name] if w.name in live else self.view(w) for w in found], token

    async def explain(self, name: str) -> Explanation:
        """Why a workload waits, worked out now (under the lock: trial placements are given back
        before anything else runs)."""
        s = self._s
        async with s.lock:
            w = await s.workload(name)
            now = s.clock()
            if w.state != State.PENDING or w.name not in s.workloads:
                return Explanation(w.name, w.state, now)
            return Explanation(w.name, w.state, now, explain_pending(s.engine_of(w), w))

    # ---- create ------------------------------------------------------------------------------

    def resolve_quota(self, workspace: str, quota: str, resource_group: str) -> QuotaRecord:
        """The quota a workload of `workspace` is charged to: the one named, else the workspace's
        only one (in `resource_group`, when named)."""
        s = self._s
        if quota:
            q = s.quotas.get(quota)
            if q is None or q.spec.workspace != workspace:  # one answer: no probing other workspaces' quotas
                raise FailedPrecondition(
                    "QUOTA_WORKSPACE_MISMATCH", f"{quota} is not a quota of {workspace}", quota=quota
                )
            if resource_group and q.resource_group != names.group_id(resource_group):
                raise bad_request(
                    "workload.resource_group",
                    f"{quota} is not in {resource_group}",
                    "RESOURCE_GROUP_MISMATCH",
                    description=f"does not match the quota {quota}",
                )
            return q
        mine = [q for q in s.quotas.values() if q.spec.workspace == workspace]
        if resource_group:
            s.group(resource_group)
            mine = [q for q in mine if q.resource_group == names.group_id(resource_group)]
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

    async def create(self, w: Workload, request_id: str) -> WorkloadView:
        """Queue a new workload, charged to the quota it names or its workspace's only one."""
        s = self._s
        q = self.resolve_quota(w.workspace, w.quota, w.resource_group)
        w.quota, w.resource_group = q.name, f"resourceGroups/{q.resource_group}"
        now = s.clock()
        w.uid = str(uuid.uuid4())
        w.create_time = w.update_time = w.enqueue_time = now
        w.grace_seconds = min(w.grace_seconds, s.groups[q.resource_group].policy.max_grace)
        pending = _Create(w, request_id, mapping.workload_event("created", w).row())
        self._creates.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_creates(), name="scheduler-creates")
        return self.view(await pending.future)

    async def _flush_creates(self) -> None:
        while self._creates:
            batch, self._creates = self._creates, []
            try:
                await self._create_batch(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                else:  # one create's row may have failed them all: write each on its own
                    for c in batch:
                        if c.future.done():
                            continue
                        try:
                            await self._create_batch([c])
                        except Exception as single:
                            _fail(c, single)
            self._s.kick()

    async def _create_batch(self, batch: list[_Create]) -> None:
        s = self._s
        async with s.locked():
            accepted: list[_Create] = []
            by_name: dict[str, _Create] = {}
            by_request: dict[str, _Create] = {}
            for c in batch:
                try:
                    if not await self._to_insert(c, by_name, by_request):
                        continue
                except DomainError as exc:
                    _fail(c, exc)
                    continue
                by_name[c.workload.name] = c
                if c.request_id:
                    by_request[c.request_id] = c
                accepted.append(c)
            if accepted:
                await self._insert(accepted)
            for c in batch:
                if not c.future.done():
                    c.future.set_result(c.same_as.workload if c.same_as is not None else c.workload)

    async def _to_insert(
        self, c: _Create, by_name: dict[str, _Create], by_request: dict[str, _Create]
    ) -> bool:
        """Whether create `c` is to be inserted with its batch (`by_name`, `by_request`: the ones
        accepted before it); False for a retry (answered here) or the same request twice in the
        batch; a domain error when it is refused."""
        s = self._s
        w, rid = c.workload, c.request_id
        target = s.request_ids.get(rid) if rid else None
        if target is not None:
            if target != w.name:
                raise request_id_conflict()
            existing = await s.workload(w.name)  # a retry
            if not c.future.done():
                c.future.set_result(existing)
            return False
        first = by_name.get(w.name)
        if first is not None and rid and first.request_id == rid:
            c.same_as = first  # the same request twice in one batch
            return False
        if rid and rid in by_request:
            raise request_id_conflict()
        if w.name in s.workloads or w.name in s.finished_names or first is not None:
            raise AlreadyExists("WORKLOAD_ALREADY_EXISTS", f"{w.name} exists", workload=w.name)
        q = s.quota(w.quota)
        if s.engines[q.resource_group].quotas.children.get(q.name):
            raise FailedPrecondition(
                "QUOTA_HAS_CHILDREN",
                f"{q.name} has child quotas; charge workloads to a leaf quota",
                quota=q.name,
            )
        return True

    async def _insert(self, accepted: list[_Create]) -> None:
        """Write the accepted creates and their events in one transaction, then queue them."""
        s = self._s
        for c in accepted:
            c.workload.seq = s.next_seq()
        async with s.write() as uow:
            await uow.store.insert_workloads([(c.workload, c.request_id or None) for c in accepted])
            await uow.outbox.add_rows([c.event for c in accepted])
            await uow.commit()
        for c in accepted:
            w = c.workload
            s.workloads[w.name] = w
            if c.request_id:
                s.request_ids[c.request_id] = w.name
            s.engines[s.quota(w.quota).resource_group].add(w)

    # ---- the owner's changes -----------------------------------------------------------------

    async def update(self, name: str, etag: str, change: mapping.WorkloadChange) -> WorkloadView:
        """Change a workload's labels, display name or priority (which moves it in its queue)."""
        s = self._s
        async with s.locked():
            w = s.workloads.get(name)
            if w is None:
                raise (await self._finished_error(name, "updated"))
            w.check_etag(etag)
            priority = change(w)
            if priority is not None and priority != w.priority:
                s.engine_of(w).reprioritise(w, priority)
            async with s.write() as uow:
                await uow.outbox.add(mapping.workload_event("updated", bump(w, s.clock())))
                await uow.store.put_workload(w)
                await uow.commit()
        s.kick()
        return self.view(w)

    async def _finished_error(self, name: str, verb: str) -> Exception:
        await self._s.workload(name)  # NotFound when it never existed
        return FailedPrecondition(
            "ILLEGAL_STATE_TRANSITION", f"{name} is FINISHED and cannot be {verb}", workload=name
        )

    async def finish(self, name: str, etag: str, outcome: str, message: str) -> WorkloadView:
        """The owner is done with a workload: FINISHED, whatever it held freed. Finishing a finished
        one again with the same outcome is a no-op."""
        s = self._s
        async with s.locked():
            w = s.workloads.get(name)
            if w is None:
                done = await s.workload(name)
                if done.outcome == outcome:
                    return self.view(done)
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION", f"{name} already finished as {done.outcome}", workload=name
                )
            w.check_etag(etag)
            now = s.clock()
            previous = s.engine_of(w).finish(w, outcome, message, now)
            del s.workloads[name]
            async with s.write() as uow:
                await uow.outbox.add(mapping.workload_event("finished", bump(w, now), previous))
                await uow.store.put_workload(w)
                await uow.commit()
            s.finished_names.add(name)
        s.kick()
        return self.view(w)

    async def requeue(self, name: str, etag: str, reason: str, reset: bool) -> WorkloadView:
        """The owner gives a placement back (or acts on a preemption): PENDING again, at its old place
        in the queue, or with `reset` behind everything queued since."""
        s = self._s
        async with s.locked():
            w = s.workloads.get(name)
            if w is None:
                raise (await self._finished_error(name, "requeued"))
            w.check_etag(etag)
            if w.state == State.PENDING:
                raise FailedPrecondition(
                    "ILLEGAL_STATE_TRANSITION", f"{name} is PENDING: nothing to give back", workload=name
                )
            now = s.clock()
            previous = s.engine_of(w).requeue(w, now, s.next_seq() if reset else None)
            async with s.write() as uow:
                await uow.outbox.add(
                    mapping.workload_event("requeued", bump(w, now), previous, reason=reason)
                )
                await uow.store.put_workload(w)
                await uow.commit()
        s.kick()
        return self.view(w)

    async def delete(self, name: str, etag: str) -> None:
        """Delete a workload, finishing it first (CANCELLED) when it holds resources; its name and
        request id are free again."""
        s = self._s
        async with s.locked():
            w = await s.workload(name)
            w.check_etag(etag)
            now = s.clock()
            async with s.write() as uow:
                if w.name in s.workloads:
                    if w.holds or w.state == State.PREEMPTED:
                        previous = s.engine_of(w).finish(w, "CANCELLED", "deleted", now)
                        await uow.outbox.add(mapping.workload_event("finished", bump(w, now), previous))
                    else:
                        s.engine_of(w).forget(w)
                await uow.outbox.add(mapping.workload_event("deleted", w))
                await uow.store.delete_workload(*names.workload_parts(name))
                await uow.commit()
            s.workloads.pop(name, None)
            s.finished_names.discard(name)
            for rid in [r for r, n in s.request_ids.items() if n == name]:
                del s.request_ids[rid]
        s.kick()


def _fail(c: _Create, exc: BaseException) -> None:
    if not c.future.done():
        c.future.set_exception(exc)
