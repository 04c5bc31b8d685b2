"""The scheduler's store: records to rows and back, and a unit of work with the outbox.

The scheduler keeps its state in memory and writes every change through here in the same
transaction as the events it causes; at start it reads everything back (`load`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pai_common import uow
from pai_common.clock import utcnow
from pai_scheduler.db.rows import EVENTS, NodeRow, QuotaRow, ResourceGroupRow, WorkloadRow
from pai_scheduler.domain.capacity import Policy
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.records import Gpu, NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.workload import PodPlacement, PodSet, Preemption, Workload


def _ts(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


# ---- records <-> JSON ----------------------------------------------------------------------------


def group_data(g: ResourceGroup) -> dict[str, Any]:
    return {
        "display_name": g.display_name,
        "description": g.description,
        "labels": g.labels,
        "policy": dataclasses.asdict(g.policy),
    }


def node_data(n: NodeRecord) -> dict[str, Any]:
    return {
        "source": n.source,
        "cpu_milli": n.cpu_milli,
        "memory_bytes": n.memory_bytes,
        "gpus": [dataclasses.asdict(g) for g in n.gpus],
        "labels": n.labels,
        "display_name": n.display_name,
        "provider_id": n.provider_id,
        "ready": n.ready,
        "state_message": n.state_message,
        "cordoned": n.cordoned,
        "cordon_reason": n.cordon_reason,
        "report_time": _ts(n.report_time),
    }


def quota_data(q: QuotaRecord) -> dict[str, Any]:
    return {
        "spec": dataclasses.asdict(q.spec),
        "display_name": q.display_name,
        "description": q.description,
        "labels": q.labels,
    }


def workload_data(w: Workload) -> dict[str, Any]:
    p = w.preemption
    return {
        "quota": w.quota,
        "resource_group": w.resource_group,
        "pod_sets": [dataclasses.asdict(ps) for ps in w.pod_sets],
        "priority": w.priority,
        "preemptible": w.preemptible,
        "owner": w.owner,
        "owner_kind": w.owner_kind,
        "display_name": w.display_name,
        "labels": w.labels,
        "grace_seconds": w.grace_seconds,
        "pending": [w.pending_code, w.pending_reason, w.pending_metadata, list(w.victims)],
        "placements": [dataclasses.asdict(pp) for pp in w.placements],
        "preemption": None
        if p is None
        else [p.reason, p.message, p.preemptor, _ts(p.preempt_time), _ts(p.deadline)],
        "outcome": w.outcome,
        "finish_message": w.finish_message,
        "requeue_count": w.requeue_count,
        "enqueue_time": _ts(w.enqueue_time),
        "admit_time": _ts(w.admit_time),
        "finish_time": _ts(w.finish_time),
        "admit_seq": w.admit_seq,
    }


def group_from(row: ResourceGroupRow) -> ResourceGroup:
    d = row.data
    return ResourceGroup(
        row.id, row.uid, d["display_name"], d["description"], d["labels"], Policy(**d["policy"]),
        row.create_time, row.update_time, row.version,
    )  # fmt: skip


def node_from(row: NodeRow) -> NodeRecord:
    d = row.data
    return NodeRecord(
        row.resource_group, row.id, row.uid, d["source"], d["cpu_milli"], d["memory_bytes"],
        [Gpu(**g) for g in d["gpus"]], d["labels"], d["display_name"], d["provider_id"], d["ready"],
        d["state_message"], d["cordoned"], d["cordon_reason"], _dt(d["report_time"]),
        row.create_time, row.update_time, row.version,
    )  # fmt: skip


def quota_from(row: QuotaRow) -> QuotaRecord:
    d = row.data
    return QuotaRecord(
        QuotaSpec(**d["spec"]), row.uid, d["display_name"], d["description"], d["labels"],
        row.create_time, row.update_time, row.version,
    )  # fmt: skip


def workload_from(row: WorkloadRow) -> Workload:
    d = row.data
    code, reason, meta, victims = d["pending"]
    p = d["preemption"]
    return Workload(
        name=f"workspaces/{row.workspace}/workloads/{row.id}",
        uid=row.uid,
        quota=d["quota"],
        resource_group=d["resource_group"],
        pod_sets=tuple(
            PodSet(
                **{
                    **ps,
                    "allowed_gpu_models": tuple(ps["allowed_gpu_models"]),
                    "node_selector": tuple(tuple(kv) for kv in ps["node_selector"]),
                }
            )
            for ps in d["pod_sets"]
        ),
        priority=d["priority"],
        preemptible=d["preemptible"],
        owner=d["owner"],
        owner_kind=d["owner_kind"],
        display_name=d["display_name"],
        labels=d["labels"],
        grace_seconds=d["grace_seconds"],
        state=row.state,  # type: ignore[arg-type]
        seq=row.seq,
        pending_code=code,
        pending_reason=reason,
        pending_metadata=meta,
        victims=tuple(victims),
        placements=tuple(
            PodPlacement(**{**pp, "gpu_indices": tuple(pp["gpu_indices"])}) for pp in d["placements"]
        ),
        preemption=None
        if p is None
        else Preemption(p[0], p[1], p[2], _dt(p[3]) or utcnow(), _dt(p[4]) or utcnow()),
        outcome=d["outcome"],
        finish_message=d["finish_message"],
        requeue_count=d["requeue_count"],
        enqueue_time=_dt(d["enqueue_time"]),
        admit_time=_dt(d["admit_time"]),
        finish_time=_dt(d["finish_time"]),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
        admit_seq=d["admit_seq"],
    )


# ---- loading and writing -------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Everything the scheduler keeps, as read at start."""

    groups: list[ResourceGroup] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    quotas: list[QuotaRecord] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)  # FINISHED ones excluded


