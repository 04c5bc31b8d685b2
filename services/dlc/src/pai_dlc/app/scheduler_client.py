"""dlc's side of the scheduler: a job's gang as a workload, and the calls dlc makes as its owner.

dlc calls the scheduler with its own credential (a platform identity, `PAI_DLC_API_KEY`): it asks for
capacity on behalf of the job's workspace and reports how the job ended.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from pai.dlc.v1 import job_pb2
from pai.scheduler.v1 import workload_pb2, workload_pb2_grpc
from pai_common.wire import duration
from pai_dlc.model.spec import ROLE_NAMES

W = workload_pb2.Workload

DEFAULT_CPU_MILLI = 1000
DEFAULT_MEMORY_BYTES = 1 << 30

# the scheduler answered, and retrying the same call will not change its mind
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def workload_name(job: job_pb2.Job) -> str:
    """The job's workload: one per job, named from its uid so that a retried create finds it."""
    workspace = job.name.split("/")[1]
    return f"workspaces/{workspace}/workloads/job-{job.uid}"


def workload_for(job: job_pb2.Job, grace_seconds: float) -> workload_pb2.Workload:
    spec = job.spec
    pod_sets = []
    for rs in spec.replica_specs:
        r = rs.resources
        pod_sets.append(
            workload_pb2.PodSet(
                name=ROLE_NAMES[rs.role],
                count=max(1, rs.count),
                cpu_milli=r.cpu_milli or DEFAULT_CPU_MILLI,
                memory_bytes=r.memory_bytes or DEFAULT_MEMORY_BYTES,
                gpu_count=r.gpu_count,
                gpu_milli=r.gpu_milli,
                allowed_gpu_models=list(r.allowed_gpu_models),
            )
        )
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


class SchedulerClient:
    """The few scheduler calls dlc makes, on a channel that carries dlc's credential."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = workload_pb2_grpc.WorkloadServiceStub(channel)

    async def create(self, job: job_pb2.Job, grace_seconds: float) -> workload_pb2.Workload:
        """Create the job's workload, or return it when an earlier try already did."""
        name = workload_name(job)
        parent, wid = name.rsplit("/workloads/", 1)
        try:
            return await self._stub.CreateWorkload(  # type: ignore[no-any-return]
                workload_pb2.CreateWorkloadRequest(
                    parent=parent,
                    workload_id=wid,
                    workload=workload_for(job, grace_seconds),
                    request_id=job.uid,
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        return await self.get(name)

    async def get(self, name: str) -> workload_pb2.Workload:
        return await self._stub.GetWorkload(workload_pb2.GetWorkloadRequest(name=name), timeout=10)  # type: ignore[no-any-return]

    async def finish(self, name: str, outcome: int, message: str) -> None:
        """Report the end; a workload that is gone or already finished is fine."""
        try:
            await self._stub.FinishWorkload(
                workload_pb2.FinishWorkloadRequest(name=name, outcome=outcome, message=message[:1024]),  # type: ignore[arg-type]
                timeout=10,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise

    async def delete(self, name: str) -> None:
        try:
            await self._stub.DeleteWorkload(workload_pb2.DeleteWorkloadRequest(name=name), timeout=10)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise

    async def requeue(self, name: str, reason: str) -> workload_pb2.Workload:
        return await self._stub.RequeueWorkload(  # type: ignore[no-any-return]
            workload_pb2.RequeueWorkloadRequest(name=name, reason=reason[:1024]), timeout=10
        )


def describe(err: grpc.aio.AioRpcError) -> str:
    return f"{err.code().name}: {err.details() or ''}".strip()


def placement_summary(placements: Iterable[workload_pb2.PodPlacement]) -> str:
    nodes = sorted({p.node for p in placements})
    return ", ".join(n.rsplit("/", 1)[-1] for n in nodes)
