"""Auth's entities: plain dataclasses, no I/O."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class UserState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


@dataclass
class User:
    id: str
    uid: str
    display_name: str = ""
    email: str = ""
    platform_admin: bool = False
    state: UserState = UserState.ACTIVE
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    def __post_init__(self) -> None:
        self.state = UserState(self.state)  # stores hand back plain strings

    @property
    def name(self) -> str:
        return f"users/{self.id}"


@dataclass
class Workspace:
    id: str
    uid: str
    display_name: str = ""
    description: str = ""
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"workspaces/{self.id}"


@dataclass
class Member:
    workspace_id: str
    user_id: str
    role: str
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"workspaces/{self.workspace_id}/members/{self.user_id}"


@dataclass
class ServiceAccount:
    workspace_id: str
    id: str
    uid: str
    role: str
    display_name: str = ""
    description: str = ""
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"workspaces/{self.workspace_id}/serviceAccounts/{self.id}"


class ApiKeyState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


@dataclass
class ApiKey:
    id: str
    uid: str
    owner: str  # users/{u} or workspaces/{w}/serviceAccounts/{sa}
    prefix: str
    secret_hash: str
    display_name: str = ""
    expire_time: dt.datetime | None = None
    revoke_time: dt.datetime | None = None
    last_used_time: dt.datetime | None = None
    create_time: dt.datetime | None = None
    version: int = 1
    secret: str = field(default="", repr=False)  # only in memory, right after creation

    @property
    def name(self) -> str:
        return f"{self.owner}/apiKeys/{self.id}"

    def state(self, now: dt.datetime) -> ApiKeyState:
        if self.revoke_time is not None:
            return ApiKeyState.REVOKED
        if self.expire_time is not None and now >= self.expire_time:
            return ApiKeyState.EXPIRED
        return ApiKeyState.ACTIVE


@dataclass
class AuditEntry:
    id: str
    workspace: str  # workspace id, or "-" for platform-level entries
    principal: str
    method: str
    permission: str
    resource: str
    result: str
    reason: str
    request_id: str
    create_time: dt.datetime

    @property
    def name(self) -> str:
        return f"workspaces/{self.workspace}/auditEntries/{self.id}"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as auth sees it."""

    name: str
    platform_admin: bool
    roles: dict[str, str]  # workspaces/{w} -> role
    disabled: bool = False


@dataclass(frozen=True)
class SigningKey:
    """A key tokens are signed with: the private half only ever stored encrypted (by the key-encryption
    key on auth's disk), retired ones kept for verifying tokens they signed until those expire."""

    kid: str
    public_key: bytes
    private_key_encrypted: bytes
    create_time: dt.datetime
    retire_time: dt.datetime | None = None
