"""First start: a platform admin, a `default` workspace it owns, and its API key, in one transaction."""

from __future__ import annotations

from pai_auth import mapping
from pai_auth.app.common import new_uid
from pai_auth.db.uow import UnitOfWorkFactory
from pai_auth.domain import keys
from pai_auth.domain.model import ApiKey, Member, User, Workspace
from pai_common.clock import utcnow

ADMIN_ID = "admin"
DEFAULT_WORKSPACE = "default"


async def bootstrap(uow_factory: UnitOfWorkFactory, given_key: str = "") -> str | None:
    """Create the first admin if there are no users yet; returns the admin key, or None if done before.

    `given_key` (PAI_BOOTSTRAP_ADMIN_KEY) is used as the key when set; otherwise one is generated.
    Everything is written in one transaction, so a crash leaves either nothing or all of it.
    """
    if given_key and keys.parse(given_key) is None:
        raise ValueError(
            "PAI_BOOTSTRAP_ADMIN_KEY is not a pai API key (pai_<8 alphanumerics>_<43 base64url>)"
        )
    now = utcnow()
    async with uow_factory() as uow:
        if await uow.repo.count_users() > 0:
            return None
        admin = User(
            ADMIN_ID,
            new_uid(),
            "Platform admin",
            "",
            True,
            create_time=now,
            update_time=now,
        )
        workspace = Workspace(DEFAULT_WORKSPACE, new_uid(), "Default workspace", "", now, now)
        owner = Member(DEFAULT_WORKSPACE, ADMIN_ID, "OWNER", now, now)
        if given_key:
            secret, prefix = given_key, keys.parse(given_key) or ""
        else:
            prefix, secret = keys.generate()
        key = ApiKey(
            id=prefix.lower(),
            uid=new_uid(),
            owner=admin.name,
            prefix=prefix,
            secret_hash=keys.digest(secret),
            display_name="bootstrap admin key",
            create_time=now,
        )
        await uow.repo.add_user(admin)
        await uow.repo.add_workspace(workspace)
        await uow.repo.add_member(owner)
        await uow.repo.add_api_key(key)
        await uow.outbox.add(mapping.user_event("created", admin))
        await uow.outbox.add(mapping.workspace_event("created", workspace))
        await uow.outbox.add(mapping.member_event("added", owner))
        await uow.outbox.add(mapping.api_key_event("created", key, now))
        await uow.commit()
    return secret
