"""The `grpc.aio` server every service runs: interceptors, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pai_common.interceptors import (
    Authentication,
    Chain,
    Completion,
    CompletionHook,
    ErrorMapping,
    RequestLog,
    Tracing,
    Validation,
)
from pai_common.principal import Authorizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Servicer:
    """One gRPC service implementation and the generated function that registers it."""

    name: str  # full service name, e.g. pai.auth.v1.IdentityService
    implementation: object
    register: Callable[[Any, grpc.aio.Server], None]

    @classmethod
    def of(cls, implementation: object) -> Servicer:
        """The servicer of `implementation`, a subclass of a generated `<Service>Servicer`: the name and
        the register function follow from that class (a proto package is its Python module path)."""
        for base in type(implementation).__mro__:
            module = sys.modules.get(base.__module__)
            register = getattr(module, f"add_{base.__name__}_to_server", None)
            if register is not None and base.__module__.endswith("_pb2_grpc"):
                package = base.__module__.rsplit(".", 1)[0]
                return cls(f"{package}.{base.__name__.removesuffix('Servicer')}", implementation, register)
        raise TypeError(f"{type(implementation).__name__} implements no generated gRPC service")


class GrpcServer:
    """A started server; `port` is the bound port (useful with `127.0.0.1:0`)."""

    def __init__(
        self,
        address: str,
        servicers: Sequence[Servicer],
        *,
        domain: str,
        authorizer: Authorizer,
        completion_hooks: Sequence[CompletionHook] = (),
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        chain = Chain(
            [
                Tracing(),
                RequestLog(),
                ErrorMapping(domain),
                Completion(completion_hooks),
                Authentication(authorizer),
                Validation(),
            ]
        )
        self._server = grpc.aio.server(
            interceptors=[chain],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        for s in servicers:
            s.register(s.implementation, self._server)
        names = [s.name for s in servicers]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self._names = names
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"

    async def start(self) -> None:
        """Start serving and report SERVING for the server and each service."""
        await self._server.start()
        for name in ("", *self._names):
            await _set(self.health, name, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening on %s", self.address, extra={"fields": {"address": self.address}})

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, then let in-flight calls finish for up to `grace` seconds."""
        for name in ("", *self._names):
            await _set(self.health, name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace)

    async def wait(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()


async def _set(servicer: Any, name: str, status: Any) -> None:
    result = servicer.set(name, status)
    if asyncio.iscoroutine(result):
        await result


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a graceful shutdown."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event
