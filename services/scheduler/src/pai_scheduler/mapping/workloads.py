"""Workloads on the wire, what CreateWorkload and UpdateWorkload ask for, and explanations."""

from __future__ import annotations

from collections.abc import Callable, Set

from pai.scheduler.v1 import workload_pb2
from pai_common import fieldmask
from pai_common.wire import duration, ts
from pai_scheduler.domain.explain import Explanation, PendingDetail
from pai_scheduler.domain.workload import PodSet, State, Workload, check_pod_sets
from pai_scheduler.mapping.amounts import resources

W = workload_pb2.Workload
OWNER_KINDS = {1: "DLC_JOB", 2: "EAS_SERVICE", 3: "DSW_NOTEBOOK", 4: "EXTERNAL"}
WORKLOAD_FIELDS = ("display_name", "labels", "priority")
"""What UpdateWorkload may change."""

WorkloadChange = Callable[[Workload], int | None]
"""Applies an update to a workload; returns its new priority (None: unchanged), which the queue
must see happen."""


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


def workload_from(parent: str, workload_id: str, m: workload_pb2.Workload) -> Workload:
    """A new workload as CreateWorkload asks for it: its quota and resource group as named (either
    may be empty, for the use case to resolve)."""
    check_pod_sets([(ps.name, ps.gpu_count, ps.gpu_milli) for ps in m.pod_sets])
    grace = (
        m.preemption_grace_period.ToTimedelta().total_seconds()
        if m.HasField("preemption_grace_period")
        else 0
    )
    return Workload(
        name=f"{parent}/workloads/{workload_id}",
        uid="",
        quota=m.quota,
        resource_group=m.resource_group,
        pod_sets=tuple(pod_set_from(ps) for ps in m.pod_sets),
        priority=m.priority,
        preemptible=m.preemptible,
        owner=m.owner,
        owner_kind=OWNER_KINDS.get(m.owner_kind, "EXTERNAL"),
        display_name=m.display_name,
        labels=dict(m.labels),
        grace_seconds=grace,
    )


def workload_update(m: workload_pb2.Workload, fields: Set[str]) -> WorkloadChange:
    """What UpdateWorkload changes: the `fields` of `m`."""

    def change(w: Workload) -> int | None:
        fieldmask.assign(w, m, fields, ("display_name", "labels"))
        return m.priority if "priority" in fields else None

    return change


def outcome_name(value: workload_pb2.Workload.Outcome.ValueType) -> str:
    """The domain's name of a FinishWorkload outcome."""
    return W.Outcome.Name(value)


def workload(w: Workload, queue_position: int = 0) -> workload_pb2.Workload:
    rg_id = w.resource_group.split("/")[-1]
    p = w.preemption
    pending = w.state == State.PENDING
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
        pending_reason=w.pending_reason if pending else "",
        pending_reason_code=W.PendingReasonCode.Value(
            w.pending_code if pending and w.pending_code else "PENDING_REASON_CODE_UNSPECIFIED"
        ),
        pending_reason_metadata=w.pending_metadata if pending else {},
        preemption_victims=list(w.victims) if pending else [],
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
        etag=w.etag,
    )


def explanation(e: Explanation) -> workload_pb2.WorkloadExplanation:
    out = workload_pb2.WorkloadExplanation(
        workload=e.workload, state=W.State.Value(str(e.state)), evaluate_time=ts(e.evaluate_time)
    )
    if e.pending is not None:
        _pending_detail(out, e.pending)
    return out


def _pending_detail(out: workload_pb2.WorkloadExplanation, d: PendingDetail) -> None:
    out.pending_reason_code = W.PendingReasonCode.Value(d.code)
    out.pending_reason = d.reason
    out.queue_position = d.queue_position
    out.ahead_count = d.ahead_count
    for c in d.quota_checks:
        check = workload_pb2.QuotaCheck(
            quota=c.quota, resource=c.resource, requested=c.requested, admitted=c.admitted,
            min=c.min, available=c.available, fits=c.fits, message=c.message or "fits",
        )  # fmt: skip
        if c.max is not None:
            check.max = c.max
        out.quota_checks.append(check)
    for fit in d.pod_set_fits:
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
    out.preemption_victims.extend(d.victims)
