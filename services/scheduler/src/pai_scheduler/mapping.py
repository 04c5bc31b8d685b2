"""The one place where the scheduler's protos and its domain records meet."""

from __future__ import annotations

from collections.abc import Mapping

from pai.scheduler.v1 import (
    events_pb2,
    node_pb2,
    quota_pb2,
    resource_group_pb2,
    types_pb2,
    workload_pb2,
)
from pai_common.events import OutboxEvent
from pai_common.wire import duration, ts
from pai_scheduler.domain.quota import CPU, GPU, MEMORY, Amounts, QuotaSpec
from pai_scheduler.domain.records import Gpu, NodeRecord, QuotaRecord, ResourceGroup
from pai_scheduler.domain.scheduling import Policy
from pai_scheduler.domain.workload import PodSet, State, Workload

SOURCE = "scheduler.pai.dev"
W = workload_pb2.Workload


# ---- amounts -------------------------------------------------------------------------------------


def resources(amounts: Mapping[str, int]) -> types_pb2.Resources:
    models = sorted((k[4:], v) for k, v in amounts.items() if k.startswith("gpu/"))
    return types_pb2.Resources(
        cpu_milli=max(0, amounts.get(CPU, 0)),
        memory_bytes=max(0, amounts.get(MEMORY, 0)),
        gpu_milli=max(0, amounts.get(GPU, 0)),
        gpu_models=[types_pb2.GpuModelAmount(model=m, gpu_milli=max(0, v)) for m, v in models],
    )


def limits_from(msg: types_pb2.ResourceLimits) -> Amounts:
    out: Amounts = {}
    for field_name, key in (("cpu_milli", CPU), ("memory_bytes", MEMORY), ("gpu_milli", GPU)):
        if msg.HasField(field_name):  # type: ignore[arg-type]
            out[key] = getattr(msg, field_name)
    for m in msg.gpu_models:
        out[f"gpu/{m.model}"] = m.gpu_milli
    return out


def limits(amounts: Mapping[str, int]) -> types_pb2.ResourceLimits:
    out = types_pb2.ResourceLimits(
        gpu_models=[
            types_pb2.GpuModelAmount(model=k[4:], gpu_milli=v)
            for k, v in sorted(amounts.items())
            if k.startswith("gpu/")
        ]
    )
    if CPU in amounts:
        out.cpu_milli = amounts[CPU]
    if MEMORY in amounts:
        out.memory_bytes = amounts[MEMORY]
    if GPU in amounts:
        out.gpu_milli = amounts[GPU]
    return out


# ---- resource groups -----------------------------------------------------------------------------

_PLACEMENT = {"frag": 1, "fgd": 2, "bestfit": 3}


def policy_from(msg: resource_group_pb2.SchedulingPolicy, base: Policy | None = None) -> Policy:
    base = base or Policy()
    names = {v: k for k, v in _PLACEMENT.items()}
    return Policy(
        placement=names.get(msg.placement_policy, base.placement),
        seed=msg.tie_break_seed,
        lookahead=msg.lookahead_depth or base.lookahead,
        # an unset or zero duration means the default, as the proto says
        default_grace=msg.default_preemption_grace_period.ToTimedelta().total_seconds() or base.default_grace,
        max_grace=msg.max_preemption_grace_period.ToTimedelta().total_seconds() or base.max_grace,
        preemption=not msg.preemption_disabled,
        budget=base.budget,
    )


def policy(p: Policy) -> resource_group_pb2.SchedulingPolicy:
    return resource_group_pb2.SchedulingPolicy(
        placement_policy=_PLACEMENT.get(p.placement, 0),  # type: ignore[arg-type]
        tie_break_seed=p.seed,
        lookahead_depth=p.lookahead,
        default_preemption_grace_period=duration(p.default_grace),
        max_preemption_grace_period=duration(p.max_grace),
        preemption_disabled=not p.preemption,
    )


