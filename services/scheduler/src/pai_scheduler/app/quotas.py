"""Quotas: create, change, hold, resume and delete them, through the single writer; their usage."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping

from pai_common.errors import AlreadyExists, FailedPrecondition, bad_request
from pai_common.pagination import page
from pai_scheduler import mapping
from pai_scheduler.app.engine import Scheduler
from pai_scheduler.app.requests import same_request
from pai_scheduler.domain import filters
from pai_scheduler.domain.records import QuotaRecord
from pai_scheduler.domain.usage import QuotaUsage, Tally, quota_usage, tallies

QuotaView = tuple[QuotaRecord, QuotaUsage]


class Quotas:
    """The quota use cases."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def view(self, q: QuotaRecord, tally: Mapping[str, Tally] | None = None) -> QuotaView:
        """`q` with its usage now (`tally`: every quota's, when already worked out)."""
        s = self._s
        tally = tallies(s.workloads.values()) if tally is None else tally
        return q, quota_usage(s.engines[q.resource_group].quotas, q.spec, tally, s.clock())

    def get(self, name: str) -> QuotaView:
        return self.view(self._s.quota(name))

    def list_quotas(
        self, parent: str, expression: str, page_size: int, page_token: str
    ) -> tuple[list[QuotaView], str]:
        """The quotas of group `parent` (`resourceGroups/-`: of every group) that pass `expression`."""
        s = self._s
        rg = parent.split("/")[1]
        if rg != "-":
            s.group(rg)
        quotas = sorted((q for q in s.quotas.values() if rg in ("-", q.resource_group)), key=lambda q: q.name)
        terms = filters.parse(expression, filters.QUOTA_FIELDS)
        quotas = [q for q in quotas if filters.quota_matches(q, terms)]
        items, token = page(quotas, page_size, page_token, parent=parent, filter=expression)
        tally = tallies(s.workloads.values())
        return [self.view(q, tally) for q in items], token

    async def create(self, record: QuotaRecord, request_id: str) -> QuotaView:
        """Create a quota (a retry with the same `request_id` gets the one it created)."""
        s = self._s
        async with s.locked():
            s.group(record.resource_group)
            existing = s.quotas.get(record.name)
            if existing is not None:
                if await self._created_by(request_id, record):
                    return self.view(existing)
                raise AlreadyExists("QUOTA_ALREADY_EXISTS", f"{record.name} exists", quota=record.name)
            await self._save(record, None, request_id)
        s.kick()
        return self.view(record)

    async def _created_by(self, request_id: str, record: QuotaRecord) -> bool:
        if not request_id:
            return False
        async with self._s.uow() as uow:
            created = await uow.store.quota_of_request(request_id)
        return same_request(created, (record.resource_group, record.name.rsplit("/", 1)[1]))

    async def update(self, name: str, etag: str, change: Callable[[QuotaRecord], None]) -> QuotaView:
        """Change a quota's limits, weight, policy or labels (never its parent, workspace or state)."""
        s = self._s
        async with s.locked():
            existing = s.quota(name)
            existing.check_etag(etag)
            record = copy.deepcopy(existing)
            change(record)
            await self._save(record, existing)
        s.kick()
        return self.view(record)

    async def _save(self, record: QuotaRecord, existing: QuotaRecord | None, request_id: str = "") -> None:
        """Check `record` against its tree, then store it with its event and put it in memory."""
        s = self._s
        engine = s.engines[record.resource_group]
        if record.spec.parent and record.spec.parent.split("/")[1] != record.resource_group:
            raise bad_request(
                "quota.parent",
                "the parent quota must be in the same resource group",
                "PARENT_QUOTA_NOT_FOUND",
                description="must be a quota of the same resource group",
            )
        if record.spec.parent and any(w.quota == record.spec.parent for w in s.workloads.values()):
            raise FailedPrecondition(
                "QUOTA_IN_USE",
                f"{record.spec.parent} has workloads charged to it and cannot get children",
                quota=record.spec.parent,
            )
        engine.quotas.validate(record.spec, replacing=record.name if existing else None)
        now = s.clock()
        if existing is None:
            record.uid, record.create_time, record.version = str(uuid.uuid4()), now, 1
        else:
            record.uid, record.create_time = existing.uid, existing.create_time
            record.version = existing.version + 1
        record.update_time = now
        async with s.write() as uow:
            await uow.store.put_quota(record, request_id or None)
            await uow.outbox.add(mapping.quota_event("created" if existing is None else "updated", record))
            await uow.commit()
        s.quotas[record.name] = record
        engine.quotas.put(record.spec)
        engine.touch()

    async def set_held(self, name: str, etag: str, held: bool) -> QuotaView:
        """Hold a quota (nothing more is admitted under it) or resume it."""
        s = self._s
        async with s.locked():
            q = s.quota(name)
            q.check_etag(etag)
            if q.spec.held == held:
                return self.view(q)
            new = copy.deepcopy(q)
            new.spec.held = held
            new.version += 1
            new.update_time = s.clock()
            async with s.write() as uow:
                await uow.store.put_quota(new)
                await uow.outbox.add(mapping.quota_event("state_changed", new, q.spec.held))
                await uow.commit()
            s.quotas[name] = new
            s.engines[new.resource_group].quotas.put(new.spec)
            s.engines[new.resource_group].touch()
        s.kick()
        return self.view(new)

    async def delete(self, name: str, etag: str) -> None:
        """Delete a quota without children or unfinished workloads."""
        s = self._s
        async with s.locked():
            q = s.quota(name)
            q.check_etag(etag)
            engine = s.engines[q.resource_group]
            if engine.quotas.children.get(name):
                raise FailedPrecondition("QUOTA_HAS_CHILDREN", f"{name} has child quotas", quota=name)
            if any(w.quota == name for w in s.workloads.values()):
                raise FailedPrecondition("QUOTA_IN_USE", f"{name} has unfinished workloads", quota=name)
            async with s.write() as uow:
                await uow.store.delete_quota(q.resource_group, name.rsplit("/", 1)[1])
                await uow.outbox.add(mapping.quota_event("deleted", q))
                await uow.commit()
            del s.quotas[name]
            engine.quotas.remove(name)
            engine.queues.pop(name, None)
            engine.touch()
