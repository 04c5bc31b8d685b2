"""Resource groups: create, read, change and delete them, through the single writer."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable

from pai_common.errors import AlreadyExists, FailedPrecondition
from pai_common.pagination import page
from pai_scheduler import mapping
from pai_scheduler.app.engine import Scheduler
from pai_scheduler.app.requests import same_request
from pai_scheduler.domain.records import ResourceGroup
from pai_scheduler.domain.stats import DecisionStats
from pai_scheduler.domain.usage import GroupUsage, group_usage

GroupView = tuple[ResourceGroup, GroupUsage]


class ResourceGroups:
    """The resource group use cases."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def view(self, g: ResourceGroup) -> GroupView:
        """`g` with its capacity, allocation, guarantees and counts as they are now."""
        s = self._s
        live = (w for w in s.workloads.values() if w.resource_group == g.name)
        return g, group_usage(s.engines[g.id].quotas, list(s.nodes[g.id].values()), live)

    def get(self, name: str) -> GroupView:
        return self.view(self._s.group(name))

    def list_groups(self, page_size: int, page_token: str) -> tuple[list[GroupView], str]:
        groups = sorted(self._s.groups.values(), key=lambda g: g.id)
        items, token = page(groups, page_size, page_token)
        return [self.view(g) for g in items], token

    async def create(self, group: ResourceGroup, request_id: str) -> GroupView:
        """Create `group` (a retry with the same `request_id` gets the one it created)."""
        s = self._s
        async with s.locked():
            if group.id in s.groups:
                existing = s.groups[group.id]
                if await self._created_by(request_id, group.id):
                    return self.view(existing)
                raise AlreadyExists(
                    "RESOURCE_GROUP_ALREADY_EXISTS", f"{group.name} exists", resource_group=group.name
                )
            now = s.clock()
            group.uid, group.create_time, group.update_time = str(uuid.uuid4()), now, now
            async with s.write() as uow:
                await uow.store.put_group(group, request_id or None)
                await uow.outbox.add(mapping.group_event("created", group))
                await uow.commit()
            s.groups[group.id] = group
            s.nodes[group.id] = {}
            s.stats[group.id] = DecisionStats()
            s.rebuild_group(group.id)
            return self.view(group)

    async def _created_by(self, request_id: str, group_id: str) -> bool:
        if not request_id:
            return False
        async with self._s.uow() as uow:
            created = await uow.store.group_of_request(request_id)
        return same_request(created, group_id)

    async def update(self, name: str, etag: str, change: Callable[[ResourceGroup], None]) -> GroupView:
        """Change a group's settings; a new policy reshapes its placement engine."""
        s = self._s
        async with s.locked():
            current = s.group(name)
            current.check_etag(etag)
            group = copy.deepcopy(current)
            change(group)
            group.version += 1
            group.update_time = s.clock()
            async with s.write() as uow:
                await uow.store.put_group(group)
                await uow.outbox.add(mapping.group_event("updated", group))
                await uow.commit()
            s.groups[group.id] = group
            s.reshape(group.id)
        s.kick()
        return self.view(group)

    async def delete(self, name: str, etag: str, force: bool) -> None:
        """Delete an empty group; with `force`, its nodes and quotas too, never unfinished workloads."""
        s = self._s
        async with s.locked():
            g = s.group(name)
            g.check_etag(etag)
            live = [w for w in s.workloads.values() if w.resource_group == g.name]
            quotas = [q for q in s.quotas.values() if q.resource_group == g.id]
            if (live or s.nodes[g.id] or quotas) and not force:
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
            async with s.write() as uow:
                await uow.store.delete_nodes(g.id, list(s.nodes[g.id]))
                for q in quotas:
                    await uow.store.delete_quota(g.id, q.name.rsplit("/", 1)[1])
                await uow.store.delete_group(g.id)
                await uow.outbox.add(mapping.group_event("deleted", g))
                await uow.commit()
            for q in quotas:
                del s.quotas[q.name]
            del s.groups[g.id], s.nodes[g.id], s.engines[g.id]
