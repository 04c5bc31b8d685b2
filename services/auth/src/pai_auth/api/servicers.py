"""auth's gRPC servicers: validate, call the use case, map back. No business rules here."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from pai.auth.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    authorization_pb2,
    authorization_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    workspace_pb2,
    workspace_pb2_grpc,
)
from pai_auth import mapping
from pai_auth.api.caller import caller
from pai_auth.app.access import AccessUseCases, Denied
from pai_auth.app.audit import AuditUseCases
from pai_auth.app.identity import SERVICE_ACCOUNT_FIELDS, USER_DEFAULT_FIELDS, USER_FIELDS, IdentityUseCases
from pai_auth.app.workspaces import WORKSPACE_FIELDS, WorkspaceUseCases
from pai_auth.domain.model import ServiceAccount, User, UserState, Workspace
from pai_common import fieldmask, pagination, tokens, wire
from pai_common.calls import credential_of
from pai_common.clock import utcnow
from pai_common.errors import FailedPrecondition
from pai_common.names import parse

Ctx: TypeAlias = grpc.aio.ServicerContext  # grpc ships no type stubs
_Role = identity_pb2.Role


def _page(request: Any, key_type: type = str, **query: Any) -> tuple[int, Any, str]:
    size = pagination.page_size(request.page_size)
    fp = pagination.fingerprint(**query)
    return size, pagination.decode_token(request.page_token, fp, key_type), fp


def _next(items: list[Any], size: int, key: Any, fp: str) -> tuple[list[Any], str]:
    """Fetch size+1 to know whether there is a next page without a count query."""
    if len(items) <= size:
        return items, ""
    items = items[:size]
    return items, pagination.PageToken(key(items[-1]), fp).encode()


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: IdentityUseCases) -> None:
        self._uc = identity

    async def CreateUser(self, request: identity_pb2.CreateUserRequest, context: Ctx) -> identity_pb2.User:
        u = request.user
        return mapping.user(
            await self._uc.create_user(request.user_id, u.display_name, u.email, u.platform_admin)
        )

    async def GetUser(self, request: identity_pb2.GetUserRequest, context: Ctx) -> identity_pb2.User:
        return mapping.user(await self._uc.get_user(request.name))

    async def ListUsers(
        self, request: identity_pb2.ListUsersRequest, context: Ctx
    ) -> identity_pb2.ListUsersResponse:
        size, after, fp = _page(request)
        users, token = _next(await self._uc.list_users(after, size + 1), size, lambda u: u.id, fp)
        return identity_pb2.ListUsersResponse(users=[mapping.user(u) for u in users], next_page_token=token)

    async def UpdateUser(self, request: identity_pb2.UpdateUserRequest, context: Ctx) -> identity_pb2.User:
        user_id = parse("users/{user}", request.user.name, field="user.name")["user"]
        fields = fieldmask.paths(request.update_mask.paths, USER_FIELDS, USER_DEFAULT_FIELDS)
        u = request.user
        changes = User(
            id=user_id,
            uid="",
            display_name=u.display_name,
            email=u.email,
            platform_admin=u.platform_admin,
        )
        return mapping.user(await self._uc.update_user(caller(), changes, fields, u.etag))

    async def DeleteUser(self, request: identity_pb2.DeleteUserRequest, context: Ctx) -> empty_pb2.Empty:
        await self._uc.delete_user(caller(), request.name, request.etag)
        return empty_pb2.Empty()

    async def DisableUser(self, request: identity_pb2.DisableUserRequest, context: Ctx) -> identity_pb2.User:
        return mapping.user(await self._uc.set_user_state(request.name, UserState.DISABLED, request.etag))

    async def EnableUser(self, request: identity_pb2.EnableUserRequest, context: Ctx) -> identity_pb2.User:
        return mapping.user(await self._uc.set_user_state(request.name, UserState.ACTIVE, request.etag))

    async def CreateServiceAccount(
        self, request: identity_pb2.CreateServiceAccountRequest, context: Ctx
    ) -> identity_pb2.ServiceAccount:
        s = request.service_account
        account = await self._uc.create_service_account(
            request.parent,
            request.service_account_id,
            s.display_name,
            s.description,
            _Role.Name(s.role),
        )
        return mapping.service_account(account)

    async def GetServiceAccount(
        self, request: identity_pb2.GetServiceAccountRequest, context: Ctx
    ) -> identity_pb2.ServiceAccount:
        return mapping.service_account(await self._uc.get_service_account(request.name))

    async def ListServiceAccounts(
        self, request: identity_pb2.ListServiceAccountsRequest, context: Ctx
    ) -> identity_pb2.ListServiceAccountsResponse:
        size, after, fp = _page(request, parent=request.parent)
        items = await self._uc.list_service_accounts(request.parent, after, size + 1)
        items, token = _next(items, size, lambda s: s.id, fp)
        return identity_pb2.ListServiceAccountsResponse(
            service_accounts=[mapping.service_account(s) for s in items],
            next_page_token=token,
        )

    async def UpdateServiceAccount(
        self, request: identity_pb2.UpdateServiceAccountRequest, context: Ctx
    ) -> identity_pb2.ServiceAccount:
        s = request.service_account
        ids = parse(
            "workspaces/{workspace}/serviceAccounts/{sa}",
            s.name,
            field="service_account.name",
        )
        fields = fieldmask.paths(request.update_mask.paths, SERVICE_ACCOUNT_FIELDS)
        changes = ServiceAccount(
            workspace_id=ids["workspace"],
            id=ids["sa"],
            uid="",
            role=_Role.Name(s.role),
            display_name=s.display_name,
            description=s.description,
        )
        return mapping.service_account(await self._uc.update_service_account(changes, fields, s.etag))

    async def DeleteServiceAccount(
        self, request: identity_pb2.DeleteServiceAccountRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._uc.delete_service_account(request.name, request.etag)
        return empty_pb2.Empty()

    async def CreateApiKey(
        self, request: identity_pb2.CreateApiKeyRequest, context: Ctx
    ) -> identity_pb2.ApiKey:
        k = request.api_key
        expire = wire.from_ts(k.expire_time, "api_key.expire_time") if k.HasField("expire_time") else None
        key = await self._uc.create_api_key(request.parent, k.display_name, expire)
        return mapping.api_key(key, utcnow())

    async def GetApiKey(self, request: identity_pb2.GetApiKeyRequest, context: Ctx) -> identity_pb2.ApiKey:
        return mapping.api_key(await self._uc.get_api_key(request.name), utcnow())

    async def ListApiKeys(
        self, request: identity_pb2.ListApiKeysRequest, context: Ctx
    ) -> identity_pb2.ListApiKeysResponse:
        size, after, fp = _page(request, parent=request.parent)
        items, token = _next(
            await self._uc.list_api_keys(request.parent, after, size + 1),
            size,
            lambda k: k.id,
            fp,
        )
        now = utcnow()
        return identity_pb2.ListApiKeysResponse(
            api_keys=[mapping.api_key(k, now) for k in items], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: identity_pb2.RevokeApiKeyRequest, context: Ctx
    ) -> identity_pb2.ApiKey:
        return mapping.api_key(await self._uc.revoke_api_key(request.name), utcnow())


class WorkspaceServicer(workspace_pb2_grpc.WorkspaceServiceServicer):
    def __init__(self, workspaces: WorkspaceUseCases) -> None:
        self._uc = workspaces

    async def CreateWorkspace(
        self, request: workspace_pb2.CreateWorkspaceRequest, context: Ctx
    ) -> workspace_pb2.Workspace:
        w = request.workspace
        ws = await self._uc.create_workspace(caller(), request.workspace_id, w.display_name, w.description)
        return mapping.workspace(ws)

    async def GetWorkspace(
        self, request: workspace_pb2.GetWorkspaceRequest, context: Ctx
    ) -> workspace_pb2.Workspace:
        return mapping.workspace(await self._uc.get_workspace(request.name))

    async def ListWorkspaces(
        self, request: workspace_pb2.ListWorkspacesRequest, context: Ctx
    ) -> workspace_pb2.ListWorkspacesResponse:
        me = caller()
        size, after, fp = _page(request, caller=me.name)
        items, token = _next(
            await self._uc.list_workspaces(me, after, size + 1),
            size,
            lambda w: w.id,
            fp,
        )
        return workspace_pb2.ListWorkspacesResponse(
            workspaces=[mapping.workspace(w) for w in items], next_page_token=token
        )

    async def UpdateWorkspace(
        self, request: workspace_pb2.UpdateWorkspaceRequest, context: Ctx
    ) -> workspace_pb2.Workspace:
        w = request.workspace
        workspace_id = parse("workspaces/{workspace}", w.name, field="workspace.name")["workspace"]
        fields = fieldmask.paths(request.update_mask.paths, WORKSPACE_FIELDS)
        changes = Workspace(
            id=workspace_id,
            uid="",
            display_name=w.display_name,
            description=w.description,
        )
        return mapping.workspace(await self._uc.update_workspace(changes, fields, w.etag))

    async def DeleteWorkspace(
        self, request: workspace_pb2.DeleteWorkspaceRequest, context: Ctx
    ) -> empty_pb2.Empty:
        await self._uc.delete_workspace(request.name, request.etag)
        return empty_pb2.Empty()

    async def CreateMember(
        self, request: workspace_pb2.CreateMemberRequest, context: Ctx
    ) -> workspace_pb2.Member:
        m = request.member
        return mapping.member(
            await self._uc.create_member(caller(), request.parent, m.user, _Role.Name(m.role))
        )

    async def GetMember(self, request: workspace_pb2.GetMemberRequest, context: Ctx) -> workspace_pb2.Member:
        return mapping.member(await self._uc.get_member(request.name))

    async def ListMembers(
        self, request: workspace_pb2.ListMembersRequest, context: Ctx
    ) -> workspace_pb2.ListMembersResponse:
        size, after, fp = _page(request, parent=request.parent)
        items, token = _next(
            await self._uc.list_members(request.parent, after, size + 1),
            size,
            lambda m: m.user_id,
            fp,
        )
        return workspace_pb2.ListMembersResponse(
            members=[mapping.member(m) for m in items], next_page_token=token
        )

    async def UpdateMember(
        self, request: workspace_pb2.UpdateMemberRequest, context: Ctx
    ) -> workspace_pb2.Member:
        m = request.member
        fieldmask.paths(request.update_mask.paths, ("role",))
        member = await self._uc.update_member(caller(), m.name, _Role.Name(m.role), m.etag)
        return mapping.member(member)

    async def DeleteMember(self, request: workspace_pb2.DeleteMemberRequest, context: Ctx) -> empty_pb2.Empty:
        await self._uc.delete_member(caller(), request.name, request.etag)
        return empty_pb2.Empty()


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServiceServicer):
    def __init__(self, access: AccessUseCases) -> None:
        self._uc = access

    async def Authorize(
        self, request: authorization_pb2.AuthorizeRequest, context: Ctx
    ) -> authorization_pb2.AuthorizeResponse:
        Response = authorization_pb2.AuthorizeResponse
        try:
            grant = await self._uc.authorize(
                request.credential,
                request.scope,
                request.permission,
                request.resource,
                request.issue_token,
            )
        except Denied as denied:
            response = Response(
                allowed=False,
                denial_reason=Response.DenialReason.Value(denied.reason),
                message=denied.message,
            )
            if denied.principal is not None:
                response.principal.CopyFrom(mapping.principal(denied.principal))
            return response
        response = Response(
            allowed=True,
            principal=mapping.principal(grant.principal),
            token=grant.token,
        )
        if grant.token_expire_time is not None:
            response.token_expire_time.FromDatetime(grant.token_expire_time)
        return response

    async def IssueToken(
        self, request: authorization_pb2.IssueTokenRequest, context: Ctx
    ) -> authorization_pb2.IssueTokenResponse:
        if tokens.looks_like_token(credential_of(context)):
            raise FailedPrecondition(
                "TOKEN_NOT_RENEWABLE", "tokens are issued for API keys only; a token cannot renew itself"
            )
        token, expires = await self._uc.issue_token(caller(), request.ttl_seconds)
        return authorization_pb2.IssueTokenResponse(token=token, expire_time=wire.ts(expires))

    async def GetJwks(
        self, request: authorization_pb2.GetJwksRequest, context: Ctx
    ) -> authorization_pb2.GetJwksResponse:
        return authorization_pb2.GetJwksResponse(keys=[authorization_pb2.Jwk(**k) for k in self._uc.jwks()])

    async def RotateSigningKey(
        self, request: authorization_pb2.RotateSigningKeyRequest, context: Ctx
    ) -> authorization_pb2.RotateSigningKeyResponse:
        return authorization_pb2.RotateSigningKeyResponse(kid=await self._uc.rotate())

    async def GetCurrentPrincipal(
        self, request: authorization_pb2.GetCurrentPrincipalRequest, context: Ctx
    ) -> authorization_pb2.Principal:
        return mapping.principal(caller())


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, audit: AuditUseCases) -> None:
        self._uc = audit

    async def ListAuditEntries(
        self, request: audit_pb2.ListAuditEntriesRequest, context: Ctx
    ) -> audit_pb2.ListAuditEntriesResponse:
        size, before, fp = _page(request, int, parent=request.parent, principal=request.principal)
        rows = await self._uc.list(request.parent, request.principal, before, size + 1)
        rows, token = _next(rows, size, lambda r: r[0], fp)
        return audit_pb2.ListAuditEntriesResponse(
            audit_entries=[mapping.audit_entry(e) for _, e in rows],
            next_page_token=token,
        )
