"""Idempotency keys: what a request with a `request_id` made before, kept in its transaction."""

from __future__ import annotations

import re

from pai_common.errors import AlreadyExists
from pai_lineage.db.store import Store


async def earlier_result(store: Store, request_id: str, method: str, target: str) -> str | None:
    """The resource name a request with this id made before, or None for a new request; the same id
    for a different request is REQUEST_ID_REUSED. Ids are kept per workspace (`target` starts with
    `workspaces/{w}`)."""
    if not request_id:
        return None
    earlier = await store.earlier_request(_workspace(target), request_id)
    if earlier is None:
        return None
    if earlier.method != method or earlier.target != target:
        raise AlreadyExists(
            "REQUEST_ID_REUSED",
            f"request_id {request_id!r} was used for another request ({earlier.method} {earlier.target})",
            request_id=request_id,
        )
    return str(earlier.result.get("name", ""))


async def remember(store: Store, request_id: str, method: str, target: str, name: str) -> None:
    if request_id:
        await store.remember_request(_workspace(target), request_id, method, target, {"name": name})


def _workspace(target: str) -> str:
    """The workspace a request's target is in (`workspaces/{w}/...` or `workspaces/{w}:...`)."""
    match = re.match(r"^workspaces/([a-z0-9-]+)", target)
    if match is None:
        raise ValueError(f"a request target names no workspace: {target!r}")
    return match.group(1)
