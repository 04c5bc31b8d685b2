"""Every auth RPC × each role × own/foreign workspace → allowed or denied exactly as the map says.

Outcomes are judged from the status code: a denial is PERMISSION_DENIED; an allowed call may still
fail on existence (NOT_FOUND), state or etag, which proves the permission was checked first.
The expected decision comes from the policy (the role map), and a few pinned expectations below
keep the map itself honest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from pai.api.v1 import annotations_pb2
from pai.auth.v1 import audit_pb2, authorization_pb2, identity_pb2, workspace_pb2
from pai_auth.domain import policy
from pai_auth.domain.model import Principal
from pai_common.calls import authz_rule

from .conftest import Client, new_user

OWN, FOREIGN = "ws-a", "ws-b"
ROLES = ("OWNER", "ADMIN", "DEVELOPER", "VIEWER")
_n = itertools.count()


def requests(ws: str, me: str, other_user: str) -> dict[str, tuple[Callable[[Client], Any], Any]]:
    """One valid request per auth RPC, aimed at workspace `ws` (or a user's own resources)."""
    i = next(_n)
    sa = f"workspaces/{ws}/serviceAccounts/bot"
    key_owner = f"users/{me}" if ws == OWN else f"users/{other_user}"
    return {
        "CreateUser": (
            lambda c: c.identity.CreateUser,
            identity_pb2.CreateUserRequest(user_id=f"u{i}", user=identity_pb2.User()),
        ),
        "GetUser": (lambda c: c.identity.GetUser, identity_pb2.GetUserRequest(name=key_owner)),
        "ListUsers": (lambda c: c.identity.ListUsers, identity_pb2.ListUsersRequest()),
        "UpdateUser": (
            lambda c: c.identity.UpdateUser,
            identity_pb2.UpdateUserRequest(
                user=identity_pb2.User(name=key_owner, display_name="x"),
                update_mask={"paths": ["display_name"]},
            ),
        ),
        "DeleteUser": (lambda c: c.identity.DeleteUser, identity_pb2.DeleteUserRequest(name="users/nobody")),
        "DisableUser": (
            lambda c: c.identity.DisableUser,
            identity_pb2.DisableUserRequest(name="users/nobody"),
        ),
        "EnableUser": (lambda c: c.identity.EnableUser, identity_pb2.EnableUserRequest(name="users/nobody")),
        "CreateServiceAccount": (
            lambda c: c.identity.CreateServiceAccount,
            identity_pb2.CreateServiceAccountRequest(
                parent=f"workspaces/{ws}",
                service_account_id=f"sa{i}",
                service_account=identity_pb2.ServiceAccount(role=identity_pb2.DEVELOPER),
            ),
        ),
        "GetServiceAccount": (
            lambda c: c.identity.GetServiceAccount,
            identity_pb2.GetServiceAccountRequest(name=sa),
        ),
        "ListServiceAccounts": (
            lambda c: c.identity.ListServiceAccounts,
            identity_pb2.ListServiceAccountsRequest(parent=f"workspaces/{ws}"),
        ),
        "UpdateServiceAccount": (
            lambda c: c.identity.UpdateServiceAccount,
            identity_pb2.UpdateServiceAccountRequest(
                service_account=identity_pb2.ServiceAccount(
                    name=f"workspaces/{ws}/serviceAccounts/nobody", display_name="x"
                ),
                update_mask={"paths": ["display_name"]},
            ),
        ),
        "DeleteServiceAccount": (
            lambda c: c.identity.DeleteServiceAccount,
            identity_pb2.DeleteServiceAccountRequest(name=f"workspaces/{ws}/serviceAccounts/nobody"),
        ),
        "CreateApiKey": (lambda c: c.identity.CreateApiKey, identity_pb2.CreateApiKeyRequest(parent=sa)),
        "GetApiKey": (
            lambda c: c.identity.GetApiKey,
            identity_pb2.GetApiKeyRequest(name=f"{key_owner}/apiKeys/nothere1"),
        ),
        "ListApiKeys": (lambda c: c.identity.ListApiKeys, identity_pb2.ListApiKeysRequest(parent=key_owner)),
        "RevokeApiKey": (
            lambda c: c.identity.RevokeApiKey,
            identity_pb2.RevokeApiKeyRequest(name=f"{sa}/apiKeys/nothere1"),
        ),
        "CreateWorkspace": (
            lambda c: c.workspaces.CreateWorkspace,
            workspace_pb2.CreateWorkspaceRequest(workspace_id=f"w{i}", workspace=workspace_pb2.Workspace()),
        ),
        "GetWorkspace": (
            lambda c: c.workspaces.GetWorkspace,
            workspace_pb2.GetWorkspaceRequest(name=f"workspaces/{ws}"),
        ),
        "ListWorkspaces": (lambda c: c.workspaces.ListWorkspaces, workspace_pb2.ListWorkspacesRequest()),
        "UpdateWorkspace": (
            lambda c: c.workspaces.UpdateWorkspace,
            workspace_pb2.UpdateWorkspaceRequest(
                workspace=workspace_pb2.Workspace(name=f"workspaces/{ws}", etag="stale")
            ),
        ),
        "DeleteWorkspace": (
            lambda c: c.workspaces.DeleteWorkspace,
            workspace_pb2.DeleteWorkspaceRequest(name=f"workspaces/{ws}", etag="stale"),
        ),
        "CreateMember": (
            lambda c: c.workspaces.CreateMember,
            workspace_pb2.CreateMemberRequest(
                parent=f"workspaces/{ws}",
                member=workspace_pb2.Member(user="users/nobody", role=identity_pb2.VIEWER),
            ),
        ),
        "GetMember": (
            lambda c: c.workspaces.GetMember,
            workspace_pb2.GetMemberRequest(name=f"workspaces/{ws}/members/nobody"),
        ),
        "ListMembers": (
            lambda c: c.workspaces.ListMembers,
            workspace_pb2.ListMembersRequest(parent=f"workspaces/{ws}"),
        ),
        "UpdateMember": (
            lambda c: c.workspaces.UpdateMember,
            workspace_pb2.UpdateMemberRequest(
                member=workspace_pb2.Member(name=f"workspaces/{ws}/members/nobody", role=identity_pb2.VIEWER)
            ),
        ),
        "DeleteMember": (
            lambda c: c.workspaces.DeleteMember,
            workspace_pb2.DeleteMemberRequest(name=f"workspaces/{ws}/members/nobody"),
        ),
        "Authorize": (
            lambda c: c.authz.Authorize,
            authorization_pb2.AuthorizeRequest(
                credential="nothing", permission="dlc.jobs.get", scope=annotations_pb2.AuthzRule.RESOURCE
            ),
        ),
        "IssueToken": (lambda c: c.authz.IssueToken, authorization_pb2.IssueTokenRequest()),
        "GetJwks": (lambda c: c.authz.GetJwks, authorization_pb2.GetJwksRequest()),
        "RotateSigningKey": (lambda c: c.authz.RotateSigningKey, authorization_pb2.RotateSigningKeyRequest()),
        "GetCurrentPrincipal": (
            lambda c: c.authz.GetCurrentPrincipal,
            authorization_pb2.GetCurrentPrincipalRequest(),
        ),
        "ListAuditEntries": (
            lambda c: c.audit.ListAuditEntries,
            audit_pb2.ListAuditEntriesRequest(parent=f"workspaces/{ws}"),
        ),
    }


SERVICE_OF = {
    **dict.fromkeys(
        [
            "CreateUser",
            "GetUser",
            "ListUsers",
            "UpdateUser",
            "DeleteUser",
            "DisableUser",
            "EnableUser",
            "CreateServiceAccount",
            "GetServiceAccount",
            "ListServiceAccounts",
            "UpdateServiceAccount",
            "DeleteServiceAccount",
            "CreateApiKey",
            "GetApiKey",
            "ListApiKeys",
            "RevokeApiKey",
        ],
        "IdentityService",
    ),
    **dict.fromkeys(
        [
            "CreateWorkspace",
            "GetWorkspace",
            "ListWorkspaces",
            "UpdateWorkspace",
            "DeleteWorkspace",
            "CreateMember",
            "GetMember",
            "ListMembers",
            "UpdateMember",
            "DeleteMember",
        ],
        "WorkspaceService",
    ),
    **dict.fromkeys(
        ["Authorize", "IssueToken", "GetJwks", "RotateSigningKey", "GetCurrentPrincipal"],
        "AuthorizationService",
    ),
    "ListAuditEntries": "AuditService",
}

# Pinned rows of the map: if the map changes, these must change with it, on purpose.
PINNED = {
    ("VIEWER", "ListMembers", OWN): True,
    ("VIEWER", "CreateMember", OWN): False,
    ("DEVELOPER", "ListAuditEntries", OWN): False,
    ("ADMIN", "ListAuditEntries", OWN): True,
    ("ADMIN", "DeleteWorkspace", OWN): False,
    ("OWNER", "DeleteWorkspace", OWN): True,
    ("OWNER", "DeleteWorkspace", FOREIGN): False,
    ("ADMIN", "CreateApiKey", OWN): True,
    ("DEVELOPER", "CreateApiKey", OWN): False,
    ("OWNER", "CreateUser", OWN): False,
    ("VIEWER", "GetUser", OWN): True,  # their own user
    ("VIEWER", "GetUser", FOREIGN): False,  # someone else's
}


async def outcome(call: Any, request: Any) -> grpc.StatusCode:
    try:
        await call(request, timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_matrix(admin: Client, client_for: Callable[[str | None], Client]) -> None:
    for ws in (OWN, FOREIGN):
        await admin.workspaces.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(workspace_id=ws, workspace=workspace_pb2.Workspace())
        )
    await admin.identity.CreateServiceAccount(
        identity_pb2.CreateServiceAccountRequest(
            parent=f"workspaces/{OWN}",
            service_account_id="bot",
            service_account=identity_pb2.ServiceAccount(role=identity_pb2.VIEWER),
        )
    )
    await new_user(admin, "stranger", FOREIGN, "OWNER")
    checked = 0
    robot = await admin.identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(parent=f"workspaces/{OWN}/serviceAccounts/bot")
    )
    principals: list[tuple[str, str, Principal]] = []
    for role in ROLES:
        user = f"user-{role.lower()}"
        key = await new_user(admin, user, OWN, role)
        principals.append((role, key, Principal(f"users/{user}", False, {f"workspaces/{OWN}": role})))
    # A service account (VIEWER in OWN) and the platform admin are principals too.
    principals.append(
        (
            "SA-VIEWER",
            robot.secret,
            Principal(f"workspaces/{OWN}/serviceAccounts/bot", False, {f"workspaces/{OWN}": "VIEWER"}),
        )
    )
    principals.append(
        (
            "PLATFORM",
            (await admin.authz.IssueToken(authorization_pb2.IssueTokenRequest())).token,
            Principal("users/admin", True, {}),
        )
    )
    for role, key, me in principals:
        client = client_for(key)
        user = me.name.rsplit("/", 1)[1]
        for ws in (OWN, FOREIGN):
            for method, (stub, request) in requests(ws, user, "stranger").items():
                rule = authz_rule(f"/pai.auth.v1.{SERVICE_OF[method]}/{method}")
                assert rule is not None, method
                resource = _field(request, rule.resource_field) if rule.resource_field else ""
                expected = policy.decide(me, rule.scope, rule.permission, resource).allowed
                if (role, method, ws) in PINNED:
                    assert PINNED[(role, method, ws)] == expected, (
                        f"the role map changed for {role} {method} {ws}"
                    )
                code = await outcome(stub(client), request)
                assert code != grpc.StatusCode.INTERNAL, f"{role} {method} in {ws}: INTERNAL"
                if expected:
                    assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (
                        f"{role} {method} in {ws}: expected allowed, got {code.name}"
                    )
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (
                        f"{role} {method} in {ws}: expected denied, got {code.name}"
                    )
                checked += 1
    assert checked == len(principals) * 2 * len(SERVICE_OF)


def _field(message: Any, path: str) -> str:
    for part in path.split("."):
        message = getattr(message, part)
    return str(message)


@pytest.mark.parametrize("method", sorted(SERVICE_OF))
async def test_no_credential_is_unauthenticated_except_public(
    method: str, client_for: Callable[[str | None], Client]
) -> None:
    anonymous = client_for(None)
    stub, request = requests(OWN, "x", "y")[method]
    rule = authz_rule(f"/pai.auth.v1.{SERVICE_OF[method]}/{method}")
    assert rule is not None
    code = await outcome(stub(anonymous), request)
    if rule.scope == annotations_pb2.AuthzRule.PUBLIC:
        assert code == grpc.StatusCode.OK
    else:
        assert code == grpc.StatusCode.UNAUTHENTICATED
