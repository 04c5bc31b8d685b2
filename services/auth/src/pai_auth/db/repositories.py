"""Auth's repository: rows in, domain entities out.

Row columns and entity fields share their names, so one pair of functions converts every
table; the entity's own types (e.g. `UserState`) are restored by the entity itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from pai_auth.db.rows import (
    ApiKeyRow,
    AuditEntryRow,
    Base,
    MemberRow,
    ServiceAccountRow,
    SigningKeyRow,
    UserRow,
    WorkspaceRow,
)
from pai_auth.domain.model import ApiKey, AuditEntry, Member, ServiceAccount, SigningKey, User, Workspace

E = TypeVar("E")


def entity(cls: type[E], row: Base) -> E:
    """The domain entity of a row (fields the row lacks keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{c.key: getattr(row, c.key) for c in sa.inspect(row).mapper.column_attrs if c.key in names})


def row_values(row_cls: type[Base], item: Any) -> dict[str, Any]:
    """The column values of an entity, for an insert or an update."""
    values = {}
    for column in sa.inspect(row_cls).column_attrs:
        if hasattr(item, column.key):
            value = getattr(item, column.key)
            values[column.key] = value.value if hasattr(value, "value") else value
    return values


class Repository:
    """Every table of auth behind one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _get(self, cls: type[E], row_cls: type[Base], key: Any, for_update: bool = False) -> E | None:
        """One row; `for_update` locks it on PostgreSQL (SQLite serialises writers at BEGIN)."""
        row = await self.session.get(row_cls, key, with_for_update=for_update or None)
        return entity(cls, row) if row is not None else None

    async def _list(self, cls: type[E], query: sa.Select[Any]) -> list[E]:
        return [entity(cls, r) for r in (await self.session.scalars(query)).all()]

    async def _add(self, row_cls: type[Base], item: Any) -> None:
        self.session.add(row_cls(**row_values(row_cls, item)))
        await self.session.flush()

    async def _save(self, row_cls: type[Base], key: Any, item: Any, *fields: str) -> None:
        row = await self.session.get_one(row_cls, key)
        values = row_values(row_cls, item)
        for name in fields:
            setattr(row, name, values[name])
        await self.session.flush()

    @staticmethod
    def _page(query: sa.Select[Any], key: Any, after: Any, limit: int) -> sa.Select[Any]:
        query = query.order_by(key).limit(limit)
        return query.where(key > after) if after is not None else query

    # users
    async def get_user(self, user_id: str, for_update: bool = False) -> User | None:
        return await self._get(User, UserRow, user_id, for_update)

    async def list_users(self, after: str | None, limit: int) -> list[User]:
        return await self._list(User, self._page(sa.select(UserRow), UserRow.id, after, limit))

    async def add_user(self, user: User) -> None:
        await self._add(UserRow, user)

    async def save_user(self, user: User) -> None:
        await self._save(
            UserRow,
            user.id,
            user,
            "display_name",
            "email",
            "platform_admin",
            "state",
            "update_time",
            "version",
        )

    async def delete_user(self, user_id: str) -> None:
        await self.session.execute(sa.delete(MemberRow).where(MemberRow.user_id == user_id))
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner == f"users/{user_id}"))
        await self.session.execute(sa.delete(UserRow).where(UserRow.id == user_id))

    async def count_platform_admins(self) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(UserRow)
            .where(UserRow.platform_admin.is_(True), UserRow.state == "ACTIVE")
        )
        return int(await self.session.scalar(query) or 0)

    async def list_service_accounts_of(self, workspace_id: str) -> list[ServiceAccount]:
        query = sa.select(ServiceAccountRow).where(ServiceAccountRow.workspace_id == workspace_id)
        return await self._list(ServiceAccount, query)

    async def members_of(self, workspace_id: str) -> list[Member]:
        return await self._list(Member, sa.select(MemberRow).where(MemberRow.workspace_id == workspace_id))

    async def active_api_keys_of(self, owner_prefix: str) -> list[ApiKey]:
        query = sa.select(ApiKeyRow).where(
            ApiKeyRow.owner.startswith(owner_prefix), ApiKeyRow.revoke_time.is_(None)
        )
        return await self._list(ApiKey, query)

    async def count_users(self) -> int:
        return int(await self.session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0)

    # workspaces
    async def get_workspace(self, workspace_id: str, for_update: bool = False) -> Workspace | None:
        return await self._get(Workspace, WorkspaceRow, workspace_id, for_update)

    async def list_workspaces(
        self, after: str | None, limit: int, member: str | None = None
    ) -> list[Workspace]:
        query = sa.select(WorkspaceRow)
        if member is not None:
            query = query.where(
                WorkspaceRow.id.in_(sa.select(MemberRow.workspace_id).where(MemberRow.user_id == member))
            )
        return await self._list(Workspace, self._page(query, WorkspaceRow.id, after, limit))

    async def add_workspace(self, ws: Workspace) -> None:
        await self._add(WorkspaceRow, ws)

    async def save_workspace(self, ws: Workspace) -> None:
        await self._save(WorkspaceRow, ws.id, ws, "display_name", "description", "update_time", "version")

    async def delete_workspace(self, workspace_id: str) -> None:
        prefix = f"workspaces/{workspace_id}/serviceAccounts/"
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner.startswith(prefix)))
        await self.session.execute(
            sa.delete(ServiceAccountRow).where(ServiceAccountRow.workspace_id == workspace_id)
        )
        await self.session.execute(sa.delete(MemberRow).where(MemberRow.workspace_id == workspace_id))
        await self.session.execute(sa.delete(WorkspaceRow).where(WorkspaceRow.id == workspace_id))

    # members
    async def get_member(self, workspace_id: str, user_id: str, for_update: bool = False) -> Member | None:
        return await self._get(Member, MemberRow, (workspace_id, user_id), for_update)

    async def list_members(self, workspace_id: str, after: str | None, limit: int) -> list[Member]:
        query = sa.select(MemberRow).where(MemberRow.workspace_id == workspace_id)
        return await self._list(Member, self._page(query, MemberRow.user_id, after, limit))

    async def memberships_of(self, user_id: str) -> list[Member]:
        return await self._list(Member, sa.select(MemberRow).where(MemberRow.user_id == user_id))

    async def count_owners(self, workspace_id: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(MemberRow)
            .where(MemberRow.workspace_id == workspace_id, MemberRow.role == "OWNER")
        )
        return int(await self.session.scalar(query) or 0)

    async def add_member(self, m: Member) -> None:
        await self._add(MemberRow, m)

    async def save_member(self, m: Member) -> None:
        await self._save(MemberRow, (m.workspace_id, m.user_id), m, "role", "update_time", "version")

    async def delete_member(self, workspace_id: str, user_id: str) -> None:
        await self.session.execute(
            sa.delete(MemberRow).where(MemberRow.workspace_id == workspace_id, MemberRow.user_id == user_id)
        )

    # service accounts
    async def get_service_account(
        self, workspace_id: str, sa_id: str, for_update: bool = False
    ) -> ServiceAccount | None:
        return await self._get(ServiceAccount, ServiceAccountRow, (workspace_id, sa_id), for_update)

    async def list_service_accounts(
        self, workspace_id: str, after: str | None, limit: int
    ) -> list[ServiceAccount]:
        query = sa.select(ServiceAccountRow).where(ServiceAccountRow.workspace_id == workspace_id)
        return await self._list(ServiceAccount, self._page(query, ServiceAccountRow.id, after, limit))

    async def add_service_account(self, s: ServiceAccount) -> None:
        await self._add(ServiceAccountRow, s)

    async def save_service_account(self, s: ServiceAccount) -> None:
        await self._save(
            ServiceAccountRow,
            (s.workspace_id, s.id),
            s,
            "role",
            "display_name",
            "description",
            "update_time",
            "version",
        )

    async def delete_service_account(self, workspace_id: str, sa_id: str) -> None:
        owner = f"workspaces/{workspace_id}/serviceAccounts/{sa_id}"
        await self.session.execute(sa.delete(ApiKeyRow).where(ApiKeyRow.owner == owner))
        await self.session.execute(
            sa.delete(ServiceAccountRow).where(
                ServiceAccountRow.workspace_id == workspace_id, ServiceAccountRow.id == sa_id
            )
        )

    # api keys
    async def get_api_key(self, owner: str, key_id: str, for_update: bool = False) -> ApiKey | None:
        query = sa.select(ApiKeyRow).where(ApiKeyRow.owner == owner, ApiKeyRow.id == key_id)
        if for_update:
            query = query.with_for_update()
        found = await self._list(ApiKey, query)
        return found[0] if found else None

    async def api_key_by_prefix(self, prefix: str) -> ApiKey | None:
        found = await self._list(ApiKey, sa.select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
        return found[0] if found else None

    async def list_api_keys(self, owner: str, after: str | None, limit: int) -> list[ApiKey]:
        query = sa.select(ApiKeyRow).where(ApiKeyRow.owner == owner)
        return await self._list(ApiKey, self._page(query, ApiKeyRow.id, after, limit))

    async def add_api_key(self, k: ApiKey) -> None:
        await self._add(ApiKeyRow, k)

    async def save_api_key(self, k: ApiKey) -> None:
        await self._save(ApiKeyRow, k.uid, k, "revoke_time", "last_used_time", "version")

    async def touch_api_key(self, uid: str, when: dt.datetime) -> None:
        await self.session.execute(
            sa.update(ApiKeyRow).where(ApiKeyRow.uid == uid).values(last_used_time=when)
        )

    # audit
    async def add_audit(self, e: AuditEntry) -> None:
        await self._add(AuditEntryRow, e)

    async def list_audit(
        self, workspace: str | None, principal: str, before: int | None, limit: int
    ) -> list[tuple[int, AuditEntry]]:
        query = sa.select(AuditEntryRow).order_by(AuditEntryRow.seq.desc()).limit(limit)
        if workspace is not None:
            query = query.where(AuditEntryRow.workspace == workspace)
        if principal:
            query = query.where(AuditEntryRow.principal == principal)
        if before is not None:
            query = query.where(AuditEntryRow.seq < before)
        return [(r.seq, entity(AuditEntry, r)) for r in (await self.session.scalars(query)).all()]

    # signing keys
    async def signing_keys(self) -> list[SigningKey]:
        query = sa.select(SigningKeyRow).order_by(SigningKeyRow.create_time.desc())
        return [entity(SigningKey, r) for r in (await self.session.scalars(query)).all()]

    async def add_signing_key(self, key: SigningKey) -> None:
        self.session.add(SigningKeyRow(**row_values(SigningKeyRow, key)))
        await self.session.flush()

    async def retire_signing_keys(self, except_kid: str, when: dt.datetime) -> None:
        await self.session.execute(
            sa.update(SigningKeyRow)
            .where(SigningKeyRow.kid != except_kid, SigningKeyRow.retire_time.is_(None))
            .values(retire_time=when)
        )
