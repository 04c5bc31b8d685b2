"""The role → permission map: the one place that says who may do what in a workspace.

Permissions are `<service>.<collection>.<verb>` strings declared on each RPC in the protos.
Patterns use shell wildcards. Each role holds every permission of the roles below it.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import cache

ROLES = ("VIEWER", "DEVELOPER", "ADMIN", "OWNER")  # weakest first

_WORKLOAD_SERVICES = ("dlc", "eas", "dsw", "lineage")
_READ = ("get", "list", "read*")

GRANTS: dict[str, tuple[str, ...]] = {
    # Reads everything in the workspace, changes nothing.
    "VIEWER": (
        "auth.workspaces.get",
        "auth.members.get",
        "auth.members.list",
        *(f"{svc}.*.{verb}" for svc in (*_WORKLOAD_SERVICES, "scheduler") for verb in _READ),
    ),
    # Creates and runs jobs, services, notebooks and datasets; sees the service accounts.
    "DEVELOPER": (
        *(f"{svc}.*.*" for svc in _WORKLOAD_SERVICES),
        "scheduler.workloads.*",
        "auth.serviceAccounts.get",
        "auth.serviceAccounts.list",
    ),
    # Runs the workspace: members, service accounts and their keys, quotas, the audit trail.
    "ADMIN": (
        "auth.workspaces.update",
        "auth.members.*",
        "auth.serviceAccounts.*",
        "auth.apiKeys.*",
        "auth.auditEntries.list",
        "scheduler.*.*",
    ),
    # Everything, including deleting the workspace and granting OWNER.
    "OWNER": ("*.*.*",),
}

# What any user may do to resources under their own `users/{user}`.
SELF: tuple[str, ...] = ("auth.users.get", "auth.users.update", "auth.apiKeys.*")


@cache
def patterns(role: str) -> tuple[str, ...]:
    """Every permission pattern a role holds, its own and those of the weaker roles."""
    if role not in ROLES:
        return ()
    held: list[str] = []
    for r in ROLES[: ROLES.index(role) + 1]:
        held.extend(GRANTS[r])
    return tuple(held)


def role_allows(role: str, permission: str) -> bool:
    """Whether `role` holds `permission`."""
    return any(fnmatchcase(permission, p) for p in patterns(role))


def self_allows(permission: str) -> bool:
    """Whether a user may use `permission` on their own resources."""
    return any(fnmatchcase(permission, p) for p in SELF)


def at_least(role: str, minimum: str) -> bool:
    """Whether `role` is `minimum` or stronger."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(minimum)