def resource_group(
    g: ResourceGroup,
    *,
    capacity: Amounts,
    allocated: Amounts,
    guaranteed: Amounts,
    nodes: int,
    schedulable: int,
    pending: int,
    admitted: int,
) -> resource_group_pb2.ResourceGroup:
    return resource_group_pb2.ResourceGroup(
        name=g.name,
        uid=g.uid,
        display_name=g.display_name,
        description=g.description,
        labels=g.labels,
        scheduling_policy=policy(g.policy),
        capacity=resources(capacity),
        allocated=resources(allocated),
        guaranteed=resources(guaranteed),
        node_count=nodes,
        schedulable_node_count=schedulable,
        pending_workload_count=pending,
        admitted_workload_count=admitted,
        create_time=ts(g.create_time),
        update_time=ts(g.update_time),
        version=g.version,
        etag=etag(g.version),
    )


def etag(version: int) -> str:
    return f'W/"{version}"'


# ---- nodes ---------------------------------------------------------------------------------------

SOURCES = {1: "LOCAL", 2: "SIMULATED", 3: "RAY", 4: "KUBERNETES"}
SOURCE_VALUES = {v: k for k, v in SOURCES.items()}


def node(
    n: NodeRecord, allocated: Amounts, gpu_allocated: list[int], gpu_pods: list[int], pods: int
) -> node_pb2.Node:
    capacity: Amounts = {CPU: n.cpu_milli, MEMORY: n.memory_bytes, GPU: 1000 * len(n.gpus)}
    for g in n.gpus:
        capacity[f"gpu/{g.model}"] = capacity.get(f"gpu/{g.model}", 0) + 1000
    return node_pb2.Node(
        name=n.name,
        uid=n.uid,
        display_name=n.display_name,
        source=SOURCE_VALUES.get(n.source, 0),  # type: ignore[arg-type]
        provider_id=n.provider_id,
        cpu_milli=n.cpu_milli,
        memory_bytes=n.memory_bytes,
        gpus=[
            node_pb2.Gpu(
                index=g.index,
                model=g.model,
                memory_bytes=g.memory_bytes,
                uuid=g.uuid,
                allocated_gpu_milli=gpu_allocated[i] if i < len(gpu_allocated) else 0,
                pod_count=gpu_pods[i] if i < len(gpu_pods) else 0,
            )
            for i, g in enumerate(sorted(n.gpus, key=lambda g: g.index))
        ],
        labels=n.labels,
        state=node_pb2.Node.READY if n.ready else node_pb2.Node.NOT_READY,
        state_message=n.state_message,
        cordoned=n.cordoned,
        cordon_reason=n.cordon_reason,
        schedulable=n.ready and not n.cordoned,
        allocatable=resources(capacity),
        allocated=resources(allocated),
        pod_count=pods,
        report_time=ts(n.report_time),
        create_time=ts(n.create_time),
        update_time=ts(n.update_time),
        version=n.version,
        etag=etag(n.version),
    )


def gpus_from(msg: node_pb2.Node) -> list[Gpu]:
    return [Gpu(g.index, g.model, g.memory_bytes, g.uuid) for g in msg.gpus]


# ---- quotas --------------------------------------------------------------------------------------

_RECLAIM = {1: "NEVER", 2: "LOWER_PRIORITY", 3: "ANY"}
_WITHIN = {1: "NEVER", 2: "LOWER_PRIORITY"}


def quota_spec(name: str, msg: quota_pb2.Quota) -> QuotaSpec:
    pp = msg.preemption_policy
    return QuotaSpec(
        name=name,
        parent=msg.parent,
        workspace=msg.workspace,
        min=limits_from(msg.min),
        max=limits_from(msg.max),
        borrowing_limit=limits_from(msg.borrowing_limit),
        lending_limit=limits_from(msg.lending_limit),
        weight=msg.weight or 1,
        reclaim=_RECLAIM.get(pp.reclaim, "ANY"),
        within_quota=_WITHIN.get(pp.within_quota, "LOWER_PRIORITY"),
    )


