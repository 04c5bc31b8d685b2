"""The scheduler, as the app's `Scheduler` port: dlc's calls as the owner of its jobs' workloads.

dlc calls the scheduler with its own credential (a platform identity, `PAI_DLC_API_KEY`): it asks for
capacity on behalf of the job's workspace and reports how the job ended. Failures become
`RemoteError`s with the canonical code, so the app decides without knowing gRPC.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from pai.scheduler.v1 import workload_pb2, workload_pb2_grpc
from pai_common.errors import Code
from pai_dlc.app.ports import RemoteError, WorkloadView
from pai_dlc.domain.job import Job
from pai_dlc.domain.runtime import Outcome
from pai_dlc.mapping.scheduler import workload_for

W = workload_pb2.Workload
T = TypeVar("T")
TIMEOUT = 10.0


def _view(w: W) -> WorkloadView:
    return WorkloadView(w.name, w.state == W.PENDING, w.state == W.FINISHED, w.pending_reason)


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as e:
        raise RemoteError(Code[e.code().name], e.details() or "") from None


class GrpcScheduler:
    def __init__(self, channel: grpc.aio.Channel, preemption_grace: float) -> None:
        self._stub = workload_pb2_grpc.WorkloadServiceStub(channel)
        self._grace = preemption_grace

    async def create(self, job: Job) -> WorkloadView:
        """Create the job's workload, or return it when an earlier try already did."""
        parent, wid = job.workload.rsplit("/workloads/", 1)
        request = workload_pb2.CreateWorkloadRequest(
            parent=parent, workload_id=wid, workload=workload_for(job, self._grace), request_id=job.uid
        )
        try:
            return _view(await _call(self._stub.CreateWorkload(request, timeout=TIMEOUT)))
        except RemoteError as e:
            if e.code != Code.ALREADY_EXISTS:
                raise
        return await self.get(job.workload)

    async def get(self, name: str) -> WorkloadView:
        return _view(
            await _call(self._stub.GetWorkload(workload_pb2.GetWorkloadRequest(name=name), timeout=TIMEOUT))
        )

    async def finish(self, name: str, outcome: Outcome, message: str) -> None:
        """Report the end; a workload that is gone or already finished is fine."""
        request = workload_pb2.FinishWorkloadRequest(name=name, outcome=int(outcome), message=message[:1024])  # type: ignore[arg-type]
        try:
            await _call(self._stub.FinishWorkload(request, timeout=TIMEOUT))
        except RemoteError as e:
            if e.code not in (Code.NOT_FOUND, Code.FAILED_PRECONDITION):
                raise

    async def requeue(self, name: str, reason: str) -> WorkloadView:
        request = workload_pb2.RequeueWorkloadRequest(name=name, reason=reason[:1024])
        return _view(await _call(self._stub.RequeueWorkload(request, timeout=TIMEOUT)))
