"""Envoy resources (clusters, endpoints, listener, routes) built from the gateway's model.

Each resource is built from a small frozen input and cached packed, so a change to one route or
one revision rebuilds only the resources that depend on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, TypeVar, cast

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    health_check_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from pai_gateway.model import SERVICES, EndpointRoute, GatewayConfig, Revision, Upstream

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

LISTENER_NAME = "pai_public"
OTEL_CLUSTER = "otel_collector"
ROUTE_NAME = "pai_routes"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
REVISION_HEADER = "x-pai-revision"

ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    # Deterministic bytes: map order must not change a resource's digest across restarts.
    out.Pack(message, deterministic=True)  # type: ignore[arg-type]
    return out


def _seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def service_cluster(name: str) -> str:
    return f"svc_{name}"


def revision_cluster(route: EndpointRoute, revision: Revision) -> str:
    return f"ep_{route.kind}_{route.name}_{revision.name}"


def _protocol_options(http2: bool) -> dict[str, any_pb2.Any]:
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if http2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    options = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _pack(options)}


V = TypeVar("V")


class _Memo:
    """Built resources by name, rebuilt only when their inputs change. Unbounded by count (an
    LRU of fixed size falls off a cliff once there are more clusters than it holds); names gone
    from the configuration are dropped after each build."""

    def __init__(self) -> None:
        self._items: dict[object, tuple[object, Any]] = {}

    def get(self, name: object, key: object, make: Callable[[], V]) -> V:
        hit = self._items.get(name)
        if hit is not None and hit[0] == key:
            return cast(V, hit[1])
        value = make()
        self._items[name] = (key, value)
        return value

    def keep_only(self, names: set[object]) -> None:
        for name in [n for n in self._items if n not in names]:
            del self._items[name]


_CLUSTERS = _Memo()
_ENDPOINTS = _Memo()
_ROUTES = _Memo()
_TABLE = _Memo()


def grpc_service_cluster(name: str) -> any_pb2.Any:
    """A pai service: HTTP/2 upstream, gRPC health checks, endpoints over EDS."""
    cluster = cluster_pb2.Cluster(
        name=service_cluster(name),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
        connect_timeout=_seconds(1),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        typed_extension_protocol_options=_protocol_options(http2=True),
        health_checks=[
            health_check_pb2.HealthCheck(
                timeout=_seconds(1),
                interval=_seconds(2),
                unhealthy_threshold=wrappers_pb2.UInt32Value(value=2),
                healthy_threshold=wrappers_pb2.UInt32Value(value=1),
                grpc_health_check=health_check_pb2.HealthCheck.GrpcHealthCheck(),
            )
        ],
    )
    return _pack(cluster)


@lru_cache(maxsize=1)
def collector_cluster() -> any_pb2.Any:
    """The OTLP/gRPC collector Envoy exports its spans to."""
    return _pack(
        cluster_pb2.Cluster(
            name=OTEL_CLUSTER,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
            connect_timeout=_seconds(1),
            typed_extension_protocol_options=_protocol_options(http2=True),
        )
    )


def revision_cluster_resource(name: str, health_path: str, http2: bool) -> any_pb2.Any:
    """A serving revision: least-request inside it, active health checks, outlier ejection,
    and circuit breakers, so one dead replica is taken out of rotation within a second."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
        connect_timeout=_seconds(0.5),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        typed_extension_protocol_options=_protocol_options(http2=http2),
        health_checks=[
            health_check_pb2.HealthCheck(
                timeout=_seconds(1),
                interval=_seconds(1),
                # Two misses, not one: a busy single-threaded model server must not flap.
                unhealthy_threshold=wrappers_pb2.UInt32Value(value=2),
                healthy_threshold=wrappers_pb2.UInt32Value(value=1),
                http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path=health_path),
            )
        ],
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            # 5xx can be one caller's bad input: only a run of them ejects a replica.
            consecutive_5xx=wrappers_pb2.UInt32Value(value=10),
            consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=1),
            enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
            consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=1),
            enforcing_consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=100),
            split_external_local_origin_errors=True,
            interval=_seconds(0.5),
            base_ejection_time=_seconds(10),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=wrappers_pb2.UInt32Value(value=4096),
                    max_pending_requests=wrappers_pb2.UInt32Value(value=4096),
                    max_requests=wrappers_pb2.UInt32Value(value=8192),
                    max_retries=wrappers_pb2.UInt32Value(value=64),
                )
            ]
        ),
    )
    return _pack(cluster)