def quota(q: QuotaRecord, usage: quota_pb2.QuotaUsage | None = None) -> quota_pb2.Quota:
    s = q.spec
    reclaim = {v: k for k, v in _RECLAIM.items()}
    within = {v: k for k, v in _WITHIN.items()}
    return quota_pb2.Quota(
        name=s.name,
        uid=q.uid,
        display_name=q.display_name,
        description=q.description,
        parent=s.parent,
        workspace=s.workspace,
        min=limits(s.min),
        max=limits(s.max),
        borrowing_limit=limits(s.borrowing_limit),
        lending_limit=limits(s.lending_limit),
        weight=s.weight,
        preemption_policy=quota_pb2.PreemptionPolicy(
            reclaim=reclaim[s.reclaim],  # type: ignore[arg-type]
            within_quota=within[s.within_quota],  # type: ignore[arg-type]
        ),
        labels=q.labels,
        state=quota_pb2.Quota.HELD if s.held else quota_pb2.Quota.ACTIVE,
        usage=usage,
        create_time=ts(q.create_time),
        update_time=ts(q.update_time),
        version=q.version,
        etag=etag(q.version),
    )


# ---- workloads -----------------------------------------------------------------------------------

OWNER_KINDS = {1: "DLC_JOB", 2: "EAS_SERVICE", 3: "DSW_NOTEBOOK", 4: "EXTERNAL"}


def pod_set_from(msg: workload_pb2.PodSet) -> PodSet:
    gpu_count, gpu_milli = msg.gpu_count, msg.gpu_milli
    if gpu_milli == 1000:  # a whole card: the same as gpu_count = 1
        gpu_count, gpu_milli = 1, 0
    return PodSet(
        msg.name,
        msg.count,
        msg.cpu_milli,
        msg.memory_bytes,
        gpu_count,
        gpu_milli,
        tuple(msg.allowed_gpu_models),
        tuple(sorted(msg.node_selector.items())),
    )


def pod_set(ps: PodSet) -> workload_pb2.PodSet:
    return workload_pb2.PodSet(
        name=ps.name,
        count=ps.count,
        cpu_milli=ps.cpu_milli,
        memory_bytes=ps.memory_bytes,
        gpu_count=ps.gpu_count,
        gpu_milli=ps.gpu_milli,
        allowed_gpu_models=ps.allowed_gpu_models,
        node_selector=dict(ps.node_selector),
    )


def workload(w: Workload, queue_position: int = 0) -> workload_pb2.Workload:
    rg_id = w.resource_group.split("/")[-1]
    p = w.preemption
    return W(
        name=w.name,
        uid=w.uid,
        display_name=w.display_name,
        owner=w.owner,
        owner_kind={v: k for k, v in OWNER_KINDS.items()}.get(w.owner_kind, 4),  # type: ignore[arg-type]
        resource_group=w.resource_group,
        quota=w.quota,
        priority=w.priority,
        preemptible=w.preemptible,
        pod_sets=[pod_set(ps) for ps in w.pod_sets],
        preemption_grace_period=duration(w.grace_seconds) if w.grace_seconds else None,
        labels=w.labels,
        state=W.State.Value(str(w.state)),
        pending_reason=w.pending_reason if w.state == State.PENDING else "",
        pending_reason_code=W.PendingReasonCode.Value(
            w.pending_code
            if w.state == State.PENDING and w.pending_code
            else "PENDING_REASON_CODE_UNSPECIFIED"
        ),
        pending_reason_metadata=w.pending_metadata if w.state == State.PENDING else {},
        preemption_victims=list(w.victims) if w.state == State.PENDING else [],
        queue_position=queue_position,
        total_request=resources(w.request()),
        placements=[
            workload_pb2.PodPlacement(
                pod_set=pp.pod_set,
                pod_index=pp.pod_index,
                node=f"resourceGroups/{rg_id}/nodes/{pp.node}",
                node_provider_id=pp.node,
                gpu_indices=pp.gpu_indices,
                gpu_milli=pp.gpu_milli,
                gpu_model=pp.gpu_model,
            )
            for pp in w.placements
        ],
        preemption=None
        if p is None
        else workload_pb2.Preemption(
            reason=workload_pb2.Preemption.Reason.Value(p.reason),
            message=p.message,
            preemptor=p.preemptor,
            preempt_time=ts(p.preempt_time),
            deadline=ts(p.deadline),
        ),
        outcome=W.Outcome.Value(w.outcome or "OUTCOME_UNSPECIFIED"),
        finish_message=w.finish_message,
        requeue_count=w.requeue_count,
        enqueue_time=ts(w.enqueue_time),
        admit_time=ts(w.admit_time),
        finish_time=ts(w.finish_time),
        create_time=ts(w.create_time),
        update_time=ts(w.update_time),
        version=w.version,
        etag=etag(w.version),
    )


