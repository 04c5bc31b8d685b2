"""`QuotaService`: each method maps its request, calls one use case, maps the answer back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.scheduler.v1 import quota_pb2 as pb
from pai.scheduler.v1 import quota_pb2_grpc
from pai_common import fieldmask
from pai_scheduler import mapping
from pai_scheduler.app.quotas import Quotas

Ctx: TypeAlias = grpc.aio.ServicerContext


class QuotaServicer(quota_pb2_grpc.QuotaServiceServicer):
    """The QuotaService RPCs over the quota use cases."""

    def __init__(self, quotas: Quotas) -> None:
        self._quotas = quotas

    async def CreateQuota(self, request: pb.CreateQuotaRequest, context: Ctx) -> pb.Quota:
        record = mapping.quota_from(request.parent, request.quota_id, request.quota)
        return mapping.quota(*await self._quotas.create(record, request.request_id))

    async def GetQuota(self, request: pb.GetQuotaRequest, context: Ctx) -> pb.Quota:
        return mapping.quota(*self._quotas.get(request.name))

    async def ListQuotas(self, request: pb.ListQuotasRequest, context: Ctx) -> pb.ListQuotasResponse:
        quotas, token = self._quotas.list_quotas(
            request.parent, request.filter, request.page_size, request.page_token
        )
        return pb.ListQuotasResponse(quotas=[mapping.quota(*q) for q in quotas], next_page_token=token)

    async def UpdateQuota(self, request: pb.UpdateQuotaRequest, context: Ctx) -> pb.Quota:
        m = request.quota
        fields = fieldmask.paths(request.update_mask.paths, mapping.QUOTA_FIELDS)
        return mapping.quota(*await self._quotas.update(m.name, m.etag, mapping.quota_update(m, fields)))

    async def DeleteQuota(self, request: pb.DeleteQuotaRequest, context: Ctx) -> empty_pb2.Empty:
        await self._quotas.delete(request.name, request.etag)
        return empty_pb2.Empty()

    async def HoldQuota(self, request: pb.HoldQuotaRequest, context: Ctx) -> pb.Quota:
        return mapping.quota(*await self._quotas.set_held(request.name, request.etag, True))

    async def ResumeQuota(self, request: pb.ResumeQuotaRequest, context: Ctx) -> pb.Quota:
        return mapping.quota(*await self._quotas.set_held(request.name, request.etag, False))
