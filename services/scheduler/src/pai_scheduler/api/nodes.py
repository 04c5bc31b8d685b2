"""`NodeService`: each method maps its request, calls one use case, maps the answer back."""

from __future__ import annotations

from typing import TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.scheduler.v1 import node_pb2 as pb
from pai.scheduler.v1 import node_pb2_grpc
from pai_common import fieldmask
from pai_scheduler import mapping
from pai_scheduler.app.nodes import Nodes

Ctx: TypeAlias = grpc.aio.ServicerContext


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """The NodeService RPCs over the node use cases."""

    def __init__(self, nodes: Nodes) -> None:
        self._nodes = nodes

    async def RegisterNode(self, request: pb.RegisterNodeRequest, context: Ctx) -> pb.Node:
        node = mapping.node_from(request.parent, request.node_id, request.node)
        return mapping.node(*await self._nodes.register(node, request.request_id))

    async def GetNode(self, request: pb.GetNodeRequest, context: Ctx) -> pb.Node:
        return mapping.node(*self._nodes.get(request.name))

    async def ListNodes(self, request: pb.ListNodesRequest, context: Ctx) -> pb.ListNodesResponse:
        nodes, token = self._nodes.list_nodes(
            request.parent, request.filter, request.page_size, request.page_token
        )
        return pb.ListNodesResponse(nodes=[mapping.node(*n) for n in nodes], next_page_token=token)

    async def UpdateNode(self, request: pb.UpdateNodeRequest, context: Ctx) -> pb.Node:
        m = request.node
        fields = fieldmask.paths(request.update_mask.paths, mapping.NODE_FIELDS)
        return mapping.node(*await self._nodes.update(m.name, m.etag, mapping.node_update(m, fields)))

    async def DeleteNode(self, request: pb.DeleteNodeRequest, context: Ctx) -> empty_pb2.Empty:
        await self._nodes.delete(request.name, request.etag, request.force)
        return empty_pb2.Empty()

    async def CordonNode(self, request: pb.CordonNodeRequest, context: Ctx) -> pb.Node:
        return mapping.node(
            *await self._nodes.cordon(request.name, request.etag, request.reason, drain=request.drain)
        )

    async def UncordonNode(self, request: pb.UncordonNodeRequest, context: Ctx) -> pb.Node:
        return mapping.node(*await self._nodes.uncordon(request.name, request.etag))

    async def ReportNodeHealth(self, request: pb.ReportNodeHealthRequest, context: Ctx) -> pb.Node:
        ready = request.state == pb.Node.READY
        return mapping.node(*await self._nodes.report_health(request.name, ready, request.message))

    async def ImportNodes(self, request: pb.ImportNodesRequest, context: Ctx) -> pb.ImportNodesResponse:
        imported = await self._nodes.import_nodes(
            request.parent,
            request.csv_content,
            replicas=request.replicas or 1,
            gpu_memory_bytes=dict(request.gpu_memory_bytes),
            labels=dict(request.labels),
            replace=request.mode == pb.ImportNodesRequest.REPLACE,
            validate_only=request.validate_only,
        )
        return mapping.import_response(*imported)
