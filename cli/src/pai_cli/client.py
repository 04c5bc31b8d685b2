"""A small synchronous client: one channel, the service stubs, the key on every call, errors made readable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from pai.auth.v1 import (
    audit_pb2_grpc,
    authorization_pb2,
    authorization_pb2_grpc,
    identity_pb2_grpc,
    workspace_pb2_grpc,
)
from pai.dlc.v1 import job_pb2_grpc, sweep_pb2_grpc
from pai.gateway.v1 import gateway_pb2_grpc
from pai.lineage.v1 import dataset_pb2_grpc, lineage_pb2_grpc, model_pb2_grpc
from pai.scheduler.v1 import node_pb2_grpc, quota_pb2_grpc, workload_pb2_grpc
from pai_cli.errors import from_rpc_error

T = TypeVar("T")

# Long enough for a slow first call (SQLite warm-up), short enough that a stuck server is noticed.
CALL_TIMEOUT_SECONDS = 20.0
# Items asked for per page when walking a whole collection (the server coerces more than 1000).
PAGE_SIZE = 200

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def channel_options(target: str) -> list[tuple[str, Any]]:
    """Channel options; a proxy from the environment must not sit between us and this machine."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if target.startswith(_LOOPBACK):
        options.append(("grpc.enable_http_proxy", 0))
    return options


class Client:
    """The services' stubs over one channel; every call carries `authorization: Bearer <key>`.

    The endpoint is normally the gateway, which routes `/pai.<service>.v1.*` to each service.
    """

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        self.endpoint = endpoint
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel = grpc.insecure_channel(endpoint, options=channel_options(endpoint))
        self.identity: identity_pb2_grpc.IdentityServiceStub = identity_pb2_grpc.IdentityServiceStub(
            self._channel
        )
        self.workspaces: workspace_pb2_grpc.WorkspaceServiceStub = workspace_pb2_grpc.WorkspaceServiceStub(
            self._channel
        )
        self.authorization: authorization_pb2_grpc.AuthorizationServiceStub = (
            authorization_pb2_grpc.AuthorizationServiceStub(self._channel)
        )
        self.audit: audit_pb2_grpc.AuditServiceStub = audit_pb2_grpc.AuditServiceStub(self._channel)
        self.gateway: gateway_pb2_grpc.GatewayServiceStub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self.quotas: quota_pb2_grpc.QuotaServiceStub = quota_pb2_grpc.QuotaServiceStub(self._channel)
        self.nodes: node_pb2_grpc.NodeServiceStub = node_pb2_grpc.NodeServiceStub(self._channel)
        self.workloads: workload_pb2_grpc.WorkloadServiceStub = workload_pb2_grpc.WorkloadServiceStub(
            self._channel
        )
        self.jobs: job_pb2_grpc.JobServiceStub = job_pb2_grpc.JobServiceStub(self._channel)
        self.sweeps: sweep_pb2_grpc.SweepServiceStub = sweep_pb2_grpc.SweepServiceStub(self._channel)
        self.datasets: dataset_pb2_grpc.DatasetServiceStub = dataset_pb2_grpc.DatasetServiceStub(
            self._channel
        )
        self.models: model_pb2_grpc.ModelRegistryServiceStub = model_pb2_grpc.ModelRegistryServiceStub(
            self._channel
        )
        self.lineage: lineage_pb2_grpc.LineageServiceStub = lineage_pb2_grpc.LineageServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Callable[..., T], request: Message) -> T:
        """Call one unary method; a failure becomes an `ApiError` that says what went wrong."""
        try:
            return method(request, metadata=self._metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.endpoint) from None

    def stream(self, method: Callable[..., Iterable[T]], request: Message) -> Iterator[T]:
        """Read a server stream (no deadline: `logs -f` runs as long as the job); errors as in `call`."""
        try:
            yield from method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.endpoint) from None

    def whoami(self) -> authorization_pb2.Principal:
        """The caller's principal (GetCurrentPrincipal)."""
        principal: authorization_pb2.Principal = self.call(
            self.authorization.GetCurrentPrincipal, authorization_pb2.GetCurrentPrincipalRequest()
        )
        return principal


def collect(fetch: Callable[[str, int], tuple[Sequence[T], str]], limit: int | None = None) -> list[T]:
    """Every item of a List method, page after page, or the first `limit` of them.

    `fetch(page_token, page_size)` returns one page's items and its `next_page_token`.
    """
    items: list[T] = []
    token = ""
    while True:
        wanted = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
        page, token = fetch(token, wanted)
        items.extend(page)
        if not token or (limit is not None and len(items) >= limit):
            return items if limit is None else items[:limit]