# ---- events: subject pai.scheduler.<entity>.<verb>, payload a snapshot ---------------------------


def event(subject: str, message: object) -> OutboxEvent:
    return OutboxEvent(subject=subject, message=message, source=SOURCE)  # type: ignore[arg-type]


def workload_event(verb: str, w: Workload, previous: State | None = None, **extra: object) -> OutboxEvent:
    cls = getattr(events_pb2, "Workload" + "".join(p.capitalize() for p in verb.split("_")))
    fields: dict[str, object] = {"workload": workload(w), **extra}
    if previous is not None:
        fields["previous_state"] = W.State.Value(str(previous))
    return event(f"pai.scheduler.workload.{verb}", cls(**fields))


def quota_event(verb: str, q: QuotaRecord, previous_held: bool | None = None) -> OutboxEvent:
    """`pai.scheduler.quota.<verb>`: created, updated, deleted or state_changed."""
    snapshot = quota(q)
    if verb == "state_changed":
        previous = quota_pb2.Quota.HELD if previous_held else quota_pb2.Quota.ACTIVE
        return event(
            "pai.scheduler.quota.state_changed",
            events_pb2.QuotaStateChanged(quota=snapshot, previous_state=previous),
        )
    cls = getattr(events_pb2, "Quota" + verb.capitalize())
    return event(f"pai.scheduler.quota.{verb}", cls(quota=snapshot))


def group_event(verb: str, g: ResourceGroup) -> OutboxEvent:
    """`pai.scheduler.resource_group.<verb>` with the group's settings (counts are not part of it)."""
    snapshot = resource_group(
        g, capacity={}, allocated={}, guaranteed={}, nodes=0, schedulable=0, pending=0, admitted=0
    )
    cls = getattr(events_pb2, "ResourceGroup" + verb.capitalize())
    return event(f"pai.scheduler.resource_group.{verb}", cls(resource_group=snapshot))


def node_event(verb: str, n: NodeRecord, previous: NodeRecord | None = None) -> OutboxEvent:
    """`pai.scheduler.node.<verb>`: registered, updated (with the previous state) or deleted."""
    snapshot = node(n, {}, [], [], 0)
    if verb == "registered":
        return event("pai.scheduler.node.registered", events_pb2.NodeRegistered(node=snapshot))
    if verb == "deleted":
        return event("pai.scheduler.node.deleted", events_pb2.NodeDeleted(node=snapshot))
    prev = previous or n
    return event(
        "pai.scheduler.node.updated",
        events_pb2.NodeUpdated(
            node=snapshot,
            previous_state=node_pb2.Node.READY if prev.ready else node_pb2.Node.NOT_READY,
            previous_cordoned=prev.cordoned,
        ),
    )


def nodes_imported(rg: str, created: int, updated: int, deleted: int, capacity: Amounts) -> OutboxEvent:
    return event(
        "pai.scheduler.node.imported",
        events_pb2.NodesImported(
            resource_group=f"resourceGroups/{rg}",
            created_count=created,
            updated_count=updated,
            deleted_count=deleted,
            capacity=resources(capacity),
        ),
    )
