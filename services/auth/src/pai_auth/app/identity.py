"""Use cases for users, service accounts and API keys."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from pai_auth import mapping
from pai_auth.app.common import check_etag, denied, invalid, new_uid, not_found
from pai_auth.db.uow import UnitOfWork, UnitOfWorkFactory
from pai_auth.domain import keys
from pai_auth.domain.model import (
    ApiKey,
    ApiKeyState,
    Principal,
    ServiceAccount,
    User,
    UserState,
)
from pai_common.clock import utcnow
from pai_common.errors import AlreadyExists, FailedPrecondition
from pai_common.names import parse

USER_FIELDS = ("display_name", "email", "platform_admin")
USER_DEFAULT_FIELDS = ("display_name", "email")  # platform_admin changes only when named in the mask
SERVICE_ACCOUNT_FIELDS = ("display_name", "description", "role")


class IdentityUseCases:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    # users -----------------------------------------------------------------
    async def create_user(self, user_id: str, display_name: str, email: str, platform_admin: bool) -> User:
        now = utcnow()
        user = User(
            id=user_id,
            uid=new_uid(),
            display_name=display_name,
            email=email,
            platform_admin=platform_admin,
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            if await uow.repo.get_user(user_id) is not None:
                raise AlreadyExists(
                    "USER_ALREADY_EXISTS",
                    f"users/{user_id} already exists",
                    resource=f"users/{user_id}",
                )
            await uow.repo.add_user(user)
            await uow.outbox.add(mapping.user_event("created", user))
            await uow.commit()
        return user

    async def get_user(self, name: str) -> User:
        user_id = parse("users/{user}", name)["user"]
        async with self._uow() as uow:
            user = await uow.repo.get_user(user_id)
        if user is None:
            raise not_found("USER_NOT_FOUND", name)
        return user

    async def list_users(self, after: str | None, limit: int) -> list[User]:
        async with self._uow() as uow:
            return await uow.repo.list_users(after, limit)

    async def update_user(self, caller: Principal, changes: User, fields: set[str], given_etag: str) -> User:
        if "platform_admin" in fields and not caller.platform_admin:
            # Users may edit their own profile, but only platform admins grant platform admin.
            raise denied("only platform admins may change platform_admin")
        async with self._uow() as uow:
            user = await self._user_for_update(uow, changes.id)
            check_etag(given_etag, user)
            if "platform_admin" in fields and not changes.platform_admin:
                await self._keep_a_platform_admin(uow, user)
            updated = replace(
                user,
                **{f: getattr(changes, f) for f in fields},
                update_time=utcnow(),
                version=user.version + 1,
            )
            await uow.repo.save_user(updated)
            await uow.outbox.add(mapping.user_event("updated", updated))
            await uow.commit()
        return updated

    async def set_user_state(self, name: str, state: UserState, given_etag: str) -> User:
        user_id = parse("users/{user}", name)["user"]
        async with self._uow() as uow:
            user = await self._user_for_update(uow, user_id)
            check_etag(given_etag, user)
            if user.state == state:
                return user
            if state == UserState.DISABLED:
                await self._keep_a_platform_admin(uow, user)
            updated = replace(user, state=state, update_time=utcnow(), version=user.version + 1)
            await uow.repo.save_user(updated)
            await uow.outbox.add(mapping.user_event("updated", updated))
            await uow.commit()
        return updated

    async def delete_user(self, caller: Principal, name: str, given_etag: str) -> None:
        user_id = parse("users/{user}", name)["user"]
        if caller.name == name:
            raise FailedPrecondition("CANNOT_DELETE_SELF", "you cannot delete yourself")
        now = utcnow()
        async with self._uow() as uow:
            user = await self._user_for_update(uow, user_id)
            check_etag(given_etag, user)
            await self._keep_a_platform_admin(uow, user)
            memberships = await uow.repo.memberships_of(user_id)
            for membership in memberships:
                await uow.repo.get_workspace(membership.workspace_id, for_update=True)  # owner count lock
                if membership.role == "OWNER" and await uow.repo.count_owners(membership.workspace_id) <= 1:
                    raise FailedPrecondition(
                        "LAST_OWNER",
                        f"{name} is the last owner of workspaces/{membership.workspace_id}; add another owner first",
                    )
            keys_gone = await uow.repo.active_api_keys_of(f"{name}/")
            await uow.repo.delete_user(user_id)
            # Consumers learn of everything the deletion took with it, not only the user.
            for membership in memberships:
                await uow.outbox.add(mapping.member_event("removed", membership))
            for key in keys_gone:
                await uow.outbox.add(mapping.api_key_event("revoked", replace(key, revoke_time=now), now))
            await uow.outbox.add(mapping.user_event("deleted", user))
            await uow.commit()

    async def _user_for_update(self, uow: UnitOfWork, user_id: str) -> User:
        user = await uow.repo.get_user(user_id, for_update=True)
        if user is None:
            raise not_found("USER_NOT_FOUND", f"users/{user_id}")
        return user

    @staticmethod
    async def _keep_a_platform_admin(uow: UnitOfWork, user: User) -> None:
        """The last active platform admin may not lose the role, be disabled or be deleted."""
        if (
            user.platform_admin
            and user.state == UserState.ACTIVE
            and await uow.repo.count_platform_admins() <= 1
        ):
            raise FailedPrecondition(
                "LAST_PLATFORM_ADMIN", f"{user.name} is the last platform admin; make another one first"
            )

    # service accounts --------------------------------------------------------
    async def create_service_account(
        self, parent: str, sa_id: str, display_name: str, description: str, role: str
    ) -> ServiceAccount:
        workspace_id = parse("workspaces/{workspace}", parent, field="parent")["workspace"]
        if role in ("", "ROLE_UNSPECIFIED"):
            raise invalid("service_account.role", "a role is required")
        if role == "OWNER":
            raise invalid("service_account.role", "a service account cannot be an owner")
        now = utcnow()
        account = ServiceAccount(
            workspace_id=workspace_id,
            id=sa_id,
            uid=new_uid(),
            role=role,
            display_name=display_name,
            description=description,
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            if await uow.repo.get_workspace(workspace_id) is None:
                raise not_found("WORKSPACE_NOT_FOUND", parent)
            if await uow.repo.get_service_account(workspace_id, sa_id) is not None:
                raise AlreadyExists(
                    "SERVICE_ACCOUNT_ALREADY_EXISTS",
                    f"{account.name} already exists",
                    resource=account.name,
                )
            await uow.repo.add_service_account(account)
            await uow.outbox.add(mapping.service_account_event("created", account))
            await uow.commit()
        return account

    async def get_service_account(self, name: str) -> ServiceAccount:
        ids = parse("workspaces/{workspace}/serviceAccounts/{sa}", name)
        async with self._uow() as uow:
            account = await uow.repo.get_service_account(ids["workspace"], ids["sa"])
        if account is None:
            raise not_found("SERVICE_ACCOUNT_NOT_FOUND", name)
        return account

    async def list_service_accounts(self, parent: str, after: str | None, limit: int) -> list[ServiceAccount]:
        workspace_id = parse("workspaces/{workspace}", parent, field="parent")["workspace"]
        async with self._uow() as uow:
            return await uow.repo.list_service_accounts(workspace_id, after, limit)

    async def update_service_account(
        self, changes: ServiceAccount, fields: set[str], given_etag: str
    ) -> ServiceAccount:
        if "role" in fields and changes.role == "OWNER":
            raise invalid("service_account.role", "a service account cannot be an owner")
        if "role" in fields and changes.role in ("", "ROLE_UNSPECIFIED"):
            raise invalid("service_account.role", "a role is required")
        async with self._uow() as uow:
            account = await uow.repo.get_service_account(changes.workspace_id, changes.id, for_update=True)
            if account is None:
                raise not_found("SERVICE_ACCOUNT_NOT_FOUND", changes.name)
            check_etag(given_etag, account)
            updated = replace(
                account,
                **{f: getattr(changes, f) for f in fields},
                update_time=utcnow(),
                version=account.version + 1,
            )
            await uow.repo.save_service_account(updated)
            await uow.outbox.add(mapping.service_account_event("updated", updated))
            await uow.commit()
        return updated

    async def delete_service_account(self, name: str, given_etag: str) -> None:
        ids = parse("workspaces/{workspace}/serviceAccounts/{sa}", name)
        now = utcnow()
        async with self._uow() as uow:
            account = await uow.repo.get_service_account(ids["workspace"], ids["sa"], for_update=True)
            if account is None:
                raise not_found("SERVICE_ACCOUNT_NOT_FOUND", name)
            check_etag(given_etag, account)
            keys_gone = await uow.repo.active_api_keys_of(f"{name}/")
            await uow.repo.delete_service_account(ids["workspace"], ids["sa"])
            for key in keys_gone:
                await uow.outbox.add(mapping.api_key_event("revoked", replace(key, revoke_time=now), now))
            await uow.outbox.add(mapping.service_account_event("deleted", account))
            await uow.commit()

    # api keys -------------------------------------------------------------------
    async def _check_owner_exists(self, uow: UnitOfWork, owner: str) -> None:
        if owner.startswith("users/"):
            if await uow.repo.get_user(owner.split("/")[1]) is None:
                raise not_found("USER_NOT_FOUND", owner)
            return
        ids = parse("workspaces/{workspace}/serviceAccounts/{sa}", owner, field="parent")
        if await uow.repo.get_service_account(ids["workspace"], ids["sa"]) is None:
            raise not_found("SERVICE_ACCOUNT_NOT_FOUND", owner)

    async def create_api_key(
        self,
        owner: str,
        display_name: str,
        expire_time: dt.datetime | None,
        secret: str | None = None,
    ) -> ApiKey:
        """A new key for `owner`; `secret` is given only by the bootstrap (PAI_BOOTSTRAP_ADMIN_KEY)."""
        now = utcnow()
        if expire_time is not None and expire_time <= now:
            raise invalid("api_key.expire_time", "must be in the future")
        if secret is None:
            prefix, secret = keys.generate()
        else:
            parsed = keys.parse(secret)
            if parsed is None:
                raise invalid("secret", "not a pai API key (pai_<8 alphanumerics>_<43 base64url>)")
            prefix = parsed
        key = ApiKey(
            id=prefix.lower(),
            uid=new_uid(),
            owner=owner,
            prefix=prefix,
            secret_hash=keys.digest(secret),
            display_name=display_name,
            expire_time=expire_time,
            create_time=now,
            secret=secret,
        )
        async with self._uow() as uow:
            await self._check_owner_exists(uow, owner)
            if await uow.repo.api_key_by_prefix(prefix) is not None:
                raise AlreadyExists("API_KEY_ALREADY_EXISTS", "a key with this prefix exists; retry")
            await uow.repo.add_api_key(key)
            await uow.outbox.add(mapping.api_key_event("created", key, now))
            await uow.commit()
        return key

    async def get_api_key(self, name: str) -> ApiKey:
        owner, _, key_id = name.rpartition("/apiKeys/")
        async with self._uow() as uow:
            key = await uow.repo.get_api_key(owner, key_id)
        if key is None:
            raise not_found("API_KEY_NOT_FOUND", name)
        return key

    async def list_api_keys(self, owner: str, after: str | None, limit: int) -> list[ApiKey]:
        async with self._uow() as uow:
            await self._check_owner_exists(uow, owner)
            return await uow.repo.list_api_keys(owner, after, limit)

    async def revoke_api_key(self, name: str) -> ApiKey:
        owner, _, key_id = name.rpartition("/apiKeys/")
        now = utcnow()
        async with self._uow() as uow:
            key = await uow.repo.get_api_key(owner, key_id, for_update=True)
            if key is None:
                raise not_found("API_KEY_NOT_FOUND", name)
            if key.state(now) == ApiKeyState.REVOKED:
                raise FailedPrecondition("API_KEY_REVOKED", f"{name} is already revoked")
            revoked = replace(key, revoke_time=now, version=key.version + 1)
            await uow.repo.save_api_key(revoked)
            await uow.outbox.add(mapping.api_key_event("revoked", revoked, now))
            await uow.commit()
        return revoked
