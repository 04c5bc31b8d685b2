"""Envoy's ext_authz check against the real auth: CheckRequests shaped as Envoy sends them.

By the time ext_authz runs, Envoy's gRPC-Web filter and JSON transcoder have turned every request
into a gRPC one, so each request here is a gRPC path plus a gRPC-framed body built from a real
request message. The servicer runs on its own `grpc.aio` server, as Envoy's cluster would reach it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from envoy.config.core.v3 import base_pb2  # type: ignore[import-untyped, unused-ignore]
from envoy.service.auth.v3 import (  # type: ignore[import-untyped, unused-ignore]
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from pai.auth.v1 import authorization_pb2, identity_pb2, workspace_pb2
from pai_auth.api.ext_authz import EnvoyAuthorizationServicer, load_methods
from pai_auth.bootstrap import AuthApp
from pai_common import tokens

from .conftest import Client, new_user

GET_WORKSPACE = "/pai.auth.v1.WorkspaceService/GetWorkspace"
LIST_MEMBERS = "/pai.auth.v1.WorkspaceService/ListMembers"
CREATE_USER = "/pai.auth.v1.IdentityService/CreateUser"
GET_JWKS = "/pai.auth.v1.AuthorizationService/GetJwks"
ISSUE_TOKEN = "/pai.auth.v1.AuthorizationService/IssueToken"
UNKNOWN_KEY = "pai_zzzzzzzz_" + "x" * 43


def frame(message: Message | bytes, compressed: int = 0) -> bytes:
    """One gRPC length-prefixed message, as it travels on the wire."""
    data = message if isinstance(message, bytes) else message.SerializeToString()
    return struct.pack(">BI", compressed, len(data)) + data


def check_request(
    path: str,
    body: Message | bytes | None = None,
    headers: Mapping[str, str] = {},
) -> Any:
    """A CheckRequest as Envoy builds it (raw body packed as bytes)."""
    raw = frame(body) if isinstance(body, Message) else (body or b"")
    http = {
        "method": "POST",
        "path": path,
        "host": "gateway.pai.test",
        "protocol": "HTTP/2",
        "headers": {":path": path, "content-type": "application/grpc", **headers},
        "raw_body": raw,
        "size": len(raw),
    }
    return external_auth_pb2.CheckRequest(attributes={"request": {"http": http}})


@pytest.fixture
async def check(auth: tuple[AuthApp, str]) -> AsyncIterator[Any]:
    """`Check` of an EnvoyAuthorizationServicer served on its own port, over a real channel."""
    app, _ = auth
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(EnvoyAuthorizationServicer(app.access), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield external_auth_pb2_grpc.AuthorizationStub(channel).Check
    await channel.close()
    await server.stop(0)


def response_headers(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def assert_denied(response: Any, http: int, code: int, reason: str) -> dict[str, Any]:
    """The denial's HTTP status, gRPC status and JSON body agree; returns the parsed body."""
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == http
    assert response.status.code == code
    headers = response_headers(denied.headers)
    assert headers["content-type"] == "application/json"
    assert headers["grpc-status"] == str(code)
    assert ("www-authenticate" in headers) == (http == 401)
    if http == 401:
        assert headers["www-authenticate"] == 'Bearer realm="pai"'
    body = json.loads(denied.body)
    assert body["code"] == code
    assert body["message"] and body["message"] == response.status.message
    [info] = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == reason
    assert info["domain"] == "auth.pai.dev"
    assert isinstance(info["metadata"], dict)
    # gRPC clients get the same status, ErrorInfo included, as the services' own errors carry it.
    raw = headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    error_info = error_details_pb2.ErrorInfo()
    assert status.code == code and status.details[0].Unpack(error_info)
    assert error_info.reason == reason
    return dict(body)


def assert_allowed(response: Any) -> dict[str, str]:
    assert response.WhichOneof("http_response") == "ok_response"
    assert response.status.code == 0
    for option in response.ok_response.headers:
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    return response_headers(response.ok_response.headers)


def verified_claims(app: AuthApp, headers: Mapping[str, str]) -> dict[str, Any]:
    """The claims of the forwarded token, checked against auth's JWKS as any service would."""
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    keys = {
        jwk["kid"]: Ed25519PublicKey.from_public_bytes(tokens.b64url_decode(jwk["x"]))
        for jwk in app.access.jwks()
    }
    return tokens.verify(token, keys)


async def make_workspace(admin: Client, workspace_id: str) -> None:
    await admin.workspaces.CreateWorkspace(
        workspace_pb2.CreateWorkspaceRequest(workspace_id=workspace_id, workspace=workspace_pb2.Workspace())
    )


async def test_no_credential_is_401_with_a_json_status(check: Any) -> None:
    request = check_request(GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(name="workspaces/default"))
    body = assert_denied(await check(request), 401, 16, "CREDENTIAL_MISSING")
    assert "authorization: Bearer" in body["message"]

    # A scheme other than Bearer is no credential either.
    basic = check_request(GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(), {"authorization": "Basic eDp5"})
    assert_denied(await check(basic), 401, 16, "CREDENTIAL_MISSING")


