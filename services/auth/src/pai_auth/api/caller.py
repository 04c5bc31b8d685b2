"""The caller of the current request, as auth's domain sees it, and auth's own authorizer."""

from __future__ import annotations

from pai.api.v1 import annotations_pb2
from pai_auth.app.access import AccessUseCases, Denied
from pai_auth.domain.model import Principal
from pai_common import principal as chassis
from pai_common.errors import PermissionDenied, Unauthenticated


def caller() -> Principal:
    """The authenticated principal of the request being served."""
    p = chassis.principal()
    return Principal(p.name, p.platform_admin, dict(p.roles))


def to_error(denied: Denied) -> Exception:
    if denied.reason in (
        "CREDENTIAL_MISSING",
        "CREDENTIAL_INVALID",
        "PRINCIPAL_DISABLED",
    ):
        return Unauthenticated(denied.reason, denied.message)
    # The caller's own name, so the audit trail records who was denied.
    who = denied.principal.name if denied.principal else ""
    return PermissionDenied("PERMISSION_DENIED", denied.message, principal=who)


class LocalAuthorizer:
    """Auth decides its own calls in-process, with the same rules it serves to others."""

    def __init__(self, access: AccessUseCases) -> None:
        self._access = access

    async def authorize(
        self, credential: str, rule: annotations_pb2.AuthzRule, resource: str
    ) -> chassis.Principal:
        try:
            grant = await self._access.authorize(credential, rule.scope, rule.permission, resource)
        except Denied as denied:
            raise to_error(denied) from denied
        p = grant.principal
        return chassis.Principal(name=p.name, platform_admin=p.platform_admin, roles=dict(p.roles))
