"""auth through its real gRPC API: errors, keys, tokens, audit, events, pagination, restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from pai.auth.v1 import audit_pb2, authorization_pb2, events_pb2, identity_pb2, workspace_pb2
from pai_auth.bootstrap import AuthApp, build
from pai_auth.db.rows import Base
from pai_common import tokens

from .conftest import Client, new_user, settings_for


def details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, list[tuple[str, str]]]:
    """The ErrorInfo and BadRequest field violations carried by an error."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status on {err.code().name}: {err.details()}"
    status = status_pb2.Status.FromString(raw)
    info, violations = None, []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    return info, violations


async def fails(coro: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro  # type: ignore[misc]
    assert caught.value.code() != grpc.StatusCode.INTERNAL, caught.value.details()
    return caught.value


async def test_bad_input_is_invalid_argument_with_details(admin: Client) -> None:
    err = await fails(admin.identity.GetUser(identity_pb2.GetUserRequest(name="users/Not A Name")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(err)
    assert info is not None and info.reason == "INVALID_ARGUMENT" and info.domain == "auth.pai.dev"
    assert violations and violations[0][0] == "name"

    err = await fails(admin.identity.CreateUser(identity_pb2.CreateUserRequest(user_id="bob")))  # no user
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("user", "value is required") in details(err)[1]

    err = await fails(admin.identity.ListUsers(identity_pb2.ListUsersRequest(page_size=-1)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[1][0][0] == "page_size"

    err = await fails(
        admin.workspaces.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(workspace_id="-bad-", workspace=workspace_pb2.Workspace())
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    err = await fails(
        admin.workspaces.UpdateWorkspace(
            workspace_pb2.UpdateWorkspaceRequest(
                workspace=workspace_pb2.Workspace(name="workspaces/default"), update_mask={"paths": ["state"]}
            )
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[0].reason == "INVALID_UPDATE_MASK"  # type: ignore[union-attr]

    err = await fails(admin.identity.GetUser(identity_pb2.GetUserRequest(name="users/ghost")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(err)
    assert info is not None and info.reason == "USER_NOT_FOUND" and info.metadata["resource"] == "users/ghost"


async def test_unknown_and_malformed_credentials_are_unauthenticated(
    client_for: Callable[[str | None], Client],
) -> None:
    for credential in ("pai_abcdefgh_" + "x" * 43, "garbage", "a.b.c"):
        err = await fails(
            client_for(credential).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        info, _ = details(err)
        assert info is not None and info.reason == "CREDENTIAL_INVALID"


async def test_api_key_lifecycle_and_storage(
    auth: tuple[AuthApp, str], admin: Client, client_for: Callable[[str | None], Client]
) -> None:
    app, admin_key = auth
    secret = await new_user(admin, "alice")
    assert secret.startswith("pai_") and len(secret) >= 4 + 8 + 1 + 43
    alice = client_for(secret)
    me = await alice.authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    assert me.name == "users/alice" and not me.platform_admin

    keys = await alice.identity.ListApiKeys(identity_pb2.ListApiKeysRequest(parent="users/alice"))
    assert len(keys.api_keys) == 1 and keys.api_keys[0].secret == ""  # shown once, never again
    assert keys.api_keys[0].last_used_time.seconds > 0
    assert secret.startswith(keys.api_keys[0].prefix)

    # The database holds hashes only: no column of any table contains a usable key.
    async with app.uow() as uow:
        for table in Base.metadata.tables:  # every table, including ones added later
            rows = (await uow.session.execute(sa.text(f"SELECT * FROM {table}"))).all()
            dump = repr(rows)
            for key in (secret, admin_key):
                assert key not in dump and key.split("_", 2)[2] not in dump, f"{table} holds a usable key"

    await alice.identity.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(name=keys.api_keys[0].name))
    err = await fails(alice.authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    short = await admin.identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(parent="users/alice", api_key=identity_pb2.ApiKey(expire_time=soon))
    )
    await client_for(short.secret).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    await asyncio.sleep(1.2)
    err = await fails(
        client_for(short.secret).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (err.details() or "")


async def test_disabled_user_is_refused(admin: Client, client_for: Callable[[str | None], Client]) -> None:
    secret = await new_user(admin, "mallory")
    await admin.identity.DisableUser(identity_pb2.DisableUserRequest(name="users/mallory"))
    err = await fails(
        client_for(secret).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(err)[0].reason == "PRINCIPAL_DISABLED"  # type: ignore[union-attr]
    await admin.identity.EnableUser(identity_pb2.EnableUserRequest(name="users/mallory"))
    await client_for(secret).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())


async def test_tokens_verify_locally_reject_tampering_and_survive_rotation(
    auth: tuple[AuthApp, str], admin: Client, client_for: Callable[[str | None], Client]
) -> None:
    app, _ = auth
    issued = await admin.authz.IssueToken(authorization_pb2.IssueTokenRequest(ttl_seconds=60))
    jwks = await admin.authz.GetJwks(authorization_pb2.GetJwksRequest())
    verifier = tokens.TokenVerifier(lambda: _as_dicts(jwks))
    claims = await verifier.verify(issued.token)
    assert claims["sub"] == "users/admin" and claims["padm"] is True
    assert claims["roles"] == {"workspaces/default": "OWNER"}

    # The token is itself a credential.
    me = await client_for(issued.token).authz.GetCurrentPrincipal(
        authorization_pb2.GetCurrentPrincipalRequest()
    )
    assert me.name == "users/admin"

    header, _payload, signature = issued.token.split(".")
    forged_claims = dict(claims, sub="users/someone-else")
    forged = ".".join([header, tokens.b64url(_json(forged_claims)), signature])
    for bad in (forged, issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")):
        err = await fails(
            client_for(bad).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    assert app.access._signing is not None
    kid, key = app.access._signing
    expired = tokens.sign(dict(claims, exp=int(time.time()) - 60), key, kid)
    err = await fails(
        client_for(expired).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (err.details() or "")

    rotated = await admin.authz.RotateSigningKey(authorization_pb2.RotateSigningKeyRequest())
    assert rotated.kid != kid
    jwks = await admin.authz.GetJwks(authorization_pb2.GetJwksRequest())
    assert {k.kid for k in jwks.keys} == {kid, rotated.kid}
    await client_for(issued.token).authz.GetCurrentPrincipal(authorization_pb2.GetCurrentPrincipalRequest())
    fresh = await admin.authz.IssueToken(authorization_pb2.IssueTokenRequest())
    assert tokens._split(fresh.token)[0]["kid"] == rotated.kid


def _json(claims: dict[str, object]) -> bytes:
    import json

    return json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()


async def _as_dicts(jwks: authorization_pb2.GetJwksResponse) -> list[dict[str, str]]:
    return [{"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid} for k in jwks.keys]


async def test_membership_rules(admin: Client, client_for: Callable[[str | None], Client]) -> None:
    await admin.workspaces.CreateWorkspace(
        workspace_pb2.CreateWorkspaceRequest(workspace_id="team", workspace=workspace_pb2.Workspace())
    )
    admin_key = await new_user(admin, "bob", "team", "ADMIN")
    bob = client_for(admin_key)
    await new_user(admin, "carol")
    err = await fails(
        bob.workspaces.CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent="workspaces/team",
                member=workspace_pb2.Member(user="users/carol", role=identity_pb2.OWNER),
            )
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED  # admins cannot grant OWNER
    member = await bob.workspaces.CreateMember(
        workspace_pb2.CreateMemberRequest(
            parent="workspaces/team",
            member=workspace_pb2.Member(user="users/carol", role=identity_pb2.DEVELOPER),
        )
    )
    err = await fails(
        bob.workspaces.UpdateMember(
            workspace_pb2.UpdateMemberRequest(
                member=workspace_pb2.Member(name=member.name, role=identity_pb2.VIEWER, etag='W/"stale"')
            )
        )
    )
    assert err.code() == grpc.StatusCode.ABORTED
    updated = await bob.workspaces.UpdateMember(
        workspace_pb2.UpdateMemberRequest(
            member=workspace_pb2.Member(name=member.name, role=identity_pb2.VIEWER, etag=member.etag)
        )
    )
    assert updated.role == identity_pb2.VIEWER and updated.etag != member.etag
    err = await fails(
        admin.workspaces.DeleteMember(workspace_pb2.DeleteMemberRequest(name="workspaces/team/members/admin"))
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and details(err)[0].reason == "LAST_OWNER"  # type: ignore[union-attr]
    err = await fails(
        admin.workspaces.CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent="workspaces/team",
                member=workspace_pb2.Member(user="users/carol", role=identity_pb2.VIEWER),
            )
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_pagination(admin: Client) -> None:
    for i in range(5):
        await admin.identity.CreateUser(
            identity_pb2.CreateUserRequest(user_id=f"p{i}", user=identity_pb2.User())
        )
    seen, token, pages = [], "", 0
    while True:
        page = await admin.identity.ListUsers(identity_pb2.ListUsersRequest(page_size=2, page_token=token))
        seen += [u.name for u in page.users]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and set(seen) == {"users/admin", *(f"users/p{i}" for i in range(5))}
    assert pages == 3
    first = await admin.identity.ListUsers(identity_pb2.ListUsersRequest(page_size=1))
    err = await fails(
        admin.workspaces.ListMembers(
            workspace_pb2.ListMembersRequest(parent="workspaces/default", page_token=first.next_page_token)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and details(err)[0].reason == "INVALID_PAGE_TOKEN"  # type: ignore[union-attr]
    err = await fails(admin.identity.ListUsers(identity_pb2.ListUsersRequest(page_token="%%%")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_audit_trail_records_mutations_and_denials(
    admin: Client, client_for: Callable[[str | None], Client]
) -> None:
    viewer = client_for(await new_user(admin, "vic", "default", "VIEWER"))
    await fails(
        viewer.workspaces.CreateMember(
            workspace_pb2.CreateMemberRequest(
                parent="workspaces/default",
                member=workspace_pb2.Member(user="users/admin", role=identity_pb2.VIEWER),
            )
        )
    )
    await viewer.workspaces.ListMembers(
        workspace_pb2.ListMembersRequest(parent="workspaces/default")
    )  # a read
    entries = (
        await admin.audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(parent="workspaces/default"))
    ).audit_entries
    methods = [(e.method.rsplit("/", 1)[1], e.principal, e.result) for e in entries]
    assert ("CreateMember", "users/vic", "PERMISSION_DENIED") in methods
    assert ("CreateMember", "users/admin", "OK") in methods
    assert all(m != "ListMembers" for m, _, _ in methods)  # reads are not audited
    assert entries[0].create_time.seconds >= entries[-1].create_time.seconds  # newest first
    everything = await admin.audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(parent="workspaces/-"))
    assert any(e.method.endswith("/CreateUser") for e in everything.audit_entries)  # platform-level entries
    mine = await admin.audit.ListAuditEntries(
        audit_pb2.ListAuditEntriesRequest(parent="workspaces/-", principal="users/vic")
    )
    assert {e.principal for e in mine.audit_entries} == {"users/vic"}


async def test_events_reach_jetstream_as_cloudevents(auth: tuple[AuthApp, str], admin: Client) -> None:
    app, _ = auth
    await admin.identity.CreateUser(
        identity_pb2.CreateUserRequest(user_id="eve", user=identity_pb2.User(email="eve@example.com"))
    )
    nc = await nats.connect(app.settings.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("pai.auth.user.created", ordered_consumer=True)
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            msg = await sub.next_msg(timeout=5)
            event = events_pb2.UserCreated.FromString(msg.data)
            if event.user.name == "users/eve":
                found = msg
        assert found is not None and found.headers is not None
        h = found.headers
        assert h["ce-type"] == "pai.auth.v1.UserCreated" and h["ce-specversion"] == "1.0"
        assert h["ce-source"] == "//auth.pai.dev" and h["content-type"] == "application/protobuf"
        assert h["Nats-Msg-Id"] == h["ce-id"] and h["ce-time"].endswith("Z")
        assert "traceparent" in h
    finally:
        await nc.close()


async def test_restart_keeps_everything_and_bootstraps_once(
    tmp_path: object, database: tuple[str, str], nats_server: object, auth: tuple[AuthApp, str], admin: Client
) -> None:
    app, admin_key = auth
    await admin.identity.CreateUser(identity_pb2.CreateUserRequest(user_id="stays", user=identity_pb2.User()))
    settings = app.settings
    await app.server.stop()
    async with build(settings, bootstrap_key="") as again:
        assert again.admin_key is None  # bootstrapped before: no new admin key
        c = Client(again.address, admin_key)
        try:
            users = await c.identity.ListUsers(identity_pb2.ListUsersRequest())
            assert {u.name for u in users.users} >= {"users/admin", "users/stays"}
        finally:
            await c.channel.close()


def test_settings_helper_builds_sqlite_settings(tmp_path: object) -> None:
    s = settings_for(tmp_path, ("sqlite+aiosqlite:///x.db", ""), "nats://x")  # type: ignore[arg-type]
    assert s.database_schema == "pai_auth" and s.listen.endswith(":0")


async def test_concurrent_creates_of_one_id_never_fail_internally(admin: Client) -> None:
    results = await asyncio.gather(
        *(
            admin.identity.CreateUser(
                identity_pb2.CreateUserRequest(user_id="racer", user=identity_pb2.User())
            )
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, identity_pb2.User)]
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert len(created) == 1
    assert codes <= {grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}
