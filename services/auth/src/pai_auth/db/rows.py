"""Auth's tables. Rows never leave db/: repositories turn them into domain entities."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pai_common.db import UtcDateTime, metadata
from pai_common.events import event_tables


class Base(DeclarativeBase):
    metadata = metadata()
    type_annotation_map = {dt.datetime: UtcDateTime()}


EVENTS = event_tables(Base.metadata)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    email: Mapped[str] = mapped_column(sa.String(254), default="")
    platform_admin: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(sa.String(16))
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class WorkspaceRow(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    description: Mapped[str] = mapped_column(sa.String(1024), default="")
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class MemberRow(Base):
    __tablename__ = "members"
    workspace_id: Mapped[str] = mapped_column(
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(sa.String(16))
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class ServiceAccountRow(Base):
    __tablename__ = "service_accounts"
    workspace_id: Mapped[str] = mapped_column(
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    description: Mapped[str] = mapped_column(sa.String(1024), default="")
    create_time: Mapped[dt.datetime]
    update_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    uid: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(64))
    owner: Mapped[str] = mapped_column(sa.String(255), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    display_name: Mapped[str] = mapped_column(sa.String(128), default="")
    expire_time: Mapped[dt.datetime | None]
    revoke_time: Mapped[dt.datetime | None]
    last_used_time: Mapped[dt.datetime | None]
    create_time: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(default=1)
    __table_args__ = (sa.UniqueConstraint("owner", "id", name="uq_api_keys_owner_id"),)


class AuditEntryRow(Base):
    __tablename__ = "audit_entries"
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    workspace: Mapped[str] = mapped_column(sa.String(63), index=True)
    principal: Mapped[str] = mapped_column(sa.String(255))
    method: Mapped[str] = mapped_column(sa.String(255))
    permission: Mapped[str] = mapped_column(sa.String(128))
    resource: Mapped[str] = mapped_column(sa.String(512))
    result: Mapped[str] = mapped_column(sa.String(32))
    reason: Mapped[str] = mapped_column(sa.String(64))
    request_id: Mapped[str] = mapped_column(sa.String(64))
    create_time: Mapped[dt.datetime]


class SigningKeyRow(Base):
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(sa.LargeBinary)
    private_key_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    create_time: Mapped[dt.datetime]
    retire_time: Mapped[dt.datetime | None]
