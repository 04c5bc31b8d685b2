"""`WorkloadService`: each method maps its request, calls one use case, maps the answer back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.scheduler.v1 import workload_pb2 as pb
from pai.scheduler.v1 import workload_pb2_grpc
from pai_common import fieldmask
from pai_scheduler import mapping
from pai_scheduler.app.workloads import Workloads

Ctx: TypeAlias = grpc.aio.ServicerContext


class WorkloadServicer(workload_pb2_grpc.WorkloadServiceServicer):
    """The WorkloadService RPCs over the workload use cases."""

    def __init__(self, workloads: Workloads) -> None:
        self._workloads = workloads

    async def CreateWorkload(self, request: pb.CreateWorkloadRequest, context: Ctx) -> pb.Workload:
        w = mapping.workload_from(request.parent, request.workload_id, request.workload)
        return mapping.workload(*await self._workloads.create(w, request.request_id))

    async def GetWorkload(self, request: pb.GetWorkloadRequest, context: Ctx) -> pb.Workload:
        return mapping.workload(*await self._workloads.get(request.name))

    async def ListWorkloads(self, request: pb.ListWorkloadsRequest, context: Ctx) -> pb.ListWorkloadsResponse:
        workloads, token = await self._workloads.list_workloads(
            request.parent, request.filter, request.order_by, request.page_size, request.page_token
        )
        return pb.ListWorkloadsResponse(
            workloads=[mapping.workload(*w) for w in workloads], next_page_token=token
        )

    async def UpdateWorkload(self, request: pb.UpdateWorkloadRequest, context: Ctx) -> pb.Workload:
        m = request.workload
        fields = fieldmask.paths(request.update_mask.paths, mapping.WORKLOAD_FIELDS)
        return mapping.workload(
            *await self._workloads.update(m.name, m.etag, mapping.workload_update(m, fields))
        )

    async def DeleteWorkload(self, request: pb.DeleteWorkloadRequest, context: Ctx) -> empty_pb2.Empty:
        await self._workloads.delete(request.name, request.etag)
        return empty_pb2.Empty()

    async def FinishWorkload(self, request: pb.FinishWorkloadRequest, context: Ctx) -> pb.Workload:
        outcome = mapping.outcome_name(request.outcome)
        return mapping.workload(
            *await self._workloads.finish(request.name, request.etag, outcome, request.message)
        )

    async def RequeueWorkload(self, request: pb.RequeueWorkloadRequest, context: Ctx) -> pb.Workload:
        return mapping.workload(
            *await self._workloads.requeue(
                request.name, request.etag, request.reason, request.reset_enqueue_time
            )
        )

    async def ExplainWorkload(
        self, request: pb.ExplainWorkloadRequest, context: Ctx
    ) -> pb.WorkloadExplanation:
        return mapping.explanation(await self._workloads.explain(request.name))