def _address(host_port: str) -> address_pb2.Address:
    host, _, port = host_port.rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


def load_assignment(cluster: str, addresses: tuple[str, ...]) -> any_pb2.Any:
    """The endpoints of one cluster."""
    endpoints = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_address(a)))
        for a in addresses
    ]
    return _pack(
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=cluster,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)],
        )
    )


_JSON = base_pb2.HeaderValueOption(
    header=base_pb2.HeaderValue(key="content-type", value="application/json"),
    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
)


def _disable_authz() -> dict[str, any_pb2.Any]:
    return {EXT_AUTHZ: _pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))}


def _json_reply(status: int, code: int, message: str) -> route_components_pb2.DirectResponseAction:
    body = f'{{"code": {code}, "message": "{message}", "details": []}}'
    return route_components_pb2.DirectResponseAction(
        status=status, body=base_pb2.DataSource(inline_string=body)
    )


def _endpoint_routes(route: EndpointRoute) -> list[route_components_pb2.Route]:
    """Pinned routes first (`x-pai-revision: <name>`), then the weighted split."""
    routes = []
    action = dict(
        # Model servers see their own paths; a notebook's server lives under its access path.
        prefix_rewrite="/" if route.kind == "predict" else "",
        timeout=_seconds(0),  # streaming responses and long inferences are not cut off
        retry_policy=route_components_pb2.RetryPolicy(
            # Model inference is a pure function of its inputs, so a request cut off by a dying
            # replica is retried on another; notebook calls (code execution) only when nothing
            # reached the server.
            retry_on="connect-failure,refused-stream,"
            + ("reset" if route.kind == "predict" else "reset-before-request"),
            num_retries=wrappers_pb2.UInt32Value(value=2),
            retry_host_predicate=[
                route_components_pb2.RetryPolicy.RetryHostPredicate(
                    name="envoy.retry_host_predicates.previous_hosts",
                    typed_config=_pack(_previous_hosts()),
                )
            ],
            host_selection_retry_max_attempts=3,
        ),
    )
    # Who may call is decided by auth on the owning resource, carried to ext_authz per route.
    authz = {
        EXT_AUTHZ: _pack(
            ext_authz_pb2.ExtAuthzPerRoute(
                check_settings=ext_authz_pb2.CheckSettings(
                    # The decision needs no body: inference inputs and uploads are not buffered.
                    disable_request_body_buffering=True,
                    context_extensions={
                        "pai.permission": route.required_permission,
                        "pai.resource": route.resource,
                        **({"pai.owner": route.owner} if route.owner else {}),
                    },
                )
            )
        )
    }
    upgrades = (
        [route_components_pb2.RouteAction.UpgradeConfig(upgrade_type="websocket")] if route.websocket else []
    )
    for revision in route.revisions:
        routes.append(
            route_components_pb2.Route(
                name=f"{route.kind}/{route.name}/{revision.name}",
                match=route_components_pb2.RouteMatch(
                    prefix=route.prefix,
                    headers=[
                        route_components_pb2.HeaderMatcher(
                            name=REVISION_HEADER,
                            string_match=string_pb2.StringMatcher(exact=revision.name),
                        )
                    ],
                ),
                route=route_components_pb2.RouteAction(
                    cluster=revision_cluster(route, revision), upgrade_configs=upgrades, **action
                ),
                typed_per_filter_config=authz,
            )
        )
    # A pin to a revision this endpoint does not have is an error, not a silent split.
    routes.append(
        route_components_pb2.Route(
            name=f"{route.kind}/{route.name}/unknown-revision",
            match=route_components_pb2.RouteMatch(
                prefix=route.prefix,
                headers=[route_components_pb2.HeaderMatcher(name=REVISION_HEADER, present_match=True)],
            ),
            direct_response=_json_reply(404, 5, f"no such revision of {route.name}"),
            typed_per_filter_config=_disable_authz(),
            response_headers_to_add=[_JSON],
        )
    )
    weighted = [
        route_components_pb2.WeightedCluster.ClusterWeight(
            name=revision_cluster(route, r), weight=wrappers_pb2.UInt32Value(value=r.weight)
        )
        for r in route.revisions
        if r.weight > 0
    ]
    routes.append(
        route_components_pb2.Route(
            name=f"{route.kind}/{route.name}",
            match=route_components_pb2.RouteMatch(prefix=route.prefix),
            route=route_components_pb2.RouteAction(
                weighted_clusters=route_components_pb2.WeightedCluster(clusters=weighted),
                upgrade_configs=upgrades,
                **action,
            ),
            typed_per_filter_config=authz,
        )
    )
    return routes


