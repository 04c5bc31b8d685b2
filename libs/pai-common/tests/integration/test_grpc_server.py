"""The chassis server on a real port: error mapping, deny by default, health, reflection, tracing, logs.

The servicer is a stand-in for a lineage DatasetService method (it has a declared authz rule);
the authorizer is a test double at the port, since auth's own behaviour is tested in services/auth.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace

from pai.api.v1 import annotations_pb2
from pai.lineage.v1 import dataset_pb2, dataset_pb2_grpc
from pai_common import telemetry
from pai_common.errors import NotFound, PermissionDenied
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.principal import Principal


class AllowUsersOnly:
    """Allows the credential `good`, refuses everything else."""

    async def authorize(self, credential: str, rule: annotations_pb2.AuthzRule, resource: str) -> Principal:
        if credential != "good":
            raise PermissionDenied("PERMISSION_DENIED", "no")
        return Principal(name="users/tester")


class Datasets(dataset_pb2_grpc.DatasetServiceServicer):
    async def GetDataset(self, request: dataset_pb2.GetDatasetRequest, context: Any) -> dataset_pb2.Dataset:
        if request.name.endswith("/boom"):
            raise RuntimeError("secret internals: /etc/passwd line 3")
        if request.name.endswith("/missing"):
            raise NotFound("DATASET_NOT_FOUND", f"{request.name} not found", resource=request.name)
        return dataset_pb2.Dataset(name=request.name)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    s = GrpcServer(
        "127.0.0.1:0",
        [
            Servicer(
                "pai.lineage.v1.DatasetService",
                Datasets(),
                dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            )
        ],
        domain="lineage.pai.dev",
        authorizer=AllowUsersOnly(),
    )
    await s.start()
    yield s.address
    await s.stop(0)


async def get(address: str, name: str, credential: str | None = "good", **kw: Any) -> Any:
    ch = channel(address, credential)
    try:
        return await dataset_pb2_grpc.DatasetServiceStub(ch).GetDataset(
            dataset_pb2.GetDatasetRequest(name=name), **kw
        )
    finally:
        await ch.close()


async def test_unexpected_errors_are_internal_with_a_request_id_and_no_trace(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(server, "workspaces/w/datasets/boom", metadata=(("x-request-id", "req-123"),))
    err = caught.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "req-123" in (err.details() or "") and "passwd" not in (err.details() or "")
    status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.metadata["request_id"] == "req-123"
    assert "Traceback" not in str(status) and "passwd" not in str(status)
    assert any("secret internals" in (r.exc_text or "") for r in caplog.records)  # logged server-side only


async def test_domain_errors_and_deny_by_default(server: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as nf:
        await get(server, "workspaces/w/datasets/missing")
    assert nf.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as anon:
        await get(server, "workspaces/w/datasets/x", credential=None)
    assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await get(server, "workspaces/w/datasets/x", credential="bad")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch = channel(server, "good")
    try:  # a method the servicer does not implement still needs no less than a credential
        stub = dataset_pb2_grpc.DatasetServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await stub.ListDatasets(dataset_pb2.ListDatasetsRequest(parent="workspaces/w"))
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await ch.close()


async def test_health_and_reflection(server: str) -> None:
    ch = channel(server)
    try:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
        assert "pai.lineage.v1.DatasetService" in names
    finally:
        await ch.close()


async def test_trace_context_crosses_the_call_and_reaches_json_logs(server: str) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(telemetry.JsonFormatter("test"))  # as setup_logging installs it
    logger = logging.getLogger("pai.rpc")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with trace.get_tracer("test").start_as_current_span("client") as span:
            await get(server, "workspaces/w/datasets/ok")
            client_trace = format(span.get_span_context().trace_id, "032x")
    finally:
        logger.removeHandler(handler)
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["trace_id"] == client_trace  # the server span continued the client's trace
    assert line["rpc.code"] == "OK" and line["principal"] == "users/tester" and line["request_id"]
