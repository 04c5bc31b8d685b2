"""`pai gateway status|routes`: what the control plane pushed to Envoy, and what Envoy did with it."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from pai.gateway.v1 import gateway_pb2
from pai_cli.commands.common import Context, Subparsers, add_command, add_group
from pai_cli.output import Column, field

_SHORT = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "clusters",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "endpoints",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "listeners",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "routes",
}

ROUTE_COLUMNS = (
    Column("NAME", field("name")),
    Column("MATCH", field("match")),
    Column("TARGET", field("target")),
)


def register(subparsers: Subparsers) -> None:
    """Add `gateway` to the command line."""
    group = add_group(subparsers, "gateway", "the Envoy gateway and its control plane (platform admins)")
    add_command(group, "status", status, "Envoy connected? last ACKed and NACKed version per resource type")
    add_command(group, "routes", routes, "the live route table, in match order")


def status(ctx: Context) -> int:
    """GetGatewayStatus; exit 1 when no Envoy is connected or one is behind."""
    result: gateway_pb2.GatewayStatus = ctx.client.call(
        ctx.client.gateway.GetGatewayStatus, gateway_pb2.GetGatewayStatusRequest()
    )
    if ctx.output.json:
        ctx.output.document(MessageToDict(result))
    else:
        rows: list[list[str]] = []
        for node in result.nodes:
            for t in node.types:
                rows.append(
                    [
                        node.node_id,
                        "yes" if node.connected else "no",
                        _SHORT.get(t.type_url, t.type_url),
                        t.acked_version or "-",
                        t.nacked_version or "-",
                        t.nack_message[:80] or "-",
                    ]
                )
        ctx.output.line(f"snapshot version {result.snapshot_version}")
        ctx.output.table(["ENVOY", "CONNECTED", "TYPE", "ACKED", "NACKED", "NACK REASON"], rows)
        for rejection in result.rejections:
            ctx.output.line(f"refused by validation: {rejection}")
    healthy = any(n.connected and n.synced_version >= result.snapshot_version for n in result.nodes)
    return 0 if healthy else 1


def routes(ctx: Context) -> int:
    """GetRouteTable."""
    table: gateway_pb2.RouteTable = ctx.client.call(
        ctx.client.gateway.GetRouteTable, gateway_pb2.GetRouteTableRequest()
    )
    ctx.output.resources(list(table.routes), ROUTE_COLUMNS, "routes")
    return 0
