"""The one place where auth's protobuf messages and domain entities meet."""

from __future__ import annotations

import datetime as dt
import hashlib

from pai.auth.v1 import (
    audit_pb2,
    authorization_pb2,
    events_pb2,
    identity_pb2,
    workspace_pb2,
)
from pai_auth.domain.model import (
    ApiKey,
    AuditEntry,
    Member,
    Principal,
    ServiceAccount,
    User,
    Workspace,
)
from pai_common.etags import etag_of
from pai_common.events import OutboxEvent
from pai_common.wire import ts

SOURCE = "//auth.pai.dev"


def member_etag(m: Member) -> str:
    """Members have no uid: their name and creation time tell one membership from a later one."""
    created = m.create_time.isoformat() if m.create_time else ""
    digest = hashlib.sha256(f"{m.name}\n{created}".encode()).hexdigest()
    return etag_of(m.version, digest)


def etag(entity: object) -> str:
    """The etag a client sees for an entity."""
    if isinstance(entity, Member):
        return member_etag(entity)
    return etag_of(getattr(entity, "version"), getattr(entity, "uid"))  # noqa: B009


def user(u: User) -> identity_pb2.User:
    return identity_pb2.User(
        name=u.name,
        uid=u.uid,
        display_name=u.display_name,
        email=u.email,
        platform_admin=u.platform_admin,
        state=identity_pb2.User.State.Value(u.state.value),
        create_time=ts(u.create_time),
        update_time=ts(u.update_time),
        etag=etag_of(u.version, u.uid),
    )


def workspace(w: Workspace) -> workspace_pb2.Workspace:
    return workspace_pb2.Workspace(
        name=w.name,
        uid=w.uid,
        display_name=w.display_name,
        description=w.description,
        state=workspace_pb2.Workspace.ACTIVE,
        create_time=ts(w.create_time),
        update_time=ts(w.update_time),
        etag=etag_of(w.version, w.uid),
    )


def member(m: Member) -> workspace_pb2.Member:
    return workspace_pb2.Member(
        name=m.name,
        user=f"users/{m.user_id}",
        role=identity_pb2.Role.Value(m.role),
        create_time=ts(m.create_time),
        update_time=ts(m.update_time),
        etag=member_etag(m),
    )


def service_account(s: ServiceAccount) -> identity_pb2.ServiceAccount:
    return identity_pb2.ServiceAccount(
        name=s.name,
        uid=s.uid,
        display_name=s.display_name,
        description=s.description,
        role=identity_pb2.Role.Value(s.role),
        create_time=ts(s.create_time),
        update_time=ts(s.update_time),
        etag=etag_of(s.version, s.uid),
    )


def api_key(k: ApiKey, now: dt.datetime) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        name=k.name,
        uid=k.uid,
        display_name=k.display_name,
        prefix=f"pai_{k.prefix}",
        secret=k.secret,
        expire_time=ts(k.expire_time),
        state=identity_pb2.ApiKey.State.Value(k.state(now).value),
        last_used_time=ts(k.last_used_time),
        revoke_time=ts(k.revoke_time),
        create_time=ts(k.create_time),
        etag=etag_of(k.version, k.uid),
    )


def audit_entry(e: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        name=e.name,
        principal=e.principal,
        method=e.method,
        permission=e.permission,
        resource=e.resource,
        result=e.result,
        reason=e.reason,
        request_id=e.request_id,
        create_time=ts(e.create_time),
        etag=etag_of(1, e.id),
    )


def principal(p: Principal) -> authorization_pb2.Principal:
    return authorization_pb2.Principal(
        name=p.name,
        platform_admin=p.platform_admin,
        workspace_roles=[
            authorization_pb2.WorkspaceRole(workspace=w, role=identity_pb2.Role.Value(r))
            for w, r in sorted(p.roles.items())
        ],
    )


# events: subject pai.auth.<entity>.<verb>, payload a snapshot without secrets


def _event(subject: str, message: object) -> OutboxEvent:
    return OutboxEvent(subject=subject, message=message, source=SOURCE)  # type: ignore[arg-type]


def _snapshot_event(entity: str, verb: str, snapshot: object) -> OutboxEvent:
    """`pai.auth.<entity>.<verb>` carrying `<Entity><Verb>(<entity>=snapshot)`, e.g. MemberAdded."""
    cls = getattr(events_pb2, "".join(p.capitalize() for p in entity.split("_")) + verb.capitalize())
    return _event(f"pai.auth.{entity}.{verb}", cls(**{entity: snapshot}))


def user_event(verb: str, u: User) -> OutboxEvent:
    return _snapshot_event("user", verb, user(u))


def workspace_event(verb: str, w: Workspace) -> OutboxEvent:
    return _snapshot_event("workspace", verb, workspace(w))


def member_event(verb: str, m: Member) -> OutboxEvent:
    return _snapshot_event("member", verb, member(m))


def service_account_event(verb: str, s: ServiceAccount) -> OutboxEvent:
    return _snapshot_event("service_account", verb, service_account(s))


def api_key_event(verb: str, k: ApiKey, now: dt.datetime) -> OutboxEvent:
    snapshot = api_key(k, now)
    snapshot.ClearField("secret")
    return _snapshot_event("api_key", verb, snapshot)


def signing_key_rotated(kid: str) -> OutboxEvent:
    return _event("pai.auth.signing_key.rotated", events_pb2.SigningKeyRotated(kid=kid))
