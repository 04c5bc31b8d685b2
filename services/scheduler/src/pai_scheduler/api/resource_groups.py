"""`ResourceGroupService`: each method maps its request, calls one use case, maps the answer back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.scheduler.v1 import resource_group_pb2 as pb
from pai.scheduler.v1 import resource_group_pb2_grpc
from pai_common import fieldmask
from pai_scheduler import mapping
from pai_scheduler.app.groups import ResourceGroups

Ctx: TypeAlias = grpc.aio.ServicerContext


class ResourceGroupServicer(resource_group_pb2_grpc.ResourceGroupServiceServicer):
    """The ResourceGroupService RPCs over the resource group use cases."""

    def __init__(self, groups: ResourceGroups) -> None:
        self._groups = groups

    async def CreateResourceGroup(
        self, request: pb.CreateResourceGroupRequest, context: Ctx
    ) -> pb.ResourceGroup:
        group = mapping.group_from(request.resource_group_id, request.resource_group)
        return mapping.resource_group(*await self._groups.create(group, request.request_id))

    async def GetResourceGroup(self, request: pb.GetResourceGroupRequest, context: Ctx) -> pb.ResourceGroup:
        return mapping.resource_group(*self._groups.get(request.name))

    async def ListResourceGroups(
        self, request: pb.ListResourceGroupsRequest, context: Ctx
    ) -> pb.ListResourceGroupsResponse:
        groups, token = self._groups.list_groups(request.page_size, request.page_token)
        return pb.ListResourceGroupsResponse(
            resource_groups=[mapping.resource_group(*g) for g in groups], next_page_token=token
        )

    async def UpdateResourceGroup(
        self, request: pb.UpdateResourceGroupRequest, context: Ctx
    ) -> pb.ResourceGroup:
        m = request.resource_group
        fields = fieldmask.paths(request.update_mask.paths, mapping.GROUP_FIELDS)
        return mapping.resource_group(
            *await self._groups.update(m.name, m.etag, mapping.group_update(m, fields))
        )

    async def DeleteResourceGroup(
        self, request: pb.DeleteResourceGroupRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._groups.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()
