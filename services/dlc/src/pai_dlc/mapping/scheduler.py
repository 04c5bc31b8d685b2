"""A job's gang as the scheduler's workload, and the scheduler's workload events as domain facts."""

from __future__ import annotations

import datetime as dt

from pai.scheduler.v1 import events_pb2 as scheduler_events
from pai.scheduler.v1 import workload_pb2
from pai_common.wire import duration
from pai_dlc.domain.job import Job
from pai_dlc.domain.runtime import FactKind, Outcome, WorkloadFact

W = workload_pb2.Workload
DEFAULT_CPU_MILLI = 1000
DEFAULT_MEMORY_BYTES = 1 << 30

# the scheduler's events dlc acts on, by the fact they are
FACT_KINDS: dict[type, FactKind] = {
    scheduler_events.WorkloadAdmitted: FactKind.ADMITTED,
    scheduler_events.WorkloadPreempted: FactKind.PREEMPTED,
    scheduler_events.WorkloadEvicted: FactKind.EVICTED,
    scheduler_events.WorkloadPendingReasonChanged: FactKind.PENDING,
    scheduler_events.WorkloadFinished: FactKind.FINISHED,
    scheduler_events.WorkloadDeleted: FactKind.DELETED,
}
SUBJECTS = (
    "pai.scheduler.workload.admitted",
    "pai.scheduler.workload.preempted",
    "pai.scheduler.workload.evicted",
    "pai.scheduler.workload.pending_reason_changed",
    "pai.scheduler.workload.finished",
    "pai.scheduler.workload.deleted",
)


def workload_name(job_name: str, uid: str) -> str:
    """The job's workload: one per job, named from its uid so that a retried create finds it."""
    return f"workspaces/{job_name.split('/')[1]}/workloads/job-{uid}"


def workload_for(job: Job, grace_seconds: float) -> W:
    spec = job.spec
    pod_sets = [
        workload_pb2.PodSet(
            name=rs.role.label, count=max(1, rs.count),
            cpu_milli=rs.resources.cpu_milli or DEFAULT_CPU_MILLI,
            memory_bytes=rs.resources.memory_bytes or DEFAULT_MEMORY_BYTES,
            gpu_count=rs.resources.gpu_count, gpu_milli=rs.resources.gpu_milli,
            allowed_gpu_models=list(rs.resources.allowed_gpu_models),
        )
        for rs in spec.replica_specs
    ]  # fmt: skip
    return W(
        display_name=job.display_name or job.name.rsplit("/", 1)[-1],
        owner=job.name,
        owner_kind=W.DLC_JOB,
        resource_group=spec.resource_group,
        quota=spec.quota,
        priority=spec.priority,
        preemptible=spec.spot,
        pod_sets=pod_sets,
        preemption_grace_period=duration(grace_seconds),
        labels={"pai.dev/job-uid": job.uid},
    )


def outcome_to(outcome: Outcome) -> int:
    return int(outcome)  # the domain's numbers are the workload's


def placement_summary(placements: list[workload_pb2.PodPlacement]) -> str:
    nodes = sorted({p.node for p in placements})
    return ", ".join(n.rsplit("/", 1)[-1] for n in nodes)


def fact_of(kind: FactKind, w: W) -> WorkloadFact:
    """What one workload event says, as a job's fact."""
    notice = w.preemption if w.HasField("preemption") else None
    return WorkloadFact(
        kind=kind,
        workload=w.name,
        version=int(w.version),
        nodes=placement_summary(list(w.placements)),
        pending_reason=w.pending_reason,
        preemption_deadline=notice.deadline.ToDatetime(dt.UTC) if notice is not None else None,
        preemption_message=notice.message if notice is not None else "",
    )


def owned_workload(message: object) -> tuple[FactKind, W] | None:
    """The fact kind and workload of a scheduler event about a dlc job's workload, else None."""
    kind = FACT_KINDS.get(type(message))
    if kind is None:
        return None
    w: W = message.workload  # type: ignore[attr-defined]
    if w.owner_kind != W.DLC_JOB or not w.owner:
        return None
    return kind, w
