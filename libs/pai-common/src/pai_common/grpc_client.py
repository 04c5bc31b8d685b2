"""Client channels: credentials, request ids and trace context on every outgoing call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from pai_common import telemetry


class _Metadata(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds `authorization`, `x-request-id` and `traceparent` to each call's metadata."""

    def __init__(self, credential: Callable[[], str] | None) -> None:
        self._credential = credential

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        keys = {k for k, _ in metadata}
        if self._credential is not None and "authorization" not in keys:
            credential = self._credential()
            if credential:
                metadata.append(("authorization", f"Bearer {credential}"))
        if "x-request-id" not in keys and (rid := telemetry.request_id_var.get()):
            metadata.append(("x-request-id", rid))
        carrier: dict[str, str] = {}
        telemetry.inject(carrier)
        metadata.extend((k, v) for k, v in carrier.items() if k not in keys)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def channel(target: str, credential: str | Callable[[], str] | None = None) -> grpc.aio.Channel:
    """An insecure (loopback / in-cluster) channel that presents `credential` on every call."""
    supplier: Callable[[], str] | None
    if isinstance(credential, str):
        value = credential
        supplier = lambda: value  # noqa: E731
    else:
        supplier = credential
    return grpc.aio.insecure_channel(
        target,
        interceptors=[_Metadata(supplier)],
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
