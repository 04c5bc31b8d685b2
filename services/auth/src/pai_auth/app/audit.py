"""The audit trail: written after every mutating call, read by workspace admins."""

from __future__ import annotations

import uuid
from typing import Any

from pai_auth.db.uow import UnitOfWorkFactory
from pai_auth.domain.model import AuditEntry
from pai_common.clock import utcnow
from pai_common.names import workspace_of


def audit_resource(request: Any) -> str:
    """The resource a platform-level call acted on, when its rule names none (e.g. CreateUser)."""
    for field, template in (("name", "{}"), ("user_id", "users/{}"), ("workspace_id", "workspaces/{}")):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return template.format(value)
    return ""


class AuditUseCases:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def record(
        self,
        *,
        principal: str,
        method: str,
        permission: str,
        resource: str,
        result: str,
        reason: str,
        request_id: str,
    ) -> None:
        workspace = workspace_of(resource)
        entry = AuditEntry(
            id=uuid.uuid4().hex,
            workspace=workspace.split("/")[1] if workspace else "-",
            principal=principal,
            method=method,
            permission=permission,
            resource=resource,
            result=result,
            reason=reason,
            request_id=request_id,
            create_time=utcnow(),
        )
        async with self._uow() as uow:
            await uow.repo.add_audit(entry)
            await uow.commit()

    async def list(
        self, parent: str, principal: str, before: int | None, limit: int
    ) -> list[tuple[int, AuditEntry]]:
        workspace = parent.split("/")[1]
        async with self._uow() as uow:
            return await uow.repo.list_audit(
                None if workspace == "-" else workspace, principal, before, limit
            )
