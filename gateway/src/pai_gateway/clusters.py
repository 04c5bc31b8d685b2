"""Envoy clusters and their endpoints: the pai services, the serving revisions, the collector."""

from __future__ import annotations

from functools import lru_cache

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, wrappers_pb2

from pai_gateway.xds import ADS, OTEL_CLUSTER, address, pack, seconds, service_cluster


def _protocol_options(http2: bool) -> dict[str, any_pb2.Any]:
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if http2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    options = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": pack(options)}


def _eds_cluster(name: str, connect_timeout: float, http2: bool, **extra: object) -> any_pb2.Any:
    """A cluster whose endpoints come over EDS on the ADS stream."""
    return pack(
        cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
            connect_timeout=seconds(connect_timeout),
            typed_extension_protocol_options=_protocol_options(http2=http2),
            **extra,
        )
    )


def _health_check(interval: float, **checker: object) -> list[health_check_pb2.HealthCheck]:
    """An active check every `interval`: two misses make an endpoint unhealthy (a busy
    single-threaded server must not flap), one answer makes it healthy again."""
    return [
        health_check_pb2.HealthCheck(
            timeout=seconds(1),
            interval=seconds(interval),
            unhealthy_threshold=wrappers_pb2.UInt32Value(value=2),
            healthy_threshold=wrappers_pb2.UInt32Value(value=1),
            **checker,
        )
    ]


def grpc_service_cluster(name: str) -> any_pb2.Any:
    """A pai service: HTTP/2 upstream, gRPC health checks, endpoints over EDS."""
    return _eds_cluster(
        service_cluster(name),
        1,
        http2=True,
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        health_checks=_health_check(2, grpc_health_check=health_check_pb2.HealthCheck.GrpcHealthCheck()),
    )


@lru_cache(maxsize=1)
def collector_cluster() -> any_pb2.Any:
    """The OTLP/gRPC collector Envoy exports its spans to."""
    return _eds_cluster(OTEL_CLUSTER, 1, http2=True)


def revision_cluster_resource(name: str, health_path: str, http2: bool) -> any_pb2.Any:
    """A serving revision: least-request inside it, active health checks, outlier ejection,
    and circuit breakers, so one dead replica is taken out of rotation within a second."""
    return _eds_cluster(
        name,
        0.5,
        http2=http2,
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        health_checks=_health_check(
            1, http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path=health_path)
        ),
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            # 5xx can be one caller's bad input: only a run of them ejects a replica.
            consecutive_5xx=wrappers_pb2.UInt32Value(value=10),
            consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=1),
            enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
            consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=1),
            enforcing_consecutive_local_origin_failure=wrappers_pb2.UInt32Value(value=100),
            split_external_local_origin_errors=True,
            interval=seconds(0.5),
            base_ejection_time=seconds(10),
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


def load_assignment(cluster: str, addresses: tuple[str, ...]) -> any_pb2.Any:
    """The endpoints of one cluster."""
    endpoints = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=address(a)))
        for a in addresses
    ]
    return pack(
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=cluster,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)],
        )
    )
