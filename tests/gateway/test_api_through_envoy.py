"""The v1 API through the real Envoy on one public port: gRPC, HTTP/JSON and gRPC-Web, auth on every route."""

from __future__ import annotations

import re
import struct
from typing import Any

import aiohttp
import grpc
import pytest
from google.api import annotations_pb2 as http_annotations
from google.protobuf import descriptor_pb2

from pai.api.v1 import annotations_pb2
from pai.auth.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    identity_pb2,
    workspace_pb2,
    workspace_pb2_grpc,
)
from pai_common.grpc_client import channel

from .conftest import Gateway


def grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def grpc_web_parse(body: bytes) -> tuple[bytes, dict[str, str]]:
    """The message and the trailers of a gRPC-Web response body."""
    data, trailers, i = b"", {}, 0
    while i + 5 <= len(body):
        flag, length = struct.unpack(">BI", body[i : i + 5])
        chunk = body[i + 5 : i + 5 + length]
        i += 5 + length
        if flag & 0x80:
            for line in chunk.decode().split("\r\n"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    trailers[k.strip().lower()] = v.strip()
        else:
            data = chunk
    return data, trailers


async def grpc_web(
    gw: Gateway, method: str, message: Any, key: str | None
) -> tuple[int, bytes, dict[str, str]]:
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gw.url}/{method}", data=grpc_web_frame(message.SerializeToString()), headers=headers
        ) as resp,
    ):
        body = await resp.read()
        trailers = {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("grpc-")}
        data, body_trailers = grpc_web_parse(body)
        return resp.status, data, {**trailers, **body_trailers}


async def rest(gw: Gateway, verb: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(verb, f"{gw.url}{path}", json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            import json

            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def grpc_code(gw: Gateway, key: str | None, name: str = "workspaces/default") -> grpc.StatusCode:
    ch = channel(gw.target, key)
    try:
        await workspace_pb2_grpc.WorkspaceServiceStub(ch).GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(name=name), timeout=10
        )
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()
    finally:
        await ch.close()


async def foreign_key(gw: Gateway) -> str:
    """A key of a user who is a member of workspace `other` only."""
    ch = channel(gw.target, gw.admin_key)
    try:
        ws = workspace_pb2_grpc.WorkspaceServiceStub(ch)
        await ws.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(workspace_id="other", workspace=workspace_pb2.Workspace())
        )
        from pai.auth.v1 import identity_pb2_grpc

        ids = identity_pb2_grpc.IdentityServiceStub(ch)
        await ids.CreateUser(identity_pb2.CreateUserRequest(user_id="outsider", user=identity_pb2.User()))
        await ws.CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent="workspaces/other",
                member=workspace_pb2.Member(user="users/outsider", role=identity_pb2.OWNER),
            )
        )
        return (await ids.CreateApiKey(identity_pb2.CreateApiKeyRequest(parent="users/outsider"))).secret
    finally:
        await ch.close()


async def test_grpc_rest_and_grpc_web_with_and_without_keys(gateway: Gateway) -> None:
    gw = gateway
    outsider = await foreign_key(gw)

    # gRPC
    assert await grpc_code(gw, gw.admin_key) == grpc.StatusCode.OK
    assert await grpc_code(gw, None) == grpc.StatusCode.UNAUTHENTICATED
    assert await grpc_code(gw, outsider) == grpc.StatusCode.PERMISSION_DENIED
    ch = channel(gw.target, gw.admin_key)
    try:
        me = await authorization_pb2_grpc.AuthorizationServiceStub(ch).GetCurrentPrincipal(
            authorization_pb2.GetCurrentPrincipalRequest()
        )
        assert me.name == "users/admin"  # auth saw the signed token the gateway injected
    finally:
        await ch.close()

    # HTTP/JSON
    status, body = await rest(gw, "GET", "/api/v1/workspaces/default", gw.admin_key)
    assert status == 200 and body["name"] == "workspaces/default"
    status, body = await rest(gw, "GET", "/api/v1/workspaces/default", None)
    assert status == 401 and body["code"] == 16 and body["details"][0]["reason"] == "CREDENTIAL_MISSING"
    status, body = await rest(gw, "GET", "/api/v1/workspaces/default", outsider)
    assert status == 403 and body["code"] == 7
    status, body = await rest(gw, "POST", "/api/v1/workspaces", gw.admin_key, {"displayName": "R"})
    assert status == 400 and body["code"] == 3  # workspace_id missing: a JSON error, not a 500
    status, body = await rest(gw, "GET", "/api/v1/users/ghost", gw.admin_key)
    assert status == 404 and body["code"] == 5

    # gRPC-Web
    method = "pai.auth.v1.WorkspaceService/GetWorkspace"
    request = workspace_pb2.GetWorkspaceRequest(name="workspaces/default")
    status, data, trailers = await grpc_web(gw, method, request, gw.admin_key)
    assert status == 200 and trailers.get("grpc-status") == "0"
    assert workspace_pb2.Workspace.FromString(data).name == "workspaces/default"
    status, _, trailers = await grpc_web(gw, method, request, None)
    assert status == 401 or trailers.get("grpc-status") == "16"
    status, _, trailers = await grpc_web(gw, method, request, outsider)
    assert status == 403 or trailers.get("grpc-status") == "7"

    status, body = await rest(gw, "GET", "/healthz", None)
    assert status == 200


def public_paths() -> list[tuple[str, str, str]]:
    """(verb, REST path, gRPC path) of every non-PUBLIC RPC of every pai service."""
    import pathlib

    import pai

    fds = descriptor_pb2.FileDescriptorSet.FromString(
        (pathlib.Path(pai.__file__).parent / "descriptors.binpb").read_bytes()
    )
    out = []
    for f in fds.file:
        if not f.package.startswith("pai."):
            continue
        for s in f.service:
            for m in s.method:
                rule = m.options.Extensions[annotations_pb2.authz]
                if rule.scope == annotations_pb2.AuthzRule.PUBLIC:
                    continue
                http = m.options.Extensions[http_annotations.http]
                verb = http.WhichOneof("pattern")
                path = re.sub(
                    r"\{[^}=]+=([^}]+)\}",
                    lambda x: x.group(1).replace("**", "a/b").replace("*", "x"),
                    getattr(http, verb),
                )
                path = re.sub(r"\{[^}]+\}", "x", path)
                out.append((verb.upper(), path, f"/{f.package}.{s.name}/{m.name}"))
    return out


async def test_no_token_is_401_on_every_public_path_rest_and_grpc(gateway: Gateway) -> None:
    paths = public_paths()
    assert len(paths) > 100
    ch = grpc.aio.insecure_channel(gateway.target)
    try:
        async with aiohttp.ClientSession() as http:
            for verb, path, grpc_path in paths:
                body = {} if verb in ("POST", "PATCH") else None
                async with http.request(verb, f"{gateway.url}{path}", json=body) as resp:
                    assert resp.status == 401, f"{verb} {path} -> {resp.status}"
                call = ch.unary_unary(
                    grpc_path, request_serializer=lambda b: b, response_deserializer=lambda b: b
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(b"", timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, grpc_path
    finally:
        await ch.close()


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/api/v1/nothing/here", 404, 5),  # no API method: the catch-all route
        ("/pai.auth.v1.Nope/Nothing", 403, 7),  # under a service prefix, so authorized: no such rule
        ("/elsewhere", 404, 5),
    ],
)
async def test_unknown_paths_are_json_errors(gateway: Gateway, path: str, status: int, code: int) -> None:
    got, body = await rest(gateway, "GET", path, gateway.admin_key)
    assert (got, body["code"]) == (status, code), body
