"""What every use case shares: the transaction around a store, idempotency keys, and timestamps."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from pai_common.db import conflict
from pai_common.errors import (
    Aborted,
    AlreadyExists,
)
from pai_lineage.db.store import Store


class Db:
    """Transactions on lineage's store; the outbox relay is woken after a commit that wrote events."""

    def __init__(self, engine: AsyncEngine, notify: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.notify = notify

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Store]:
        """One transaction: the changes and their events commit together or not at all."""
        try:
            async with self.engine.begin() as conn:
                store = Store(conn)
                yield store
        except Exception as exc:
            if conflict(exc):
                raise Aborted(
                    "CONCURRENT_MODIFICATION", "a concurrent request changed the same data; retry"
                ) from exc
            raise
        if store.outbox.added:
            self.notify()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Store]:
        async with self.engine.connect() as conn:
            yield Store(conn)


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
