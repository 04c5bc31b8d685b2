"""The scheduler's gRPC servicers: check, call the scheduler, map back. No scheduling rules here."""

from __future__ import annotations

import copy
import datetime as dt
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import empty_pb2

from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
    stats_pb2,
    stats_pb2_grpc,
    workload_pb2,
    workload_pb2_grpc,
)
from pai_common import fieldmask, pagination, wire
from pai_common.errors import FieldViolation, InvalidArgument
from pai_scheduler import mapping
from pai_scheduler.app.engine import Scheduler
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts, add
from pai_scheduler.domain.records import NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.scheduling import Failure
from pai_scheduler.domain.workload import PodPlacement, PodSet, State, Workload
from pai_scheduler.inventory import InventoryError, parse_openb_nodes

Ctx: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")


def _page(request: Any, items: Sequence[T], **query: Any) -> tuple[list[T], str]:
    """One page of an in-memory list; the token is the offset, bound to the query."""
    size = pagination.page_size(request.page_size)
    fp = pagination.fingerprint(**query)
    start = pagination.decode_token(request.page_token, fp, int) or 0
    page = list(items[start : start + size])
    token = pagination.PageToken(start + size, fp).encode() if start + size < len(items) else ""
    return page, token


def _bad(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(reason, message, violations=[FieldViolation(field, message)])


# ---- resource groups -----------------------------------------------------------------------------


class ResourceGroupServicer(resource_group_pb2_grpc.ResourceGroupServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def render(self, g: ResourceGroup) -> resource_group_pb2.ResourceGroup:
        s = self._s
        engine = s.engines[g.id]
        nodes = s.nodes[g.id].values()
        live = [w for w in s.workloads.values() if w.resource_group == g.name]
        guaranteed: Amounts = {}
        for spec in engine.quotas.specs.values():
            if not spec.parent:
                guaranteed = add(guaranteed, spec.min)
        return mapping.resource_group(
            g,
            capacity=engine.quotas.capacity,
            allocated=engine.quotas.usage[""],
            guaranteed=guaranteed,
            nodes=len(nodes),
            schedulable=sum(1 for n in nodes if n.ready and not n.cordoned),
            pending=sum(1 for w in live if w.state == State.PENDING),
            admitted=sum(1 for w in live if w.holds),
        )

    async def CreateResourceGroup(
        self, request: resource_group_pb2.CreateResourceGroupRequest, context: Ctx
    ) -> resource_group_pb2.ResourceGroup:
        m = request.resource_group
        g = ResourceGroup(
            request.resource_group_id,
            "",
            m.display_name,
            m.description,
            dict(m.labels),
            mapping.policy_from(m.scheduling_policy),
        )
        return self.render(await self._s.create_group(g, request.request_id))

    async def GetResourceGroup(
        self, request: resource_group_pb2.GetResourceGroupRequest, context: Ctx
    ) -> resource_group_pb2.ResourceGroup:
        return self.render(self._s.group(request.name))

    async def ListResourceGroups(
        self, request: resource_group_pb2.ListResourceGroupsRequest, context: Ctx
    ) -> resource_group_pb2.ListResourceGroupsResponse:
        groups = sorted(self._s.groups.values(), key=lambda g: g.id)
        page, token = _page(request, groups)
        return resource_group_pb2.ListResourceGroupsResponse(
            resource_groups=[self.render(g) for g in page], next_page_token=token
        )

    async def UpdateResourceGroup(
        self, request: resource_group_pb2.UpdateResourceGroupRequest, context: Ctx
    ) -> resource_group_pb2.ResourceGroup:
        m = request.resource_group
        current = self._s.group(m.name)
        from pai_scheduler.app.engine import check_etag

        check_etag(m.etag, current.version)
        fields = fieldmask.paths(
            request.update_mask.paths, ("display_name", "description", "labels", "scheduling_policy")
        )
        g = copy.deepcopy(current)
        if "display_name" in fields:
            g.display_name = m.display_name
        if "description" in fields:
            g.description = m.description
        if "labels" in fields:
            g.labels = dict(m.labels)
        if "scheduling_policy" in fields:
            g.policy = mapping.policy_from(m.scheduling_policy, g.policy)
        return self.render(await self._s.update_group(g))

    async def DeleteResourceGroup(
        self, request: resource_group_pb2.DeleteResourceGroupRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._s.delete_group(request.name, request.etag, request.force)
        return empty_pb2.Empty()


# ---- nodes ---------------------------------------------------------------------------------------


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def placed(self, rg: str) -> dict[str, list[tuple[PodSet, PodPlacement]]]:
        """The pods placed in group `rg`, by node: one walk over the workloads per call, not per node."""
        out: dict[str, list[tuple[PodSet, PodPlacement]]] = {}
        group = f"resourceGroups/{rg}"
        for w in self._s.workloads.values():
            if w.resource_group != group or not w.holds:
                continue
            by_set = {ps.name: ps for ps in w.pod_sets}
            for p in w.placements:
                out.setdefault(p.node, []).append((by_set[p.pod_set], p))
        return out

    def render(
        self, n: NodeRecord, placed: dict[str, list[tuple[PodSet, PodPlacement]]] | None = None
    ) -> node_pb2.Node:
        if placed is None:
            placed = self.placed(n.resource_group)
        allocated: Amounts = {}
        per_card = [0] * len(n.gpus)
        pods_per_card = [0] * len(n.gpus)
        pods = 0
        for ps, p in placed.get(n.id, []):
            pods += 1
            allocated = add(allocated, {CPU: ps.cpu_milli, MEMORY: ps.memory_bytes})
            for i in p.gpu_indices:
                if i < len(per_card):
                    per_card[i] += p.gpu_milli
                    pods_per_card[i] += 1
            if p.gpu_indices:
                amount = p.gpu_milli * len(p.gpu_indices)
                allocated = add(allocated, {GPU: amount, f"gpu/{p.gpu_model}": amount})
        return mapping.node(n, allocated, per_card, pods_per_card, pods)

    @staticmethod
    def record(rg: str, node_id: str, m: node_pb2.Node) -> NodeRecord:
        indices = [g.index for g in m.gpus]
        if sorted(indices) != list(range(len(indices))):
            raise _bad("node.gpus", "GPU indices must be 0..n-1, each once", "INVALID_NODE_GPUS")
        return NodeRecord(
            rg,
            node_id,
            "",
            mapping.SOURCES.get(m.source, "LOCAL"),
            m.cpu_milli,
            m.memory_bytes,
            mapping.gpus_from(m),
            dict(m.labels),
            m.display_name,
            m.provider_id or node_id,
        )

    async def RegisterNode(self, request: node_pb2.RegisterNodeRequest, context: Ctx) -> node_pb2.Node:
        rg = request.parent.split("/")[1]
        self._s.group(rg)
        existing = self._s.nodes[rg].get(request.node_id)
        n = self.record(rg, request.node_id, request.node)
        if existing is not None and (existing.source, existing.provider_id) != (n.source, n.provider_id):
            from pai_common.errors import AlreadyExists

            raise AlreadyExists("NODE_ALREADY_EXISTS", f"{existing.name} exists", node=existing.name)
        # the same source and provider id registering again (an agent restarting) refreshes the node
        await self._s.put_nodes(rg, [n], request_id=request.request_id)
        return self.render(self._s.nodes[rg][n.id])

    async def GetNode(self, request: node_pb2.GetNodeRequest, context: Ctx) -> node_pb2.Node:
        return self.render(self._s.node(request.name))

    async def ListNodes(self, request: node_pb2.ListNodesRequest, context: Ctx) -> node_pb2.ListNodesResponse:
        rg = request.parent.split("/")[1]
        if rg == "-":
            nodes = [n for g in sorted(self._s.nodes) for n in self._s.nodes[g].values()]
        else:
            self._s.group(rg)
            nodes = list(self._s.nodes[rg].values())
        nodes.sort(key=lambda n: (n.resource_group, n.id))
        nodes = _filter_nodes(nodes, request.filter)
        page, token = _page(request, nodes, parent=request.parent, filter=request.filter)
        placed: dict[str, dict[str, list[tuple[PodSet, PodPlacement]]]] = {}
        for n in page:
            if n.resource_group not in placed:
                placed[n.resource_group] = self.placed(n.resource_group)
        return node_pb2.ListNodesResponse(
            nodes=[self.render(n, placed[n.resource_group]) for n in page], next_page_token=token
        )

    async def UpdateNode(self, request: node_pb2.UpdateNodeRequest, context: Ctx) -> node_pb2.Node:
        m = request.node
        current = self._s.node(m.name)
        fields = fieldmask.paths(
            request.update_mask.paths, ("display_name", "labels", "cpu_milli", "memory_bytes", "gpus")
        )
        new = self.record(current.resource_group, current.id, m) if "gpus" in fields else None

        def change(n: NodeRecord) -> None:
            if "display_name" in fields:
                n.display_name = m.display_name
            if "labels" in fields:
                n.labels = dict(m.labels)
            if "cpu_milli" in fields:
                n.cpu_milli = m.cpu_milli
            if "memory_bytes" in fields:
                n.memory_bytes = m.memory_bytes
            if new is not None:
                n.gpus = new.gpus

        return self.render(await self._s.change_node(m.name, m.etag, change))

    async def DeleteNode(self, request: node_pb2.DeleteNodeRequest, context: Ctx) -> empty_pb2.Empty:
        await self._s.delete_node(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def CordonNode(self, request: node_pb2.CordonNodeRequest, context: Ctx) -> node_pb2.Node:
        def change(n: NodeRecord) -> None:
            n.cordoned, n.cordon_reason = True, request.reason

        return self.render(await self._s.change_node(request.name, request.etag, change, drain=request.drain))

    async def UncordonNode(self, request: node_pb2.UncordonNodeRequest, context: Ctx) -> node_pb2.Node:
        def change(n: NodeRecord) -> None:
            n.cordoned, n.cordon_reason = False, ""

        return self.render(await self._s.change_node(request.name, request.etag, change))

    async def ReportNodeHealth(
        self, request: node_pb2.ReportNodeHealthRequest, context: Ctx
    ) -> node_pb2.Node:
        now = self._s.clock()

        def change(n: NodeRecord) -> None:
            n.ready = request.state == node_pb2.Node.READY
            n.state_message, n.report_time = request.message, now

        return self.render(await self._s.change_node(request.name, "", change))

    async def ImportNodes(
        self, request: node_pb2.ImportNodesRequest, context: Ctx
    ) -> node_pb2.ImportNodesResponse:
        rg = request.parent.split("/")[1]
        self._s.group(rg)
        try:
            specs = parse_openb_nodes(
                request.csv_content,
                replicas=request.replicas or 1,
                gpu_memory_bytes=dict(request.gpu_memory_bytes),
                labels=dict(request.labels),
            )
        except InventoryError as exc:
            raise _bad("csv_content", str(exc), "INVALID_NODE_CSV") from exc
        from pai_scheduler.domain.records import Gpu

        records = [
            NodeRecord(
                rg,
                s.node_id,
                "",
                "SIMULATED",
                s.cpu_milli,
                s.memory_bytes,
                [Gpu(g.index, g.model, g.memory_bytes, g.uuid) for g in s.gpus],
                dict(s.labels),
                provider_id=s.provider_id,
            )
            for s in specs
        ]
        capacity: Amounts = {}
        for r in records:
            capacity = add(capacity, {CPU: r.cpu_milli, MEMORY: r.memory_bytes, GPU: 1000 * len(r.gpus)})
            for g in r.gpus:
                capacity = add(capacity, {f"gpu/{g.model}": 1000})
        if request.validate_only:
            existing = self._s.nodes[rg]
            created = sum(1 for r in records if r.id not in existing)
            deleted = (
                sum(1 for nid in existing if nid not in {r.id for r in records})
                if request.mode == node_pb2.ImportNodesRequest.REPLACE
                else 0
            )
            return node_pb2.ImportNodesResponse(
                created_count=created,
                updated_count=len(records) - created,
                deleted_count=deleted,
                capacity=mapping.resources(capacity),
            )
        created, updated, deleted = await self._s.put_nodes(
            rg, records, replace=request.mode == node_pb2.ImportNodesRequest.REPLACE
        )
        return node_pb2.ImportNodesResponse(
            created_count=created,
            updated_count=updated,
            deleted_count=deleted,
            capacity=mapping.resources(capacity),
        )


def _filter_nodes(nodes: list[NodeRecord], expression: str) -> list[NodeRecord]:
    if not expression.strip():
        return nodes
    terms = _terms(expression, ("schedulable", "cordoned", "gpu_model", "source", "state"))
    out = []
    for n in nodes:
        values = {
            "schedulable": str(n.ready and not n.cordoned).lower(),
            "cordoned": str(n.cordoned).lower(),
            "source": n.source,
            "state": "READY" if n.ready else "NOT_READY",
        }
        ok = True
        for key, allowed in terms:
            if key == "gpu_model":
                ok = ok and any(g.model in allowed for g in n.gpus)
            elif key.startswith("labels."):
                ok = ok and n.labels.get(key[7:]) in allowed
            else:
                ok = ok and values[key] in allowed
        if ok:
            out.append(n)
    return out


_TERM = re.compile(r'^\s*([a-z_]+(?:\.[A-Za-z0-9_./-]+)?)\s*=\s*("([^"]*)"|[A-Za-z0-9_./-]+)\s*$')


def _terms(expression: str, keys: Sequence[str]) -> list[tuple[str, set[str]]]:
    """An AIP-160 subset: `a = x AND (b = y OR b = z)`; every OR group names one field."""
    out: list[tuple[str, set[str]]] = []
    for part in re.split(r"\s+AND\s+", expression.strip()):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1]
        key: str | None = None
        values: set[str] = set()
        for alt in re.split(r"\s+OR\s+", part):
            m = _TERM.match(alt)
            if m is None:
                raise _bad(
                    "filter",
                    f"cannot parse {alt.strip()!r}; use field = value joined by AND/OR",
                    "INVALID_FILTER",
                )
            k, v = m.group(1), m.group(3) if m.group(3) is not None else m.group(2)
            if k not in keys and not k.startswith("labels."):
                raise _bad(
                    "filter", f"unknown field {k!r}; known: {', '.join(keys)}, labels.<key>", "INVALID_FILTER"
                )
            if key is not None and k != key:
                raise _bad("filter", "an OR group must compare one field", "INVALID_FILTER")
            key = k
            values.add(v)
        assert key is not None
        out.append((key, values))
    return out


# ---- quotas --------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What a quota's own workloads hold and wait for (`quota_usage` sums a subtree's)."""

    pending: Amounts = field(default_factory=dict)
    counts: Counter[State] = field(default_factory=Counter)


def tallies(s: Scheduler) -> dict[str, _Tally]:
    """Every quota's tally, from one walk over the workloads (not one per quota rendered)."""
    out: dict[str, _Tally] = {}
    for w in s.workloads.values():
        t = out.setdefault(w.quota, _Tally())
        t.counts[w.state] += 1
        if w.state == State.PENDING:
            t.pending = add(t.pending, w.request())
    return out


def quota_usage(s: Scheduler, q: QuotaRecord, tally: dict[str, _Tally] | None = None) -> quota_pb2.QuotaUsage:
    engine = s.engines[q.resource_group]
    tree = engine.quotas
    used = tree.usage.get(q.name, {})
    spec = q.spec
    borrowed = {r: v - spec.min.get(r, 0) for r, v in used.items() if v > spec.min.get(r, 0)}
    lent: Amounts = {}
    siblings = [c for c in tree.children.get(spec.parent, []) if c != q.name]
    for r, lo in spec.min.items():
        idle = max(0, lo - used.get(r, 0))
        limit = spec.lending_limit.get(r)
        lendable = idle if limit is None else min(idle, limit)
        taken = sum(max(0, tree.usage[c].get(r, 0) - tree.specs[c].min.get(r, 0)) for c in siblings)
        lent[r] = min(lendable, taken)
    tally = tallies(s) if tally is None else tally
    pending: Amounts = {}
    counts: Counter[State] = Counter()
    for name in tree.subtree(q.name):
        t = tally.get(name)
        if t is not None:
            pending = add(pending, t.pending)
            counts.update(t.counts)
    resources = {CPU, MEMORY, GPU} | {r for r in tree.capacity if r.startswith("gpu/")}
    available = {r: max(0, tree.room(q.name, r)) for r in resources}
    share = tree.dominant_share(q.name) * max(spec.weight, 1)
    return quota_pb2.QuotaUsage(
        admitted=mapping.resources(used),
        borrowed=mapping.resources(borrowed),
        lent=mapping.resources(lent),
        pending=mapping.resources(pending),
        available=mapping.resources(available),
        admitted_workload_count=counts[State.ADMITTED],
        pending_workload_count=counts[State.PENDING],
        preempting_workload_count=counts[State.PREEMPTING],
        dominant_share=share,
        weighted_share=tree.dominant_share(q.name),
        compute_time=wire.ts(s.clock()),
    )


class QuotaServicer(quota_pb2_grpc.QuotaServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def render(self, q: QuotaRecord, tally: dict[str, _Tally] | None = None) -> quota_pb2.Quota:
        return mapping.quota(q, quota_usage(self._s, q, tally))

    async def CreateQuota(self, request: quota_pb2.CreateQuotaRequest, context: Ctx) -> quota_pb2.Quota:
        name = f"{request.parent}/quotas/{request.quota_id}"
        m = request.quota
        record = QuotaRecord(mapping.quota_spec(name, m), "", m.display_name, m.description, dict(m.labels))
        return self.render(await self._s.put_quota(record, create=True, request_id=request.request_id))

    async def GetQuota(self, request: quota_pb2.GetQuotaRequest, context: Ctx) -> quota_pb2.Quota:
        return self.render(self._s.quota(request.name))

    async def ListQuotas(
        self, request: quota_pb2.ListQuotasRequest, context: Ctx
    ) -> quota_pb2.ListQuotasResponse:
        rg = request.parent.split("/")[1]
        if rg != "-":
            self._s.group(rg)
        quotas = sorted(
            (q for q in self._s.quotas.values() if rg in ("-", q.resource_group)), key=lambda q: q.name
        )
        if request.filter.strip():
            terms = _terms(request.filter, ("workspace", "parent", "state"))
            quotas = [
                q
                for q in quotas
                if all(
                    {"workspace": q.spec.workspace, "parent": q.spec.parent,
                     "state": "HELD" if q.spec.held else "ACTIVE"}.get(k, "") in v
                    for k, v in terms
                )
            ]  # fmt: skip
        page, token = _page(request, quotas, parent=request.parent, filter=request.filter)
        tally = tallies(self._s)
        return quota_pb2.ListQuotasResponse(
            quotas=[self.render(q, tally) for q in page], next_page_token=token
        )

    async def UpdateQuota(self, request: quota_pb2.UpdateQuotaRequest, context: Ctx) -> quota_pb2.Quota:
        m = request.quota
        current = self._s.quota(m.name)
        allowed = (
            "display_name", "description", "labels", "min", "max", "borrowing_limit", "lending_limit", "weight",
            "preemption_policy",
        )  # fmt: skip
        fields = fieldmask.paths(request.update_mask.paths, allowed)
        given = mapping.quota_spec(m.name, m)
        record = copy.deepcopy(current)
        for f in ("min", "max", "borrowing_limit", "lending_limit", "weight"):
            if f in fields:
                setattr(record.spec, f, getattr(given, f))
        if "preemption_policy" in fields:
            record.spec.reclaim, record.spec.within_quota = given.reclaim, given.within_quota
        for f in ("display_name", "description"):
            if f in fields:
                setattr(record, f, getattr(m, f))
        if "labels" in fields:
            record.labels = dict(m.labels)
        return self.render(await self._s.put_quota(record, create=False, etag=m.etag))

    async def DeleteQuota(self, request: quota_pb2.DeleteQuotaRequest, context: Ctx) -> empty_pb2.Empty:
        await self._s.delete_quota(request.name, request.etag)
        return empty_pb2.Empty()

    async def HoldQuota(self, request: quota_pb2.HoldQuotaRequest, context: Ctx) -> quota_pb2.Quota:
        return self.render(await self._s.set_quota_held(request.name, request.etag, True))

    async def ResumeQuota(self, request: quota_pb2.ResumeQuotaRequest, context: Ctx) -> quota_pb2.Quota:
        return self.render(await self._s.set_quota_held(request.name, request.etag, False))


# ---- workloads -----------------------------------------------------------------------------------

_WORKLOAD_FILTER = (
    "state",
    "quota",
    "resource_group",
    "owner",
    "owner_kind",
    "preemptible",
    "pending_reason_code",
)


class WorkloadServicer(workload_pb2_grpc.WorkloadServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    def render(self, w: Workload) -> workload_pb2.Workload:
        return mapping.workload(w, self._s.queue_position(w))

    async def CreateWorkload(
        self, request: workload_pb2.CreateWorkloadRequest, context: Ctx
    ) -> workload_pb2.Workload:
        m = request.workload
        names = [ps.name for ps in m.pod_sets]
        if len(set(names)) != len(names):
            raise _bad("workload.pod_sets", "pod set names must be unique", "INVALID_POD_SET")
        for i, ps in enumerate(m.pod_sets):
            if ps.gpu_count > 1 and ps.gpu_milli:
                raise _bad(
                    f"workload.pod_sets[{i}]", "set gpu_count or gpu_milli, not both", "INVALID_POD_SET"
                )
        q = self._s.resolve_quota(request.parent, m.quota, m.resource_group)
        grace = (
            m.preemption_grace_period.ToTimedelta().total_seconds()
            if m.HasField("preemption_grace_period")
            else 0
        )
        w = Workload(
            name=f"{request.parent}/workloads/{request.workload_id}",
            uid="",
            quota=q.name,
            resource_group=f"resourceGroups/{q.resource_group}",
            pod_sets=tuple(mapping.pod_set_from(ps) for ps in m.pod_sets),
            priority=m.priority,
            preemptible=m.preemptible,
            owner=m.owner,
            owner_kind=mapping.OWNER_KINDS.get(m.owner_kind, "EXTERNAL"),
            display_name=m.display_name,
            labels=dict(m.labels),
            grace_seconds=grace,
        )
        return self.render(await self._s.create_workload(w, request.request_id))

    async def GetWorkload(
        self, request: workload_pb2.GetWorkloadRequest, context: Ctx
    ) -> workload_pb2.Workload:
        return self.render(await self._s.workload(request.name))

    async def ListWorkloads(
        self, request: workload_pb2.ListWorkloadsRequest, context: Ctx
    ) -> workload_pb2.ListWorkloadsResponse:
        ws = request.parent
        order = request.order_by.strip() or "create_time desc"
        if order not in ("create_time desc", "create_time", "queue"):
            raise _bad("order_by", "use `create_time desc`, `create_time` or `queue`", "INVALID_ORDER_BY")
        terms = _terms(request.filter, _WORKLOAD_FILTER) if request.filter.strip() else []
        states = next((v for k, v in terms if k == "state"), None)
        live = [w for w in self._s.workloads.values() if ws == "workspaces/-" or w.workspace == ws]
        items = live
        if states is None or "FINISHED" in states:
            items = live + await self._s.finished(None if ws == "workspaces/-" else ws.split("/")[1])
        items = [w for w in items if _matches(w, terms)]
        if order == "queue":
            items.sort(
                key=lambda w: (
                    w.resource_group,
                    w.quota,
                    w.state != State.PENDING,
                    -w.priority,
                    w.seq,
                    w.name,
                )
            )
        else:
            epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
            items.sort(key=lambda w: (w.create_time or epoch, w.name), reverse=order == "create_time desc")
        page, token = _page(request, items, parent=ws, filter=request.filter, order=order)
        return workload_pb2.ListWorkloadsResponse(
            workloads=[self.render(w) for w in page], next_page_token=token
        )

    async def UpdateWorkload(
        self, request: workload_pb2.UpdateWorkloadRequest, context: Ctx
    ) -> workload_pb2.Workload:
        m = request.workload
        fields = fieldmask.paths(request.update_mask.paths, ("display_name", "labels", "priority"))

        def apply(w: Workload) -> int | None:
            if "display_name" in fields:
                w.display_name = m.display_name
            if "labels" in fields:
                w.labels = dict(m.labels)
            return m.priority if "priority" in fields else None

        return self.render(await self._s.update_workload(m.name, m.etag, apply))

    async def DeleteWorkload(
        self, request: workload_pb2.DeleteWorkloadRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._s.delete_workload(request.name, request.etag)
        return empty_pb2.Empty()

    async def FinishWorkload(
        self, request: workload_pb2.FinishWorkloadRequest, context: Ctx
    ) -> workload_pb2.Workload:
        outcome = workload_pb2.Workload.Outcome.Name(request.outcome)
        return self.render(
            await self._s.finish_workload(request.name, request.etag, outcome, request.message)
        )

    async def RequeueWorkload(
        self, request: workload_pb2.RequeueWorkloadRequest, context: Ctx
    ) -> workload_pb2.Workload:
        w = await self._s.requeue_workload(
            request.name, request.etag, request.reason, request.reset_enqueue_time
        )
        return self.render(w)

    async def ExplainWorkload(
        self, request: workload_pb2.ExplainWorkloadRequest, context: Ctx
    ) -> workload_pb2.WorkloadExplanation:
        s = self._s
        async with s.lock:
            w = await s.workload(request.name)
            out = workload_pb2.WorkloadExplanation(
                workload=w.name,
                state=workload_pb2.Workload.State.Value(str(w.state)),
                evaluate_time=wire.ts(s.clock()),
            )
            if w.state != State.PENDING or w.name not in s.workloads:
                return out
            engine = s.engine_of(w)
            position = engine.queue_position(w)
            out.pending_reason_code = workload_pb2.Workload.PendingReasonCode.Value(w.pending_code)
            out.pending_reason = w.pending_reason
            out.queue_position = position
            out.ahead_count = max(0, position - 1)
            verdict = engine.quotas.check(w.quota, w.request())
            for c in verdict.checks:
                check = workload_pb2.QuotaCheck(
                    quota=c.quota, resource=c.resource, requested=c.requested, admitted=c.admitted,
                    min=c.min, available=c.available, fits=c.fits, message=c.message or "fits",
                )  # fmt: skip
                if c.max is not None:
                    check.max = c.max
                out.quota_checks.append(check)
            for fit in engine.explain_fit(w):
                out.pod_set_fits.append(
                    workload_pb2.PodSetFit(
                        pod_set=fit.pod_set,
                        count=fit.count,
                        placeable_count=fit.placeable,
                        node_count=fit.nodes,
                        feasible_node_count=fit.feasible,
                        rejections=[
                            workload_pb2.FilterRejection(
                                filter=workload_pb2.FilterRejection.Filter.Value(f), node_count=n, message=msg
                            )
                            for f, (n, msg) in sorted(fit.rejections.items())
                        ],
                    )
                )
            victims = list(w.victims)
            if not victims:
                result = engine.try_admit(w, commit=False)
                if isinstance(result, Failure):
                    victims = (
                        [v.name for v in engine.find_victims(w, result)] if engine.policy.preemption else []
                    )
            out.preemption_victims.extend(victims)
            return out


def _matches(w: Workload, terms: list[tuple[str, set[str]]]) -> bool:
    for key, allowed in terms:
        if key.startswith("labels."):
            value = w.labels.get(key[7:], "")
        else:
            value = {
                "state": str(w.state),
                "quota": w.quota,
                "resource_group": w.resource_group,
                "owner": w.owner,
                "owner_kind": w.owner_kind,
                "preemptible": str(w.preemptible).lower(),
                "pending_reason_code": w.pending_code if w.state == State.PENDING else "",
            }[key]
        if value not in allowed:
            return False
    return True


# ---- stats ---------------------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


class StatsServicer(stats_pb2_grpc.SchedulerStatsServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    async def GetSchedulerStats(
        self, request: stats_pb2.GetSchedulerStatsRequest, context: Ctx
    ) -> stats_pb2.SchedulerStats:
        s = self._s
        now = s.clock()
        groups = (
            [s.group(request.resource_group)]
            if request.resource_group
            else sorted(s.groups.values(), key=lambda g: g.id)
        )
        out = stats_pb2.SchedulerStats(leader=True, compute_time=wire.ts(now))
        for g in groups:
            engine = s.engines[g.id]
            live = [w for w in s.workloads.values() if w.resource_group == g.name]
            pending = [w for w in live if w.state == State.PENDING]
            oldest = min((w.enqueue_time for w in pending if w.enqueue_time), default=None)
            st = s.stats[g.id]
            recent = [t for t in st.admit_times if t > time.monotonic() - 60]
            lat = list(st.latencies)
            rg = stats_pb2.ResourceGroupStats(
                resource_group=g.name,
                node_count=len(s.nodes[g.id]),
                schedulable_node_count=sum(1 for n in s.nodes[g.id].values() if n.ready and not n.cordoned),
                capacity=mapping.resources(engine.quotas.capacity),
                allocated=mapping.resources(engine.quotas.usage[""]),
                fragmented_gpu_milli=int(engine.fragmented_gpu_milli()),
                pending_workload_count=len(pending),
                admitted_workload_count=sum(1 for w in live if w.state == State.ADMITTED),
                preempting_workload_count=sum(1 for w in live if w.state == State.PREEMPTING),
                oldest_pending_age=wire.duration((now - oldest).total_seconds() if oldest else 0),
                decisions=stats_pb2.DecisionStats(
                    admitted_total=st.admitted_total,
                    preempted_total=st.preempted_total,
                    attempts_total=st.attempts_total,
                    admissions_per_second=len(recent) / 60.0,
                    decision_latency_p50=wire.duration(_quantile(lat, 0.5)),
                    decision_latency_p99=wire.duration(_quantile(lat, 0.99)),
                    admission_wait_p50=wire.duration(_quantile(list(st.waits), 0.5)),
                    last_cycle_time=wire.ts(st.last_cycle),
                ),
            )
            if request.include_quotas:
                tally = tallies(s)
                for q in sorted(
                    (q for q in s.quotas.values() if q.resource_group == g.id), key=lambda q: q.name
                ):
                    qp = [w for w in pending if w.quota == q.name]
                    q_oldest = min((w.enqueue_time for w in qp if w.enqueue_time), default=None)
                    rg.quotas.append(
                        stats_pb2.QuotaQueueStats(
                            quota=q.name,
                            workspace=q.spec.workspace,
                            usage=quota_usage(s, q, tally),
                            oldest_pending_age=wire.duration(
                                (now - q_oldest).total_seconds() if q_oldest else 0
                            ),
                        )
                    )
            out.resource_groups.append(rg)
        return out
