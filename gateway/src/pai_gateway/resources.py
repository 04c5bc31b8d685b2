"""Envoy resources (clusters, endpoints, listener, routes) built from the gateway's model.

Each resource is built from a small frozen input and cached packed, so a change to one route or
one revision rebuilds only the resources that depend on it. The builders are `clusters`, `routes`
and `listener`; this module puts together what one gateway serves, by type URL and name.
"""

from __future__ import annotations

from functools import partial

from google.protobuf import any_pb2

from pai_gateway import clusters, routes
from pai_gateway.listener import cached_listener
from pai_gateway.model import SERVICES, GatewayConfig, Upstream
from pai_gateway.xds import LISTENER_NAME, OTEL_CLUSTER, Memo, revision_cluster, service_cluster
from pai_gateway.xds import ROUTE_NAME as ROUTE_NAME

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

_CLUSTERS = Memo()
_ENDPOINTS = Memo()


def with_every_service(upstreams: tuple[Upstream, ...]) -> tuple[Upstream, ...]:
    """Every pai API is routed (and so authorized) even while its service is not running:
    a caller without a token gets 401, one with a token 503 until the service is up."""
    known = {u.name for u in upstreams}
    return (*upstreams, *(Upstream(name, ()) for name in SERVICES if name not in known))


def build(config: GatewayConfig) -> dict[str, dict[str, any_pb2.Any]]:
    """Every resource of one gateway, by type URL and name."""
    built_clusters: dict[str, any_pb2.Any] = {}
    endpoints: dict[str, any_pb2.Any] = {}
    for upstream in with_every_service(config.upstreams):
        name = service_cluster(upstream.name)
        built_clusters[name] = _CLUSTERS.get(name, (), partial(clusters.grpc_service_cluster, upstream.name))
        endpoints[name] = _ENDPOINTS.get(
            name, upstream.addresses, partial(clusters.load_assignment, name, upstream.addresses)
        )
    for route in config.routes:
        for revision in route.revisions:
            name = revision_cluster(route, revision)
            built_clusters[name] = _CLUSTERS.get(
                name,
                revision.health_path,
                partial(clusters.revision_cluster_resource, name, revision.health_path, False),
            )
            endpoints[name] = _ENDPOINTS.get(
                name, revision.addresses, partial(clusters.load_assignment, name, revision.addresses)
            )
    if config.otlp_endpoint:
        built_clusters[OTEL_CLUSTER] = clusters.collector_cluster()
        endpoints[OTEL_CLUSTER] = clusters.load_assignment(OTEL_CLUSTER, (config.otlp_endpoint,))
    _CLUSTERS.keep_only(set(built_clusters))
    _ENDPOINTS.keep_only(set(endpoints))
    return {
        CLUSTER: built_clusters,
        ENDPOINT: endpoints,
        LISTENER: {LISTENER_NAME: cached_listener(config)},
        ROUTE: {ROUTE_NAME: routes.route_configuration(with_every_service(config.upstreams), config.routes)},
    }
