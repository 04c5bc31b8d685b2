"""Another service's view of auth: the chassis RemoteAuthorizer against the real auth service.

The other service here is a stand-in (a one-method lineage DatasetService servicer written for
this test), because lineage itself is built in a later issue; the chassis, the interceptors,
the network hop and auth are all real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from pai.auth.v1 import authorization_pb2
from pai.lineage.v1 import dataset_pb2, dataset_pb2_grpc
from pai_auth.bootstrap import AuthApp
from pai_common import principal
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.remote_auth import RemoteAuthorizer

from .conftest import Client, new_user


class StandInDatasets(dataset_pb2_grpc.DatasetServiceServicer):
    """Answers GetDataset with the caller's name in the description."""

    async def GetDataset(self, request: dataset_pb2.GetDatasetRequest, context: Any) -> dataset_pb2.Dataset:
        return dataset_pb2.Dataset(name=request.name, description=principal.principal().name)


@pytest.fixture
async def other_service(auth: tuple[AuthApp, str]) -> AsyncIterator[str]:
    app, _ = auth
    auth_channel = channel(app.address)
    server = GrpcServer(
        "127.0.0.1:0",
        [
            Servicer(
                "pai.lineage.v1.DatasetService",
                StandInDatasets(),
                dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            )
        ],
        domain="lineage.pai.dev",
        authorizer=RemoteAuthorizer(auth_channel, cache_seconds=0.0),
    )
    await server.start()
    yield server.address
    await server.stop(0)
    await auth_channel.close()


async def call(address: str, credential: str | None, name: str) -> dataset_pb2.Dataset | grpc.StatusCode:
    ch = channel(address, credential)
    try:
        return await dataset_pb2_grpc.DatasetServiceStub(ch).GetDataset(
            dataset_pb2.GetDatasetRequest(name=name)
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    finally:
        await ch.close()


async def test_other_services_authorize_through_auth(
    other_service: str, admin: Client, client_for: Callable[[str | None], Client]
) -> None:
    own = "workspaces/default/datasets/qa"
    foreign = "workspaces/elsewhere/datasets/qa"
    viewer_key = await new_user(admin, "viv", "default", "VIEWER")

    assert await call(other_service, None, own) == grpc.StatusCode.UNAUTHENTICATED
    assert await call(other_service, "pai_abcdefgh_" + "x" * 43, own) == grpc.StatusCode.UNAUTHENTICATED
    ok = await call(other_service, viewer_key, own)
    assert isinstance(ok, dataset_pb2.Dataset) and ok.description == "users/viv"
    assert await call(other_service, viewer_key, foreign) == grpc.StatusCode.PERMISSION_DENIED
    assert await call(other_service, viewer_key, "not a name") == grpc.StatusCode.INVALID_ARGUMENT

    token = (await client_for(viewer_key).authz.IssueToken(authorization_pb2.IssueTokenRequest())).token
    by_token = await call(other_service, token, own)
    assert isinstance(by_token, dataset_pb2.Dataset) and by_token.description == "users/viv"
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert await call(other_service, tampered, own) == grpc.StatusCode.UNAUTHENTICATED
