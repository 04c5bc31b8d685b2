"""`python -m pai_gateway`: the xDS control plane, plus the gateway API, until SIGTERM.

Upstreams come from `PAI_<SERVICE>_ENDPOINT` (set by `make up` for every service it runs);
the public listener from `PAI_GATEWAY_PUBLIC` (default: `PAI_ENVOY_ENDPOINT`, else
127.0.0.1:8080). Envoy itself runs as its own process (`python -m pai_gateway.envoy`), so it
keeps serving while this one restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import grpc
import nats
from envoy.service.discovery.v3 import ads_pb2_grpc

from pai.gateway.v1 import gateway_pb2_grpc
from pai_common import config, events, telemetry
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, Servicer, stop_event
from pai_common.remote_auth import RemoteAuthorizer
from pai_gateway.ads import AggregatedDiscovery
from pai_gateway.api import GatewayServicer
from pai_gateway.app import descriptor_set, pai_services
from pai_gateway.control import ControlPlane
from pai_gateway.model import SERVICES, GatewayConfig, Upstream
from pai_gateway.projection import RouteProjection, follow
from pai_gateway.store import RouteStore

log = logging.getLogger("pai_gateway")


def upstreams(settings: config.Settings) -> tuple[Upstream, ...]:
    found = []
    for name in SERVICES:
        address = os.environ.get(f"PAI_{name.upper()}_ENDPOINT", "")
        if name == "auth":
            address = address or settings.auth_endpoint
        if name == "gateway":
            address = settings.listen  # the gateway API is served here, next to ADS
        if address:
            found.append(Upstream(name, (address,)))
    return tuple(found)


def otlp_address(settings: config.Settings) -> str:
    """host:port of the OTLP/gRPC collector the services export to, for Envoy's tracer too."""
    if settings.otel_exporter != "otlp":
        return ""
    endpoint = settings.otel_endpoint or "127.0.0.1:4317"
    return endpoint.split("://", 1)[-1].rstrip("/")


async def run() -> None:
    settings = config.load("gateway")
    telemetry.setup_logging("gateway", settings.log_level, settings.log_format)
    telemetry.setup_tracing("gateway", settings.otel_exporter, settings.otel_endpoint)
    public = settings.get("public") or os.environ.get("PAI_ENVOY_ENDPOINT") or "127.0.0.1:8080"
    host, _, port = str(public).rpartition(":")
    descriptors = descriptor_set()
    store = RouteStore(settings.data_dir / "routes.json")
    gateway_config = GatewayConfig(
        listen_host=host,
        listen_port=int(port),
        upstreams=upstreams(settings),
        routes=store.load(),
        descriptor_set=descriptors,
        grpc_services=pai_services(descriptors),
        access_log_path=str(settings.get("access_log", settings.home / "logs" / "envoy-access.log")),
        otlp_endpoint=otlp_address(settings),
    )
    ads = AggregatedDiscovery()
    control = ControlPlane(gateway_config, ads)
    auth_channel = channel(settings.auth_endpoint)
    server = GrpcServer(
        settings.listen,
        [
            Servicer(
                "envoy.service.discovery.v3.AggregatedDiscoveryService",
                ads,
                ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server,
            ),
            Servicer(
                "pai.gateway.v1.GatewayService",
                GatewayServicer(control, store),
                gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
            ),
        ],
        domain="gateway.pai.dev",
        authorizer=RemoteAuthorizer(auth_channel),
    )
    await control.start()
    nc = await nats.connect(settings.nats_url, name="pai-gateway", max_reconnect_attempts=-1)
    js = nc.jetstream()
    await events.ensure_stream(js)
    # Routes from eas and dsw facts, replayed from the start; Envoy is served only once the
    # replay has caught up, so it never sees a state from halfway through the history.
    caught_up = asyncio.Event()
    await follow(js, RouteProjection(control), caught_up=caught_up)
    try:
        await asyncio.wait_for(caught_up.wait(), 60)
    except TimeoutError:
        log.warning("the event replay has not caught up after 60 s; serving what is known")
    await control.flush()
    await server.start()
    print(f"pai gateway: control plane on {server.address}, Envoy listener {public}", flush=True)
    try:
        await stop_event().wait()
    finally:
        await server.stop()
        await control.stop()
        await nc.close()
        await auth_channel.close()


def main() -> None:
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except (OSError, grpc.RpcError, ValueError) as exc:
        print(f"pai gateway: failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