class Store:
    """Writes records inside one transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def load(self) -> Snapshot:
        s = self.session
        return Snapshot(
            [group_from(r) for r in (await s.scalars(sa.select(ResourceGroupRow))).all()],
            [node_from(r) for r in (await s.scalars(sa.select(NodeRow))).all()],
            [quota_from(r) for r in (await s.scalars(sa.select(QuotaRow))).all()],
            [
                workload_from(r)
                for r in (
                    await s.scalars(sa.select(WorkloadRow).where(WorkloadRow.state != "FINISHED"))
                ).all()
            ],
        )

    async def workload_index(self) -> list[tuple[str, str, str | None]]:
        """(name, state, request_id) of every stored workload."""
        rows = await self.session.execute(
            sa.select(WorkloadRow.workspace, WorkloadRow.id, WorkloadRow.state, WorkloadRow.request_id)
        )
        return [(f"workspaces/{ws}/workloads/{wid}", state, rid) for ws, wid, state, rid in rows.all()]

    async def max_seq(self) -> int:
        return int(
            await self.session.scalar(sa.select(sa.func.coalesce(sa.func.max(WorkloadRow.seq), 0))) or 0
        )

    async def group_of_request(self, request_id: str) -> str | None:
        """The id of the group `request_id` created, if it created one."""
        return await self.session.scalar(
            sa.select(ResourceGroupRow.id).where(ResourceGroupRow.request_id == request_id)
        )

    async def quota_of_request(self, request_id: str) -> tuple[str, str] | None:
        """(group id, quota id) of the quota `request_id` created, if it created one."""
        row = (
            await self.session.execute(
                sa.select(QuotaRow.resource_group, QuotaRow.id).where(QuotaRow.request_id == request_id)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def finished_workload(self, workspace: str, workload_id: str) -> Workload | None:
        row = await self.session.get(WorkloadRow, (workspace, workload_id))
        return workload_from(row) if row is not None else None

    async def finished_workloads(self, workspace: str | None) -> list[Workload]:
        q = sa.select(WorkloadRow).where(WorkloadRow.state == "FINISHED")
        if workspace:
            q = q.where(WorkloadRow.workspace == workspace)
        return [workload_from(r) for r in (await self.session.scalars(q)).all()]

    async def put_group(self, g: ResourceGroup, request_id: str | None = None) -> None:
        await self._put(ResourceGroupRow, {"id": g.id}, g, group_data(g), request_id)

    async def put_node(self, n: NodeRecord, request_id: str | None = None) -> None:
        await self._put(
            NodeRow, {"resource_group": n.resource_group, "id": n.id}, n, node_data(n), request_id
        )

    async def put_quota(self, q: QuotaRecord, request_id: str | None = None) -> None:
        key = {"resource_group": q.resource_group, "id": q.name.rsplit("/", 1)[1]}
        await self._put(QuotaRow, key, q, quota_data(q), request_id)

    async def put_workload(self, w: Workload, request_id: str | None = None) -> None:
        ws, wid = w.name.split("/")[1], w.name.rsplit("/", 1)[1]
        extra = {"state": str(w.state), "seq": w.seq}
        await self._put(WorkloadRow, {"workspace": ws, "id": wid}, w, workload_data(w), request_id, extra)

    async def insert_workloads(self, items: list[tuple[Workload, str | None]]) -> None:
        """Insert new workloads (with their request ids) in one statement."""
        rows = [
            {
                "workspace": w.name.split("/")[1],
                "id": w.name.rsplit("/", 1)[1],
                "uid": w.uid,
                "request_id": rid or None,
                "state": str(w.state),
                "seq": w.seq,
                "data": workload_data(w),
                "create_time": w.create_time,
                "update_time": w.update_time,
                "version": w.version,
            }
            for w, rid in items
        ]
        if rows:
            await self.session.execute(sa.insert(WorkloadRow), rows)

    async def put_workloads(self, ws: Iterable[Workload]) -> None:
        for w in ws:
            await self.put_workload(w)

    async def _put(
        self,
        row_type: type[Any],
        key: dict[str, str],
        record: Any,
        data: dict[str, Any],
        request_id: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        values = {
            **key,
            "uid": record.uid,
            "data": data,
            "create_time": record.create_time,
            "update_time": record.update_time,
            "version": record.version,
            **(extra or {}),
        }
        # an UPDATE by primary key, and an INSERT only when it touched nothing: no read first
        where = [getattr(row_type, k) == v for k, v in key.items()]
        result = await self.session.execute(sa.update(row_type).where(*where).values(**values))
        if getattr(result, "rowcount", 0) == 0:
            await self.session.execute(sa.insert(row_type).values(**values, request_id=request_id or None))

    async def delete_group(self, group_id: str) -> None:
        await self._delete(ResourceGroupRow, group_id)

    async def delete_node(self, group_id: str, node_id: str) -> None:
        await self._delete(NodeRow, group_id, node_id)

    async def delete_quota(self, group_id: str, quota_id: str) -> None:
        await self._delete(QuotaRow, group_id, quota_id)

    async def delete_workload(self, workspace: str, workload_id: str) -> None:
        await self._delete(WorkloadRow, workspace, workload_id)

    async def _delete(self, row_type: type[Any], *key: str) -> None:
        row = await self.session.get(row_type, key)
        if row is not None:
            await self.session.delete(row)

    async def delete_nodes(self, resource_group: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in range(0, len(ids), 500):
            await self.session.execute(
                sa.delete(NodeRow).where(
                    NodeRow.resource_group == resource_group, NodeRow.id.in_(ids[i : i + 500])
                )
            )


class UnitOfWork(uow.UnitOfWork):
    """The chassis' transaction with the scheduler's store attached."""

    store: Store

    def opened(self) -> None:
        self.store = Store(self.session)


class UnitOfWorkFactory(uow.UnitOfWorkFactory[UnitOfWork]):
    def __init__(self, engine: AsyncEngine, on_commit: Callable[[], None] = lambda: None) -> None:
        super().__init__(engine, EVENTS.outbox, UnitOfWork, on_commit)