def _previous_hosts() -> object:
    from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

    return previous_hosts_pb2.PreviousHostsPredicate()


def routing_key(route: EndpointRoute) -> tuple[object, ...]:
    """What a route's entries depend on: not its replica addresses (those live in EDS)."""
    return (
        route.kind,
        route.name,
        route.resource,
        route.required_permission,
        route.websocket,
        route.owner,
        tuple((r.name, r.weight) for r in route.revisions),
    )


def route_configuration(upstreams: tuple[Upstream, ...], routes: tuple[EndpointRoute, ...]) -> any_pb2.Any:
    """The route table, rebuilt only when routing changes (an address change leaves it alone)."""
    key = (tuple(u.name for u in upstreams), tuple(routing_key(r) for r in routes))
    return _TABLE.get(ROUTE_NAME, key, partial(_route_configuration, upstreams, routes))


def _route_configuration(upstreams: tuple[Upstream, ...], routes: tuple[EndpointRoute, ...]) -> any_pb2.Any:
    """The one route table: health, gRPC by package prefix, endpoint routes, then a JSON 404."""
    table = [
        route_components_pb2.Route(
            name="healthz",
            match=route_components_pb2.RouteMatch(path="/healthz"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=200, body=base_pb2.DataSource(inline_string="ok\n")
            ),
            typed_per_filter_config=_disable_authz(),
        )
    ]
    for upstream in upstreams:
        table.append(
            route_components_pb2.Route(
                name=f"grpc/{upstream.name}",
                match=route_components_pb2.RouteMatch(prefix=f"/pai.{upstream.name}.v1."),
                route=route_components_pb2.RouteAction(
                    cluster=service_cluster(upstream.name),
                    timeout=_seconds(0),  # server streams (logs) stay open
                ),
            )
        )
    for route in routes:
        table.extend(
            _ROUTES.get((route.kind, route.name), routing_key(route), partial(_endpoint_routes, route))
        )
    table.append(
        route_components_pb2.Route(
            name="not-found",
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=_json_reply(404, 5, "no such route"),
            typed_per_filter_config=_disable_authz(),
            response_headers_to_add=[_JSON],
        )
    )
    config = route_pb2.RouteConfiguration(
        name=ROUTE_NAME,
        virtual_hosts=[route_components_pb2.VirtualHost(name="pai", domains=["*"], routes=table)],
    )
    return _pack(config)


def _access_log(path: str) -> accesslog_pb2.AccessLog:
    fmt = struct_pb2.Struct()
    fmt.update(
        {
            "time": "%START_TIME%",
            "method": "%REQ(:METHOD)%",
            "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
            "status": "%RESPONSE_CODE%",
            "grpc_status": "%GRPC_STATUS%",
            "flags": "%RESPONSE_FLAGS%",
            "upstream": "%UPSTREAM_HOST%",
            "cluster": "%UPSTREAM_CLUSTER%",
            "duration_ms": "%DURATION%",
            "request_id": "%REQ(X-REQUEST-ID)%",
            "traceparent": "%REQ(TRACEPARENT)%",
        }
    )
    log = file_pb2.FileAccessLog(
        path=path, log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fmt)
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=_pack(log))


