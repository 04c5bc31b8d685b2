"""The public listener: its HTTP filters (gRPC-Web, HTTP/JSON transcoding, ext_authz, router),
tracing, access log and the protections of its HTTP connection manager."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import (
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from pai_gateway.model import GatewayConfig
from pai_gateway.xds import (
    ADS,
    EXT_AUTHZ,
    LISTENER_NAME,
    OTEL_CLUSTER,
    ROUTE_NAME,
    address,
    pack,
    seconds,
    service_cluster,
)


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
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(log))


def _http_filters(config: GatewayConfig) -> list[hcm_pb2.HttpFilter]:
    """gRPC-Web, then HTTP/JSON transcoding, then ext_authz, then the router.

    The transcoder must come before ext_authz: REST requests only become `/pai.<svc>.v1.S/M`
    calls (which the authorizer knows) once transcoded.
    """
    filters = [
        hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_web", typed_config=pack(grpc_web_pb2.GrpcWeb())),
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
            hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_json_transcoder", typed_config=pack(transcoder))
        )
    authz = ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=service_cluster("auth")),
            timeout=seconds(2),
        ),
        transport_api_version=config_source_pb2.V3,
        with_request_body=ext_authz_pb2.BufferSettings(
            max_request_bytes=1 << 20, allow_partial_message=False, pack_as_bytes=True
        ),
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
    )
    filters.append(hcm_pb2.HttpFilter(name=EXT_AUTHZ, typed_config=pack(authz)))
    filters.append(
        hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))
    )
    return filters


def _tracing(config: GatewayConfig) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    """Spans of every request to the OTLP collector, when there is one."""
    if not config.otlp_endpoint:
        return None
    from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
    from envoy.type.v3 import percent_pb2

    otel = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=OTEL_CLUSTER),
            timeout=seconds(1),
        ),
        service_name="pai-gateway",
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry", typed_config=pack(otel)),
        random_sampling=percent_pb2.Percent(value=100.0),
        spawn_upstream_span=wrappers_pb2.BoolValue(value=True),
    )


def listener(config: GatewayConfig) -> any_pb2.Any:
    """The public port: one HTTP connection manager with the filters above, routes over RDS."""
    manager = hcm_pb2.HttpConnectionManager(
        tracing=_tracing(config),
        stat_prefix="pai",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ADS, route_config_name=ROUTE_NAME),
        http_filters=_http_filters(config),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        access_log=[_access_log(config.access_log_path)],
        stream_idle_timeout=seconds(300),
        # Clients cannot smuggle identity: no underscore twins of our headers, the peer address
        # is Envoy's own view, and paths are normalised before they are matched and authorized.
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            headers_with_underscores_action=protocol_pb2.HttpProtocolOptions.REJECT_REQUEST
        ),
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        merge_slashes=True,
    )
    return pack(
        listener_pb2.Listener(
            name=LISTENER_NAME,
            address=address(f"{config.listen_host}:{config.listen_port}"),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
                        )
                    ]
                )
            ],
        )
    )


def cached_listener(config: GatewayConfig) -> any_pb2.Any:
    """The listener, keyed on the listener's own fields only: a route or upstream change does not
    rebuild it."""
    return _listener_cached(dataclasses.replace(config, upstreams=(), routes=()))


@lru_cache(maxsize=16)
def _listener_cached(config: GatewayConfig) -> any_pb2.Any:
    return listener(config)
