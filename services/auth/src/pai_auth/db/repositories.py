"""Auth's repositories: rows in, domain entities out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from pai_auth.db.rows import (
    ApiKeyRow,
    AuditEntryRow,
    MemberRow,
    ServiceAccountRow,
    SigningKeyRow,
    UserRow,
    WorkspaceRow,
)
from pai_auth.domain.model import (
    ApiKey,
    AuditEntry,
    Member,
    ServiceAccount,
    User,
    UserState,
    Workspace,
)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        uid=row.uid,
        display_name=row.display_name,
        email=row.email,
        platform_admin=row.platform_admin,
        state=UserState(row.state),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _workspace(row: WorkspaceRow) -> Workspace:
    return Workspace(
        id=row.id,
        uid=row.uid,
        display_name=row.display_name,
        description=row.description,
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _member(row: MemberRow) -> Member:
    return Member(
        workspace_id=row.workspace_id,
        user_id=row.user_id,
        role=row.role,
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _service_account(row: ServiceAccountRow) -> ServiceAccount:
    return ServiceAccount(
        workspace_id=row.workspace_id,
        id=row.id,
        uid=row.uid,
        role=row.role,
        display_name=row.display_name,
        description=row.description,
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        uid=row.uid,
        owner=row.owner,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        display_name=row.display_name,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
        last_used_time=row.last_used_time,
        create_time=row.create_time,
        version=row.version,
    )


def _audit(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        workspace=row.workspace,
        principal=row.principal,
        method=row.method,
        permission=row.permission,
        resource=row.resource,
        result=row.result,
        reason=row.reason,
        request_id=row.request_id,
        create_time=row.create_time,
    )


class Repository:
    """Every table of auth behind one session; methods are small and obvious."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _write(self, row: Any, values: dict[str, Any]) -> None:
        for key, value in values.items():
            setattr(row, key, value)
        await self.session.flush()

    # users
    async def get_user(self, user_id: str) -> User | None:
        row = await self.session.get(UserRow, user_id)
        return _user(row) if row else None

    async def list_users(self, after: str | None, limit: int) -> list[User]:
        q = sa.select(UserRow).order_by(UserRow.id).limit(limit)
        if after is not None:
            q = q.where(UserRow.id > after)
        return [_user(r) for r in (await self.session.scalars(q)).all()]

    async def add_user(self, user: User) -> None:
        self.session.add(
            UserRow(
                id=user.id,
                uid=user.uid,
                display_name=user.display_name,
                email=user.email,
                platform_admin=user.platform_admin,
                state=user.state.value,
                create_time=user.create_time,
                update_time=user.update_time,
                version=user.version,
            )
        )
        await self.session.flush()

    async def save_user(self, user: User) -> None:
        row = await self.session.get_one(UserRow, user.id)
        await self._write(
            row,
            dict(
                display_name=user.display_name,
                email=user.email,
                platform_admin=user.platform_admin,
                state=user.state.value,
                update_time=user.update_time,
                version=user.version,
            ),
        )

    async def delete_user(self, user_id: str) -> None:
        await self.session.execute(sa.delete(MemberRow).where(MemberRow.user_id == user_id))
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner == f"users/{user_id}"))
        await self.session.execute(sa.delete(UserRow).where(UserRow.id == user_id))

    async def count_users(self) -> int:
        return int(await self.session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0)

    # workspaces
    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        row = await self.session.get(WorkspaceRow, workspace_id)
        return _workspace(row) if row else None

    async def list_workspaces(
        self, after: str | None, limit: int, member: str | None = None
    ) -> list[Workspace]:
        q = sa.select(WorkspaceRow).order_by(WorkspaceRow.id).limit(limit)
        if after is not None:
            q = q.where(WorkspaceRow.id > after)
        if member is not None:
            q = q.where(
                WorkspaceRow.id.in_(sa.select(MemberRow.workspace_id).where(MemberRow.user_id == member))
            )
        return [_workspace(r) for r in (await self.session.scalars(q)).all()]

    async def add_workspace(self, ws: Workspace) -> None:
        self.session.add(
            WorkspaceRow(
                id=ws.id,
                uid=ws.uid,
                display_name=ws.display_name,
                description=ws.description,
                create_time=ws.create_time,
                update_time=ws.update_time,
                version=ws.version,
            )
        )
        await self.session.flush()

    async def save_workspace(self, ws: Workspace) -> None:
        row = await self.session.get_one(WorkspaceRow, ws.id)
        await self._write(
            row,
            dict(
                display_name=ws.display_name,
                description=ws.description,
                update_time=ws.update_time,
                version=ws.version,
            ),
        )

    async def delete_workspace(self, workspace_id: str) -> None:
        prefix = f"workspaces/{workspace_id}/serviceAccounts/"
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner.startswith(prefix)))
        await self.session.execute(
            sa.delete(ServiceAccountRow).where(ServiceAccountRow.workspace_id == workspace_id)
        )
        await self.session.execute(sa.delete(MemberRow).where(MemberRow.workspace_id == workspace_id))
        await self.session.execute(sa.delete(WorkspaceRow).where(WorkspaceRow.id == workspace_id))

    # members
    async def get_member(self, workspace_id: str, user_id: str) -> Member | None:
        row = await self.session.get(MemberRow, (workspace_id, user_id))
        return _member(row) if row else None

    async def list_members(self, workspace_id: str, after: str | None, limit: int) -> list[Member]:
        q = (
            sa.select(MemberRow)
            .where(MemberRow.workspace_id == workspace_id)
            .order_by(MemberRow.user_id)
            .limit(limit)
        )
        if after is not None:
            q = q.where(MemberRow.user_id > after)
        return [_member(r) for r in (await self.session.scalars(q)).all()]

    async def memberships_of(self, user_id: str) -> list[Member]:
        q = sa.select(MemberRow).where(MemberRow.user_id == user_id)
        return [_member(r) for r in (await self.session.scalars(q)).all()]

    async def count_owners(self, workspace_id: str) -> int:
        q = (
            sa.select(sa.func.count())
            .select_from(MemberRow)
            .where(MemberRow.workspace_id == workspace_id, MemberRow.role == "OWNER")
        )
        return int(await self.session.scalar(q) or 0)

    async def add_member(self, m: Member) -> None:
        self.session.add(
            MemberRow(
                workspace_id=m.workspace_id,
                user_id=m.user_id,
                role=m.role,
                create_time=m.create_time,
                update_time=m.update_time,
                version=m.version,
            )
        )
        await self.session.flush()

    async def save_member(self, m: Member) -> None:
        row = await self.session.get_one(MemberRow, (m.workspace_id, m.user_id))
        await self._write(row, dict(role=m.role, update_time=m.update_time, version=m.version))

    async def delete_member(self, workspace_id: str, user_id: str) -> None:
        await self.session.execute(
            sa.delete(MemberRow).where(MemberRow.workspace_id == workspace_id, MemberRow.user_id == user_id)
        )

    # service accounts
    async def get_service_account(self, workspace_id: str, sa_id: str) -> ServiceAccount | None:
        row = await self.session.get(ServiceAccountRow, (workspace_id, sa_id))
        return _service_account(row) if row else None

    async def list_service_accounts(
        self, workspace_id: str, after: str | None, limit: int
    ) -> list[ServiceAccount]:
        q = (
            sa.select(ServiceAccountRow)
            .where(ServiceAccountRow.workspace_id == workspace_id)
            .order_by(ServiceAccountRow.id)
            .limit(limit)
        )
        if after is not None:
            q = q.where(ServiceAccountRow.id > after)
        return [_service_account(r) for r in (await self.session.scalars(q)).all()]

    async def add_service_account(self, s: ServiceAccount) -> None:
        self.session.add(
            ServiceAccountRow(
                workspace_id=s.workspace_id,
                id=s.id,
                uid=s.uid,
                role=s.role,
                display_name=s.display_name,
                description=s.description,
                create_time=s.create_time,
                update_time=s.update_time,
                version=s.version,
            )
        )
        await self.session.flush()

    async def save_service_account(self, s: ServiceAccount) -> None:
        row = await self.session.get_one(ServiceAccountRow, (s.workspace_id, s.id))
        await self._write(
            row,
            dict(
                role=s.role,
                display_name=s.display_name,
                description=s.description,
                update_time=s.update_time,
                version=s.version,
            ),
        )

    async def delete_service_account(self, workspace_id: str, sa_id: str) -> None:
        owner = f"workspaces/{workspace_id}/serviceAccounts/{sa_id}"
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner == owner))
        await self.session.execute(
            sa.delete(ServiceAccountRow).where(
                ServiceAccountRow.workspace_id == workspace_id,
                ServiceAccountRow.id == sa_id,
            )
        )

    # api keys
    async def get_api_key(self, owner: str, key_id: str) -> ApiKey | None:
        q = sa.select(ApiKeyRow).where(ApiKeyRow.owner == owner, ApiKeyRow.id == key_id)
        row = (await self.session.scalars(q)).first()
        return _api_key(row) if row else None

    async def api_key_by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self.session.scalars(sa.select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))).first()
        return _api_key(row) if row else None

    async def list_api_keys(self, owner: str, after: str | None, limit: int) -> list[ApiKey]:
        q = sa.select(ApiKeyRow).where(ApiKeyRow.owner == owner).order_by(ApiKeyRow.id).limit(limit)
        if after is not None:
            q = q.where(ApiKeyRow.id > after)
        return [_api_key(r) for r in (await self.session.scalars(q)).all()]

    async def add_api_key(self, k: ApiKey) -> None:
        self.session.add(
            ApiKeyRow(
                uid=k.uid,
                id=k.id,
                owner=k.owner,
                prefix=k.prefix,
                secret_hash=k.secret_hash,
                display_name=k.display_name,
                expire_time=k.expire_time,
                revoke_time=k.revoke_time,
                last_used_time=k.last_used_time,
                create_time=k.create_time,
                version=k.version,
            )
        )
        await self.session.flush()

    async def save_api_key(self, k: ApiKey) -> None:
        row = await self.session.get_one(ApiKeyRow, k.uid)
        await self._write(
            row,
            dict(
                revoke_time=k.revoke_time,
                last_used_time=k.last_used_time,
                version=k.version,
            ),
        )

    async def touch_api_key(self, uid: str, when: dt.datetime) -> None:
        await self.session.execute(
            sa.update(ApiKeyRow).where(ApiKeyRow.uid == uid).values(last_used_time=when)
        )

    # audit
    async def add_audit(self, e: AuditEntry) -> None:
        self.session.add(
            AuditEntryRow(
                id=e.id,
                workspace=e.workspace,
                principal=e.principal,
                method=e.method,
                permission=e.permission,
                resource=e.resource,
                result=e.result,
                reason=e.reason,
                request_id=e.request_id,
                create_time=e.create_time,
            )
        )
        await self.session.flush()

    async def list_audit(
        self, workspace: str | None, principal: str, before: int | None, limit: int
    ) -> list[tuple[int, AuditEntry]]:
        q = sa.select(AuditEntryRow).order_by(AuditEntryRow.seq.desc()).limit(limit)
        if workspace is not None:
            q = q.where(AuditEntryRow.workspace == workspace)
        if principal:
            q = q.where(AuditEntryRow.principal == principal)
        if before is not None:
            q = q.where(AuditEntryRow.seq < before)
        return [(r.seq, _audit(r)) for r in (await self.session.scalars(q)).all()]

    # signing keys
    async def signing_keys(self) -> Sequence[SigningKeyRow]:
        q = sa.select(SigningKeyRow).order_by(SigningKeyRow.create_time.desc())
        return (await self.session.scalars(q)).all()

    async def add_signing_key(self, row: SigningKeyRow) -> None:
        self.session.add(row)
        await self.session.flush()

    async def retire_signing_keys(self, except_kid: str, when: dt.datetime) -> None:
        await self.session.execute(
            sa.update(SigningKeyRow)
            .where(SigningKeyRow.kid != except_kid, SigningKeyRow.retire_time.is_(None))
            .values(retire_time=when)
        )