async def test_unknown_or_malformed_credentials_are_401(check: Any) -> None:
    message = workspace_pb2.GetWorkspaceRequest(name="workspaces/default")
    for headers in (
        {"x-api-key": UNKNOWN_KEY},
        {"authorization": f"Bearer {UNKNOWN_KEY}"},
        {"authorization": "Bearer not-a-key"},
        {"authorization": "Bearer aaa.bbb.ccc"},
    ):
        assert_denied(
            await check(check_request(GET_WORKSPACE, message, headers)), 401, 16, "CREDENTIAL_INVALID"
        )


async def test_viewer_is_allowed_in_own_workspace_and_gets_a_signed_token(
    auth: tuple[AuthApp, str], admin: Client, check: Any
) -> None:
    app, _ = auth
    await make_workspace(admin, "ws-a")
    key = await new_user(admin, "vic", "ws-a", "VIEWER")

    for path, message, headers in (
        (GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(name="workspaces/ws-a"), {"x-api-key": key}),
        (
            LIST_MEMBERS,
            workspace_pb2.ListMembersRequest(parent="workspaces/ws-a"),
            {"authorization": f"bearer {key}"},
        ),
    ):
        spoofed = {**headers, "x-pai-principal": "users/admin"}
        response = await check(check_request(path, message, spoofed))
        forwarded = assert_allowed(response)
        claims = verified_claims(app, forwarded)
        assert claims["sub"] == "users/vic"
        assert claims["roles"] == {"workspaces/ws-a": "VIEWER"}
        assert forwarded["x-pai-principal"] == "users/vic"
        assert key not in forwarded["authorization"]
        assert list(response.ok_response.headers_to_remove) == ["x-api-key"]

    # The forwarded token is itself a credential: it passes as it is, never renewed.
    token = forwarded["authorization"].removeprefix("Bearer ")
    again = await check(
        check_request(
            GET_WORKSPACE,
            workspace_pb2.GetWorkspaceRequest(name="workspaces/ws-a"),
            {"authorization": f"Bearer {token}"},
        )
    )
    assert assert_allowed(again)["authorization"] == f"Bearer {token}"


async def test_viewer_of_one_workspace_is_403_in_another(admin: Client, check: Any) -> None:
    await make_workspace(admin, "ws-a")
    await make_workspace(admin, "ws-b")
    key = await new_user(admin, "vic", "ws-a", "VIEWER")

    def get(name: str) -> Any:
        return check_request(GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(name=name), {"x-api-key": key})

    existing = assert_denied(await check(get("workspaces/ws-b")), 403, 7, "PERMISSION_MISSING")
    missing = assert_denied(await check(get("workspaces/ws-zz")), 403, 7, "PERMISSION_MISSING")
    # Nothing in a denial depends on whether the resource exists.
    assert missing["message"] == existing["message"].replace("ws-b", "ws-zz")

    members = check_request(
        LIST_MEMBERS, workspace_pb2.ListMembersRequest(parent="workspaces/ws-b"), {"x-api-key": key}
    )
    assert_denied(await check(members), 403, 7, "PERMISSION_MISSING")

    # A viewer may not write in their own workspace either, and PLATFORM methods need an admin.
    create_user = check_request(
        CREATE_USER,
        identity_pb2.CreateUserRequest(user_id="eve", user=identity_pb2.User()),
        {"x-api-key": key},
    )
    assert_denied(await check(create_user), 403, 7, "PERMISSION_MISSING")


async def test_disabled_user_is_401(admin: Client, check: Any) -> None:
    key = await new_user(admin, "dan", "default", "VIEWER")
    await admin.identity.DisableUser(identity_pb2.DisableUserRequest(name="users/dan"))
    request = check_request(
        GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(name="workspaces/default"), {"x-api-key": key}
    )
    assert_denied(await check(request), 401, 16, "PRINCIPAL_DISABLED")


async def test_public_method_needs_no_credential(check: Any) -> None:
    response = await check(
        check_request(GET_JWKS, authorization_pb2.GetJwksRequest(), {"x-pai-principal": "users/admin"})
    )
    assert assert_allowed(response) == {}
    # Only the principal header is taken away: it is the gateway's to set, never the caller's.
    assert list(response.ok_response.headers_to_remove) == ["x-pai-principal"]
    health = await check(check_request("/grpc.health.v1.Health/Check", b""))
    assert_allowed(health)


async def test_issue_token_reaches_auth_with_the_key(
    auth: tuple[AuthApp, str], admin: Client, check: Any
) -> None:
    """IssueToken exchanges a key for a token, so the key (not a token) must reach auth."""
    _, admin_key = auth
    response = await check(
        check_request(ISSUE_TOKEN, authorization_pb2.IssueTokenRequest(), {"x-api-key": admin_key})
    )
    assert assert_allowed(response) == {"x-pai-principal": "users/admin"}
    assert list(response.ok_response.headers_to_remove) == []
    assert_denied(await check(check_request(ISSUE_TOKEN, b"")), 401, 16, "CREDENTIAL_MISSING")


