"""Regressions for what a review found: token renewal, races, forged input, cascades, audit gaps."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import grpc
import nats
import sqlalchemy as sa
from google.protobuf import timestamp_pb2

from pai.api.v1 import annotations_pb2
from pai.auth.v1 import audit_pb2, authorization_pb2, events_pb2, identity_pb2, workspace_pb2
from pai_auth.bootstrap import AuthApp

from .conftest import Client, new_user
from .test_api import details, fails

WHOAMI = authorization_pb2.GetCurrentPrincipalRequest()


async def test_a_token_never_renews_itself(admin: Client, client_for: Callable[[str | None], Client]) -> None:
    key = await new_user(admin, "tina", "default", "ADMIN")
    token = (await client_for(key).authz.IssueToken(authorization_pb2.IssueTokenRequest())).token
    err = await fails(client_for(token).authz.IssueToken(authorization_pb2.IssueTokenRequest()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    decision = await admin.authz.Authorize(
        authorization_pb2.AuthorizeRequest(
            credential=token,
            permission="auth.members.list",
            scope=annotations_pb2.AuthzRule.RESOURCE,
            resource="workspaces/default",
            issue_token=True,
        )
    )
    assert decision.allowed and decision.token == token  # forwarded as it is, not re-minted
    keys = await client_for(key).identity.ListApiKeys(identity_pb2.ListApiKeysRequest(parent="users/tina"))
    await admin.identity.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(name=keys.api_keys[0].name))
    err = await fails(client_for(key).authz.IssueToken(authorization_pb2.IssueTokenRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_authorize_is_not_audited(
    auth: tuple[AuthApp, str], client_for: Callable[[str | None], Client]
) -> None:
    app, _ = auth
    anonymous = client_for(None)
    for _ in range(5):
        await anonymous.authz.Authorize(
            authorization_pb2.AuthorizeRequest(
                credential="x", permission="dlc.jobs.get", scope=annotations_pb2.AuthzRule.RESOURCE
            )
        )
    async with app.uow() as uow:
        count = await uow.session.scalar(
            sa.text("SELECT count(*) FROM audit_entries WHERE method LIKE '%Authorize'")
        )
    assert count == 0


async def test_same_etag_updates_and_owner_removals_race_safely(admin: Client) -> None:
    await admin.workspaces.CreateWorkspace(
        workspace_pb2.CreateWorkspaceRequest(workspace_id="race", workspace=workspace_pb2.Workspace())
    )
    await new_user(admin, "o2", "race", "OWNER")
    ws = await admin.workspaces.GetWorkspace(workspace_pb2.GetWorkspaceRequest(name="workspaces/race"))
    results = await asyncio.gather(
        *(
            admin.workspaces.UpdateWorkspace(
                workspace_pb2.UpdateWorkspaceRequest(
                    workspace=workspace_pb2.Workspace(name=ws.name, display_name=f"v{i}", etag=ws.etag)
                )
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, workspace_pb2.Workspace) for r in results) == 1
    assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {grpc.StatusCode.ABORTED}

    removals = await asyncio.gather(
        admin.workspaces.DeleteMember(
            workspace_pb2.DeleteMemberRequest(name="workspaces/race/members/admin")
        ),
        admin.workspaces.DeleteMember(workspace_pb2.DeleteMemberRequest(name="workspaces/race/members/o2")),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in removals) == 1
    owners = await admin.workspaces.ListMembers(workspace_pb2.ListMembersRequest(parent="workspaces/race"))
    assert [m.role for m in owners.members] == [identity_pb2.OWNER]


async def test_forged_page_tokens_and_bad_timestamps_are_invalid_argument(admin: Client) -> None:
    fp = __import__("pai_common.pagination", fromlist=["x"]).fingerprint()
    for after in ({"x": 1}, [1], 5):
        raw = json.dumps({"a": after, "q": fp}).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        err = await fails(admin.identity.ListUsers(identity_pb2.ListUsersRequest(page_token=token)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await fails(
        admin.identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(
                parent="users/admin",
                api_key=identity_pb2.ApiKey(expire_time=timestamp_pb2.Timestamp(seconds=10**12)),
            )
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[1][0][0] == "api_key.expire_time"


async def test_platform_admin_changes_only_when_named_and_the_last_one_stays(
    admin: Client, client_for: Callable[[str | None], Client]
) -> None:
    me = await admin.identity.GetUser(identity_pb2.GetUserRequest(name="users/admin"))
    renamed = await admin.identity.UpdateUser(
        identity_pb2.UpdateUserRequest(user=identity_pb2.User(name="users/admin", display_name="Root"))
    )  # empty mask
    assert renamed.platform_admin and renamed.display_name == "Root" and me.platform_admin
    err = await fails(
        admin.identity.UpdateUser(
            identity_pb2.UpdateUserRequest(
                user=identity_pb2.User(name="users/admin", platform_admin=False),
                update_mask={"paths": ["platform_admin"]},
            )
        )
    )
    assert (
        err.code() == grpc.StatusCode.FAILED_PRECONDITION and details(err)[0].reason == "LAST_PLATFORM_ADMIN"
    )  # type: ignore[union-attr]
    err = await fails(admin.identity.DisableUser(identity_pb2.DisableUserRequest(name="users/admin")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    bob = client_for(await new_user(admin, "selfmade"))
    err = await fails(
        bob.identity.UpdateUser(
            identity_pb2.UpdateUserRequest(
                user=identity_pb2.User(name="users/selfmade", platform_admin=True),
                update_mask={"paths": ["platform_admin"]},
            )
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_member_etags_differ_across_recreation(admin: Client) -> None:
    await new_user(admin, "m1", "default", "VIEWER")
    first = await admin.workspaces.GetMember(
        workspace_pb2.GetMemberRequest(name="workspaces/default/members/m1")
    )
    await admin.workspaces.DeleteMember(workspace_pb2.DeleteMemberRequest(name=first.name))
    await asyncio.sleep(0.01)
    again = await admin.workspaces.CreateMember(
        workspace_pb2.CreateMemberRequest(
            parent="workspaces/default",
            member=workspace_pb2.Member(user="users/m1", role=identity_pb2.VIEWER),
        )
    )
    assert again.etag != first.etag


async def test_deleting_a_workspace_announces_what_it_took(auth: tuple[AuthApp, str], admin: Client) -> None:
    app, _ = auth
    await admin.workspaces.CreateWorkspace(
        workspace_pb2.CreateWorkspaceRequest(workspace_id="gone", workspace=workspace_pb2.Workspace())
    )
    await admin.identity.CreateServiceAccount(
        identity_pb2.CreateServiceAccountRequest(
            parent="workspaces/gone",
            service_account_id="bot",
            service_account=identity_pb2.ServiceAccount(role=identity_pb2.VIEWER),
        )
    )
    await admin.identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(parent="workspaces/gone/serviceAccounts/bot")
    )
    await admin.workspaces.DeleteWorkspace(workspace_pb2.DeleteWorkspaceRequest(name="workspaces/gone"))
    nc = await nats.connect(app.settings.nats_url)
    try:
        js = nc.jetstream()
        seen: dict[str, int] = {}
        sub = await js.subscribe("pai.auth.>", ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                break
            if msg.subject == "pai.auth.member.removed":
                assert (
                    events_pb2.MemberRemoved.FromString(msg.data).member.name
                    == "workspaces/gone/members/admin"
                )
            seen[msg.subject] = seen.get(msg.subject, 0) + 1
        wanted = [
            "pai.auth.member.removed",
            "pai.auth.service_account.deleted",
            "pai.auth.api_key.revoked",
            "pai.auth.workspace.deleted",
        ]
        assert {s: seen.get(s, 0) for s in wanted} == dict.fromkeys(wanted, 1)
    finally:
        await nc.close()


async def test_platform_calls_are_audited_with_their_resource(admin: Client) -> None:
    await admin.identity.CreateUser(
        identity_pb2.CreateUserRequest(user_id="audited", user=identity_pb2.User())
    )
    await admin.identity.DisableUser(identity_pb2.DisableUserRequest(name="users/audited"))
    entries = (
        await admin.audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(parent="workspaces/-"))
    ).audit_entries
    resources = {(e.method.rsplit("/", 1)[1], e.resource) for e in entries}
    assert ("CreateUser", "users/audited") in resources and ("DisableUser", "users/audited") in resources


async def test_concurrent_checks_of_one_key_share_one_lookup(auth: tuple[AuthApp, str]) -> None:
    app, admin_key = auth
    calls = 0
    real = app.access._lookup_key

    async def counted(*args: object) -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # a slow database
        return await real(*args)  # type: ignore[arg-type]

    app.access.forget()
    app.access._lookup_key = counted  # type: ignore[method-assign]
    principals = await asyncio.gather(*(app.access.authenticate(admin_key) for _ in range(20)))
    assert calls == 1 and {p.name for p in principals} == {"users/admin"}
    bad = await asyncio.gather(
        *(app.access.authenticate("pai_zzzzzzzz_" + "q" * 43) for _ in range(5)), return_exceptions=True
    )
    assert calls == 2 and all(type(b).__name__ == "Denied" for b in bad)
