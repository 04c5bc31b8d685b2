"""Use cases for workspaces and memberships."""

from __future__ import annotations

from dataclasses import replace

from pai_auth import mapping
from pai_auth.app.common import check_etag, denied, invalid, new_uid, not_found
from pai_auth.db.uow import UnitOfWork, UnitOfWorkFactory
from pai_auth.domain.model import Member, Principal, Workspace
from pai_common.clock import utcnow
from pai_common.errors import AlreadyExists, FailedPrecondition
from pai_common.names import parse

WORKSPACE_FIELDS = ("display_name", "description")


class WorkspaceUseCases:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def create_workspace(
        self, caller: Principal, workspace_id: str, display_name: str, description: str
    ) -> Workspace:
        now = utcnow()
        ws = Workspace(
            id=workspace_id,
            uid=new_uid(),
            display_name=display_name,
            description=description,
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            if await uow.repo.get_workspace(workspace_id) is not None:
                raise AlreadyExists(
                    "WORKSPACE_ALREADY_EXISTS",
                    f"{ws.name} already exists",
                    resource=ws.name,
                )
            await uow.repo.add_workspace(ws)
            await uow.outbox.add(mapping.workspace_event("created", ws))
            if caller.name.startswith("users/"):  # the creator owns it
                owner = Member(ws.id, caller.name.split("/")[1], "OWNER", now, now)
                await uow.repo.add_member(owner)
                await uow.outbox.add(mapping.member_event("added", owner))
            await uow.commit()
        return ws

    async def get_workspace(self, name: str) -> Workspace:
        workspace_id = parse("workspaces/{workspace}", name)["workspace"]
        async with self._uow() as uow:
            ws = await uow.repo.get_workspace(workspace_id)
        if ws is None:
            raise not_found("WORKSPACE_NOT_FOUND", name)
        return ws

    async def list_workspaces(self, caller: Principal, after: str | None, limit: int) -> list[Workspace]:
        member = None if caller.platform_admin else caller.name.split("/", 1)[1]
        async with self._uow() as uow:
            if caller.name.startswith("workspaces/"):  # a service account sees its own workspace
                ws = await uow.repo.get_workspace(caller.name.split("/")[1])
                return [ws] if ws is not None and (after is None or ws.id > after) else []
            return await uow.repo.list_workspaces(after, limit, member=member)

    async def update_workspace(self, changes: Workspace, fields: set[str], given_etag: str) -> Workspace:
        async with self._uow() as uow:
            ws = await uow.repo.get_workspace(changes.id, for_update=True)
            if ws is None:
                raise not_found("WORKSPACE_NOT_FOUND", changes.name)
            check_etag(given_etag, ws)
            updated = replace(
                ws,
                **{f: getattr(changes, f) for f in fields},
                update_time=utcnow(),
                version=ws.version + 1,
            )
            await uow.repo.save_workspace(updated)
            await uow.outbox.add(mapping.workspace_event("updated", updated))
            await uow.commit()
        return updated

    async def delete_workspace(self, name: str, given_etag: str) -> None:
        workspace_id = parse("workspaces/{workspace}", name)["workspace"]
        now = utcnow()
        async with self._uow() as uow:
            ws = await uow.repo.get_workspace(workspace_id, for_update=True)
            if ws is None:
                raise not_found("WORKSPACE_NOT_FOUND", name)
            check_etag(given_etag, ws)
            members = await uow.repo.members_of(workspace_id)
            accounts = await uow.repo.list_service_accounts_of(workspace_id)
            keys_gone = await uow.repo.active_api_keys_of(f"{name}/serviceAccounts/")
            await uow.repo.delete_workspace(workspace_id)
            # Consumers learn of everything the deletion took with it, not only the workspace.
            for member in members:
                await uow.outbox.add(mapping.member_event("removed", member))
            for key in keys_gone:
                await uow.outbox.add(mapping.api_key_event("revoked", replace(key, revoke_time=now), now))
            for account in accounts:
                await uow.outbox.add(mapping.service_account_event("deleted", account))
            await uow.outbox.add(mapping.workspace_event("deleted", ws))
            await uow.commit()

    # members ---------------------------------------------------------------------
    @staticmethod
    def _check_owner_grant(caller: Principal, workspace: str, *roles: str) -> None:
        """Only owners (and platform admins) may grant or take away OWNER."""
        if "OWNER" in roles and not caller.platform_admin and caller.roles.get(workspace) != "OWNER":
            raise denied("only owners may grant or take away the OWNER role")

    async def create_member(self, caller: Principal, parent: str, user: str, role: str) -> Member:
        workspace_id = parse("workspaces/{workspace}", parent, field="parent")["workspace"]
        if not user:
            raise invalid("member.user", "the user to add is required (users/{user})")
        user_id = parse("users/{user}", user, field="member.user")["user"]
        if role in ("", "ROLE_UNSPECIFIED"):
            raise invalid("member.role", "a role is required")
        self._check_owner_grant(caller, parent, role)
        now = utcnow()
        member = Member(workspace_id, user_id, role, now, now)
        async with self._uow() as uow:
            if await uow.repo.get_workspace(workspace_id) is None:
                raise not_found("WORKSPACE_NOT_FOUND", parent)
            if await uow.repo.get_user(user_id) is None:
                raise not_found("USER_NOT_FOUND", user)
            if await uow.repo.get_member(workspace_id, user_id) is not None:
                raise AlreadyExists(
                    "MEMBER_ALREADY_EXISTS",
                    f"{user} is already a member of {parent}",
                    resource=member.name,
                )
            await uow.repo.add_member(member)
            await uow.outbox.add(mapping.member_event("added", member))
            await uow.commit()
        return member

    async def get_member(self, name: str) -> Member:
        ids = parse("workspaces/{workspace}/members/{member}", name)
        async with self._uow() as uow:
            member = await uow.repo.get_member(ids["workspace"], ids["member"])
        if member is None:
            raise not_found("MEMBER_NOT_FOUND", name)
        return member

    async def list_members(self, parent: str, after: str | None, limit: int) -> list[Member]:
        workspace_id = parse("workspaces/{workspace}", parent, field="parent")["workspace"]
        async with self._uow() as uow:
            if await uow.repo.get_workspace(workspace_id) is None:
                raise not_found("WORKSPACE_NOT_FOUND", parent)
            return await uow.repo.list_members(workspace_id, after, limit)

    async def _member_for_update(self, uow: UnitOfWork, name: str) -> Member:
        ids = parse("workspaces/{workspace}/members/{member}", name)
        # Lock the workspace: owner counts stay true until this transaction ends.
        await uow.repo.get_workspace(ids["workspace"], for_update=True)
        member = await uow.repo.get_member(ids["workspace"], ids["member"], for_update=True)
        if member is None:
            raise not_found("MEMBER_NOT_FOUND", name)
        return member

    async def _check_not_last_owner(self, uow: UnitOfWork, member: Member) -> None:
        if member.role == "OWNER" and await uow.repo.count_owners(member.workspace_id) <= 1:
            raise FailedPrecondition(
                "LAST_OWNER",
                f"users/{member.user_id} is the last owner of workspaces/{member.workspace_id}",
            )

    async def update_member(self, caller: Principal, name: str, role: str, given_etag: str) -> Member:
        if role in ("", "ROLE_UNSPECIFIED"):
            raise invalid("member.role", "a role is required")
        async with self._uow() as uow:
            member = await self._member_for_update(uow, name)
            self._check_owner_grant(caller, f"workspaces/{member.workspace_id}", role, member.role)
            check_etag(given_etag, member)
            if member.role == role:
                return member
            if role != "OWNER":
                await self._check_not_last_owner(uow, member)
            updated = replace(member, role=role, update_time=utcnow(), version=member.version + 1)
            await uow.repo.save_member(updated)
            await uow.outbox.add(mapping.member_event("updated", updated))
            await uow.commit()
        return updated

    async def delete_member(self, caller: Principal, name: str, given_etag: str) -> None:
        async with self._uow() as uow:
            member = await self._member_for_update(uow, name)
            self._check_owner_grant(caller, f"workspaces/{member.workspace_id}", member.role)
            check_etag(given_etag, member)
            await self._check_not_last_owner(uow, member)
            await uow.repo.delete_member(member.workspace_id, member.user_id)
            await uow.outbox.add(mapping.member_event("removed", member))
            await uow.commit()