async def test_unknown_paths_and_endpoint_paths_are_403(auth: tuple[AuthApp, str], check: Any) -> None:
    _, admin_key = auth
    with_key = {"x-api-key": admin_key}
    for path in (
        "/pai.auth.v1.WorkspaceService/NoSuchMethod",
        "/pai.auth.v1.NoSuchService/GetWorkspace",
        "/pai.auth.v1.WorkspaceService/GetWorkspace/extra",
        "/api/v1/workspaces/default",  # REST the transcoder did not turn into gRPC
        "/",
    ):
        body = assert_denied(await check(check_request(path, b"", with_key)), 403, 7, "RULE_MISSING")
        assert path.partition("?")[0] in body["message"]
    for path in ("/api/predict/x", "/api/predict/svc/v1/models/m:predict", "/dsw/nb-1/lab?token=t"):
        body = assert_denied(await check(check_request(path, b"", with_key)), 403, 7, "NO_RULE_FOR_PATH")
        assert "no route rule is registered" in body["message"]
    # No credential changes nothing: an unroutable path is refused before anyone is asked who they are.
    assert_denied(await check(check_request("/nothing", b"")), 403, 7, "RULE_MISSING")


async def test_bad_bodies_of_resource_methods_are_400(auth: tuple[AuthApp, str], check: Any) -> None:
    _, admin_key = auth
    message = workspace_pb2.GetWorkspaceRequest(name="workspaces/default")
    for raw in (
        b"",  # no body
        b"\x00\x00\x00",  # shorter than a frame header
        frame(b"\xff\xff\xff"),  # not a GetWorkspaceRequest
        frame(message) + b"\x00",  # more than one message
        frame(message)[:-2],  # truncated
        b"\x02" + frame(message)[1:],  # no such flag
    ):
        request = check_request(GET_WORKSPACE, raw, {"x-api-key": admin_key})
        assert_denied(await check(request), 400, 3, "INVALID_ARGUMENT")

    compressed = check_request(GET_WORKSPACE, frame(message, compressed=1), {"x-api-key": admin_key})
    body = assert_denied(await check(compressed), 400, 3, "INVALID_ARGUMENT")
    assert "compressed" in body["message"]

    # Methods not scoped to a resource never read the body: the service validates it.
    create_user = check_request(CREATE_USER, b"\xff", {"x-api-key": admin_key})
    assert_allowed(await check(create_user))


async def test_query_string_is_ignored(admin: Client, check: Any) -> None:
    key = await new_user(admin, "vic", "default", "VIEWER")
    request = check_request(
        GET_WORKSPACE + "?alt=json&x=1",
        workspace_pb2.GetWorkspaceRequest(name="workspaces/default"),
        {"x-api-key": key},
    )
    assert assert_allowed(await check(request))["x-pai-principal"] == "users/vic"


async def test_raw_header_map_is_read(auth: tuple[AuthApp, str], check: Any) -> None:
    """Envoy sends `header_map` with raw values instead of `headers` when encode_raw_headers is on."""
    _, admin_key = auth
    request = check_request(GET_WORKSPACE, workspace_pb2.GetWorkspaceRequest(name="workspaces/default"))
    request.attributes.request.http.headers.clear()
    request.attributes.request.http.header_map.headers.add(key="x-api-key", raw_value=admin_key.encode())
    assert assert_allowed(await check(request))["x-pai-principal"] == "users/admin"


async def test_every_pai_method_is_checkable(auth: tuple[AuthApp, str], check: Any) -> None:
    """Each RPC of every pai API has a rule and a parsable empty request; an admin passes all."""
    _, admin_key = auth
    methods = load_methods()
    assert {path.split(".")[1] for path in methods} == {
        "auth",
        "scheduler",
        "dlc",
        "eas",
        "dsw",
        "lineage",
        "gateway",
    }
    for path, route in methods.items():
        assert route.rule is not None and route.rule.scope != 0, path
        assert route.request_type is not None
        response = await check(check_request(path, route.request_type(), {"x-api-key": admin_key}))
        assert response.WhichOneof("http_response") == "ok_response", (path, response.status.message)


async def test_unexpected_failure_is_503(
    auth: tuple[AuthApp, str], check: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, admin_key = auth

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(app.access, "authorize", broken)
    request = check_request(
        GET_WORKSPACE,
        workspace_pb2.GetWorkspaceRequest(name="workspaces/default"),
        {"x-api-key": admin_key, "x-request-id": "req-42"},
    )
    body = assert_denied(await check(request), 503, 14, "AUTHORIZATION_UNAVAILABLE")
    assert body["details"][0]["metadata"] == {"request_id": "req-42"}
    assert "database" not in body["message"]
