"""The outbox relay: publishes committed events to JetStream, in commit order, exactly once.

Each event is published with `Nats-Msg-Id` = its id and marked published only after JetStream
acknowledged it. A crash between the two re-publishes on restart, and JetStream drops the
duplicate within its de-duplication window, so a stream sees every event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from nats.js.client import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from pai_common.clock import utcnow
from pai_common.events import cloudevent_headers
from pai_common.logs import Streak

log = logging.getLogger(__name__)


class Relay:
    """Moves outbox rows to JetStream; woken by commits, and polling as a fallback."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: sa.Table,
        js: JetStreamContext,
        *,
        batch: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._js = js
        self._batch = batch
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0

    def notify(self) -> None:
        """Tell the relay that a transaction with events committed."""
        self._wake.set()

    async def start(self) -> None:
        """Run in the background until `stop`."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current publish; unpublished events stay in the outbox.

        The loop is asked to stop rather than cancelled: cancelling a task in the middle of
        an aiosqlite call can leave the connection's worker thread waiting forever.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _run(self) -> None:
        failing = Streak(log, "outbox relay: publishing")
        while not self._stopping:
            try:
                while not self._stopping and await self.publish_pending():
                    pass
                failing.ended()
            except Exception as error:
                failing.failed(error)
            self._wake.clear()
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished events; returns how many were published."""
        table = self._outbox
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(table)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.seq)
                    .limit(self._batch)
                )
            ).all()
        # Published rows are marked in one transaction per batch (not one per row, which made the
        # relay fight the service for the database); a crash before the mark republishes the batch
        # and JetStream drops the duplicates by Nats-Msg-Id.
        done: list[int] = []
        try:
            for row in rows:
                if self._stopping:
                    break
                headers = cloudevent_headers(row.event_id, row.source, row.type, row.time, dict(row.headers))
                await self._js.publish(row.subject, row.payload, headers=headers)
                done.append(row.seq)
        finally:
            if done:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        sa.update(table).where(table.c.seq.in_(done)).values(published_at=utcnow())
                    )
                self.published += len(done)
        return len(rows)
