"""`pai.gateway.v1.GatewayService`: status, the live route table, and declared endpoint routes."""

from __future__ import annotations

import time
from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from pai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from pai_common import fieldmask, pagination
from pai_common.errors import FieldViolation, InvalidArgument, NotFound
from pai_common.etags import check_etag, content_etag
from pai_gateway import resources
from pai_gateway.control import ControlPlane
from pai_gateway.model import EndpointRoute, InvalidRoute, Revision
from pai_gateway.store import RouteStore

KINDS = {"predict": gateway_pb2.EndpointRoute.PREDICT, "dsw": gateway_pb2.EndpointRoute.NOTEBOOK}
PREFIXES = {"predict": "predict", "dsw": "notebook"}
FIELDS = ("resource", "permission", "revisions")


def route_name(route: EndpointRoute) -> str:
    return f"endpointRoutes/{PREFIXES[route.kind]}-{route.name}"


def parse_name(name: str) -> tuple[str, str]:
    tail = name.removeprefix("endpointRoutes/")
    for kind, prefix in PREFIXES.items():
        if tail.startswith(prefix + "-"):
            return kind, tail[len(prefix) + 1 :]
    raise InvalidArgument(
        "INVALID_ARGUMENT",
        f"{name!r} is not endpointRoutes/{{predict|notebook}}-{{id}}",
        violations=[FieldViolation("name", "malformed endpoint route name")],
    )


def etag(route: EndpointRoute) -> str:
    return content_etag(repr(route))


def to_proto(route: EndpointRoute, updated: float) -> gateway_pb2.EndpointRoute:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(updated * 1e9))
    return gateway_pb2.EndpointRoute(
        name=route_name(route),
        kind=KINDS[route.kind],
        id=route.name,
        resource=route.resource,
        permission=route.permission,
        revisions=[
            gateway_pb2.RouteRevision(
                name=r.name, weight=r.weight, addresses=list(r.addresses), health_path=r.health_path
            )
            for r in route.revisions
        ],
        update_time=ts,
        etag=etag(route),
    )


