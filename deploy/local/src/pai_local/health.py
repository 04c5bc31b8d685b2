"""Readiness checks: the standard gRPC health service, NATS's monitoring endpoint."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pai_local.ports import split_address

# A proxy from the user's environment must not sit between us and 127.0.0.1.
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


async def grpc_serving(address: str, deadline: float = 1.0) -> bool:
    """Whether the server at `address` reports the overall service "" as SERVING."""
    # A fresh channel per check: a reused one would sit in reconnect backoff after the
    # server was down, and report it late.
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def http_ok(url: str, deadline: float = 1.0) -> bool:
    """Whether GET `url` (plain http, on this machine) answers 200."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, port = split_address(hostport)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), deadline)
    except (OSError, TimeoutError):
        return False
    try:
        # HTTP/1.1: Envoy refuses HTTP/1.0 by default (426).
        writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), deadline)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status.split()
    return len(parts) >= 2 and parts[1] == b"200"
