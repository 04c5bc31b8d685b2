"""The authorization decision: permission first, existence never consulted."""

from __future__ import annotations

from dataclasses import dataclass

from pai_auth.domain import roles
from pai_auth.domain.model import Principal

# Mirrors pai.api.v1.AuthzRule.Scope without importing protos into the domain.
RESOURCE, PLATFORM, AUTHENTICATED, PUBLIC = 1, 2, 3, 4


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""


def _workspace_of(resource: str) -> str | None:
    parts = resource.split("/")
    if len(parts) >= 2 and parts[0] == "workspaces" and parts[1]:
        return f"workspaces/{parts[1]}"
    return None


def _user_of(resource: str) -> str | None:
    parts = resource.split("/")
    if len(parts) >= 2 and parts[0] == "users" and parts[1]:
        return f"users/{parts[1]}"
    return None


def decide(principal: Principal, scope: int, permission: str, resource: str) -> Decision:
    """Whether `principal` may use `permission` on `resource` under `scope`.

    Only the principal's roles and the resource's *name* are consulted, so a denial never
    depends on (and never reveals) whether the resource exists.
    """
    if scope in (PUBLIC, AUTHENTICATED):
        return Decision(True)
    if principal.platform_admin:
        return Decision(True)
    if scope == PLATFORM:
        return Decision(False, f"{permission} requires a platform admin")
    if scope != RESOURCE:
        return Decision(False, "the method declares no usable authorization rule")
    if (owner := _user_of(resource)) is not None:
        if principal.name == owner and roles.self_allows(permission):
            return Decision(True)
        return Decision(False, f"{principal.name} lacks {permission} on {resource}")
    workspace = _workspace_of(resource)
    role = principal.roles.get(workspace or "")
    if role is not None and roles.role_allows(role, permission):
        return Decision(True)
    return Decision(False, f"{principal.name} lacks {permission} on {resource or 'the resource'}")