def describe(snapshot_routes: Any) -> list[gateway_pb2.RouteEntry]:
    """The live route table, read back from the RouteConfiguration Envoy was sent."""
    config = route_pb2.RouteConfiguration()
    snapshot_routes.Unpack(config)
    entries = []
    for vh in config.virtual_hosts:
        for r in vh.routes:
            match = f"path {r.match.path}" if r.match.path else f"prefix {r.match.prefix}"
            for h in r.match.headers:
                match += f" + {h.name}: {h.string_match.exact}"
            if r.HasField("direct_response"):
                target = f"direct {r.direct_response.status}"
            elif r.route.HasField("weighted_clusters"):
                target = ", ".join(f"{c.name}={c.weight.value}" for c in r.route.weighted_clusters.clusters)
            else:
                target = r.route.cluster
            entries.append(gateway_pb2.RouteEntry(name=r.name, match=match, target=target))
    return entries


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, control: ControlPlane, store: RouteStore | None) -> None:
        self._control = control
        self._store = store
        self._updated: dict[tuple[str, str], float] = {}
        # Routes declared through this API (kept on disk); routes from events are not saved, they
        # are rebuilt from the stream.
        self._declared = {(r.kind, r.name) for r in (store.load() if store is not None else ())}

    def _find(self, name: str) -> EndpointRoute:
        kind, ident = parse_name(name)
        for r in self._control.config.routes:
            if (r.kind, r.name) == (kind, ident):
                return r
        raise NotFound("ENDPOINT_ROUTE_NOT_FOUND", f"{name} not found", resource=name)

    def _save(self) -> None:
        if self._store is not None:
            self._store.save(
                tuple(r for r in self._control.config.routes if (r.kind, r.name) in self._declared)
            )

    async def GetGatewayStatus(self, request: Any, context: Any) -> gateway_pb2.GatewayStatus:
        ads = self._control.ads
        nodes = []
        for node in ads.nodes.values():
            types = []
            for t, s in node.types.items():
                nack = timestamp_pb2.Timestamp()
                if s.nacked_at:
                    nack.FromNanoseconds(int(s.nacked_at * 1e9))
                types.append(
                    gateway_pb2.ResourceTypeStatus(
                        type_url=t,
                        acked_version=s.acked_version,
                        nacked_version=s.nacked_version,
                        nack_message=s.nack_message,
                        nack_time=nack if s.nacked_at else None,
                    )
                )
            nodes.append(
                gateway_pb2.EnvoyNode(
                    node_id=node.node_id,
                    connected=node.connected,
                    synced_version=node.synced_version,
                    types=types,
                )
            )
        return gateway_pb2.GatewayStatus(
            snapshot_version=ads.snapshot.version, nodes=nodes, rejections=list(ads.rejections[-20:])
        )

    async def GetRouteTable(self, request: Any, context: Any) -> gateway_pb2.RouteTable:
        await self._control.flush()
        snapshot = self._control.ads.snapshot
        _, routes = snapshot.items[resources.ROUTE][resources.ROUTE_NAME]
        return gateway_pb2.RouteTable(snapshot_version=snapshot.version, routes=describe(routes))

    async def GetEndpointRoute(self, request: Any, context: Any) -> gateway_pb2.EndpointRoute:
        route = self._find(request.name)
        return to_proto(route, self._updated.get((route.kind, route.name), 0.0))

    async def ListEndpointRoutes(self, request: Any, context: Any) -> gateway_pb2.ListEndpointRoutesResponse:
        size = pagination.page_size(request.page_size)
        fp = pagination.fingerprint()
        after = pagination.decode_token(request.page_token, fp)
        routes = sorted(self._control.config.routes, key=route_name)
        if after is not None:
            routes = [r for r in routes if route_name(r) > after]
        page, rest = routes[:size], routes[size:]
        token = pagination.PageToken(route_name(page[-1]), fp).encode() if rest and page else ""
        return gateway_pb2.ListEndpointRoutesResponse(
            endpoint_routes=[to_proto(r, self._updated.get((r.kind, r.name), 0.0)) for r in page],
            next_page_token=token,
        )

    async def UpdateEndpointRoute(self, request: Any, context: Any) -> gateway_pb2.EndpointRoute:
        given = request.endpoint_route
        kind, ident = parse_name(given.name)
        fields = fieldmask.paths(request.update_mask.paths, FIELDS)
        try:
            current = self._find(given.name)
        except NotFound:
            if not request.allow_missing:
                raise
            current = EndpointRoute(kind, ident, (), websocket=kind == "dsw")
        else:
            check_etag(given.etag, etag(current), resource=given.name)
        revisions = tuple(
            Revision(r.name, r.weight, tuple(r.addresses), r.health_path or "/v2/health/ready")
            for r in given.revisions
        )
        route = EndpointRoute(
            kind,
            ident,
            revisions if "revisions" in fields else current.revisions,
            resource=given.resource if "resource" in fields else current.resource,
            permission=given.permission if "permission" in fields else current.permission,
            websocket=current.websocket,
        )
        try:
            self._control.set_route(route)
        except InvalidRoute as exc:
            raise InvalidArgument(
                "INVALID_ROUTE", str(exc), violations=[FieldViolation("endpoint_route", str(exc))]
            ) from exc
        self._updated[(kind, ident)] = time.time()
        self._declared.add((kind, ident))
        self._save()
        return to_proto(route, self._updated[(kind, ident)])

    async def DeleteEndpointRoute(self, request: Any, context: Any) -> empty_pb2.Empty:
        route = self._find(request.name)
        check_etag(request.etag, etag(route), resource=request.name)
        self._control.remove_route(route.kind, route.name)
        self._declared.discard((route.kind, route.name))
        self._save()
        return empty_pb2.Empty()
