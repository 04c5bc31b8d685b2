"""A real auth service in-process: real NATS, real SQLite or PostgreSQL, a real gRPC port."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable

import pytest

from pai.auth.v1 import (
    audit_pb2_grpc,
    authorization_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    workspace_pb2,
    workspace_pb2_grpc,
)
from pai_auth.bootstrap import AuthApp, build
from pai_common.config import Settings
from pai_common.grpc_client import channel
from pai_common.testing import NatsServer, api_key


def settings_for(home: pathlib.Path, database: tuple[str, str], nats_url: str) -> Settings:
    url, schema = database
    return Settings(
        service="auth",
        home=home,
        listen="127.0.0.1:0",
        database_url=url,
        database_schema=schema or "pai_auth",
        nats_url=nats_url,
        auth_endpoint="",
        log_format="text",
    )


class Client:
    """Typed stubs for one credential."""

    def __init__(self, address: str, credential: str | None) -> None:
        self.channel = channel(address, credential)
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channel)
        self.workspaces = workspace_pb2_grpc.WorkspaceServiceStub(self.channel)
        self.authz = authorization_pb2_grpc.AuthorizationServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)


@pytest.fixture
async def auth(
    tmp_path: pathlib.Path, database: tuple[str, str], nats_server: NatsServer
) -> AsyncIterator[tuple[AuthApp, str]]:
    """auth on a free port, bootstrapped with a known admin key: (app, admin key)."""
    key = api_key()
    async with build(settings_for(tmp_path / "home", database, nats_server.url), bootstrap_key=key) as app:
        yield app, key


@pytest.fixture
async def client_for(auth: tuple[AuthApp, str]) -> AsyncIterator[Callable[[str | None], Client]]:
    app, _ = auth
    clients: list[Client] = []

    def make(credential: str | None) -> Client:
        c = Client(app.address, credential)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.channel.close()


@pytest.fixture
def admin(auth: tuple[AuthApp, str], client_for: Callable[[str | None], Client]) -> Client:
    return client_for(auth[1])


async def new_user(admin: Client, user_id: str, workspace: str | None = None, role: str = "") -> str:
    """Create a user (optionally a member of `workspace` with `role`) and return a fresh API key of theirs."""
    await admin.identity.CreateUser(identity_pb2.CreateUserRequest(user_id=user_id, user=identity_pb2.User()))
    if workspace:
        await admin.workspaces.CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent=f"workspaces/{workspace}",
                member=workspace_pb2.Member(user=f"users/{user_id}", role=identity_pb2.Role.Value(role)),
            )
        )
    key = await admin.identity.CreateApiKey(identity_pb2.CreateApiKeyRequest(parent=f"users/{user_id}"))
    return key.secret