def listener(config: GatewayConfig) -> any_pb2.Any:
    """The public port: gRPC-Web, then HTTP/JSON transcoding, then ext_authz, then the router.

    The transcoder must come before ext_authz: REST requests only become `/pai.<svc>.v1.S/M`
    calls (which the authorizer knows) once transcoded.
    """
    filters = [
        hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_web", typed_config=_pack(grpc_web_pb2.GrpcWeb())),
    ]
    if config.descriptor_set and config.grpc_services:
        transcoder = transcoder_pb2.GrpcJsonTranscoder(
            proto_descriptor_bin=config.descriptor_set,
            services=list(config.grpc_services),
            convert_grpc_status=True,
            print_options=transcoder_pb2.GrpcJsonTranscoder.PrintOptions(always_print_primitive_fields=True),
            # Unknown query parameters are ignored, so `?x=1` does not skip transcoding (and authz).
            ignore_unknown_query_parameters=True,
            request_validation_options=transcoder_pb2.GrpcJsonTranscoder.RequestValidationOptions(),
        )
        filters.append(
            hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_json_transcoder", typed_config=_pack(transcoder))
        )
    authz = ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=service_cluster("auth")),
            timeout=_seconds(2),
        ),
        transport_api_version=config_source_pb2.V3,
        with_request_body=ext_authz_pb2.BufferSettings(
            max_request_bytes=1 << 20, allow_partial_message=False, pack_as_bytes=True
        ),
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
    )
    filters.append(hcm_pb2.HttpFilter(name=EXT_AUTHZ, typed_config=_pack(authz)))
    filters.append(
        hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))
    )
    tracing = None
    if config.otlp_endpoint:
        from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
        from envoy.type.v3 import percent_pb2

        otel = opentelemetry_pb2.OpenTelemetryConfig(
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=OTEL_CLUSTER),
                timeout=_seconds(1),
            ),
            service_name="pai-gateway",
        )
        tracing = hcm_pb2.HttpConnectionManager.Tracing(
            provider=http_tracer_pb2.Tracing.Http(
                name="envoy.tracers.opentelemetry", typed_config=_pack(otel)
            ),
            random_sampling=percent_pb2.Percent(value=100.0),
            spawn_upstream_span=wrappers_pb2.BoolValue(value=True),
        )
    manager = hcm_pb2.HttpConnectionManager(
        tracing=tracing,
        stat_prefix="pai",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ADS, route_config_name=ROUTE_NAME),
        http_filters=filters,
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        access_log=[_access_log(config.access_log_path)],
        stream_idle_timeout=_seconds(300),
        # Clients cannot smuggle identity: no underscore twins of our headers, the peer address
        # is Envoy's own view, and paths are normalised before they are matched and authorized.
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            headers_with_underscores_action=protocol_pb2.HttpProtocolOptions.REJECT_REQUEST
        ),
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
    )
    return _pack(
        listener_pb2.Listener(
            name=LISTENER_NAME,
            address=_address(f"{config.listen_host}:{config.listen_port}"),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager)
                        )
                    ]
                )
            ],
        )
    )


def with_every_service(upstreams: tuple[Upstream, ...]) -> tuple[Upstream, ...]:
    """Every pai API is routed (and so authorized) even while its service is not running:
    a caller without a token gets 401, one with a token 503 until the service is up."""
    known = {u.name for u in upstreams}
    return (*upstreams, *(Upstream(name, ()) for name in SERVICES if name not in known))


def build(config: GatewayConfig) -> dict[str, dict[str, any_pb2.Any]]:
    """Every resource of one gateway, by type URL and name."""
    clusters: dict[str, any_pb2.Any] = {}
    endpoints: dict[str, any_pb2.Any] = {}
    for upstream in with_every_service(config.upstreams):
        name = service_cluster(upstream.name)
        clusters[name] = _CLUSTERS.get(name, (), partial(grpc_service_cluster, upstream.name))
        endpoints[name] = _ENDPOINTS.get(
            name, upstream.addresses, partial(load_assignment, name, upstream.addresses)
        )
    for route in config.routes:
        for revision in route.revisions:
            name = revision_cluster(route, revision)
            clusters[name] = _CLUSTERS.get(
                name,
                revision.health_path,
                partial(revision_cluster_resource, name, revision.health_path, False),
            )
            endpoints[name] = _ENDPOINTS.get(
                name, revision.addresses, partial(load_assignment, name, revision.addresses)
            )
    if config.otlp_endpoint:
        clusters[OTEL_CLUSTER] = collector_cluster()
        endpoints[OTEL_CLUSTER] = load_assignment(OTEL_CLUSTER, (config.otlp_endpoint,))
    _CLUSTERS.keep_only(set(clusters))
    _ENDPOINTS.keep_only(set(endpoints))
    _ROUTES.keep_only({(r.kind, r.name) for r in config.routes})
    return {
        CLUSTER: clusters,
        ENDPOINT: endpoints,
        # Keyed on the listener's own fields only: a route or upstream change does not rebuild it.
        LISTENER: {LISTENER_NAME: _listener_cached(dataclasses.replace(config, upstreams=(), routes=()))},
        ROUTE: {ROUTE_NAME: route_configuration(with_every_service(config.upstreams), config.routes)},
    }


@lru_cache(maxsize=16)
def _listener_cached(config: GatewayConfig) -> any_pb2.Any:
    """The listener depends only on the listener fields; routes and upstreams do not rebuild it."""
    return listener(config)
