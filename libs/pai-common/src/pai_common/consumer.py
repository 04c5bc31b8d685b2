"""Durable JetStream pull consumers with an inbox: each event is handled once, after commit.

The handler runs inside a unit of work together with the inbox insert of the event id; the
message is acked only after that commit. A redelivered event whose id is in the inbox is
acked without running the handler again. A failing handler is nak'ed with backoff, and after
`max_deliver` attempts the event goes to `pai.deadletter.<consumer>` with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pai_common import telemetry
from pai_common.clock import utcnow
from pai_common.events import DEAD_LETTER_PREFIX
from pai_common.logs import Streak

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("pai_common.consumer")


@dataclass(frozen=True)
class Event:
    """A received event: CloudEvents attributes and the decoded protobuf payload."""

    id: str
    type: str
    source: str
    subject: str
    time: dt.datetime | None
    message: Message | None
    data: bytes
    # what the consumer's `prepare` computed before the handler's transaction (None without one)
    prepared: Any = None


Handler = Callable[[Event, AsyncConnection], Awaitable[None]]
# Slow work for an event that must not hold the handler's transaction (on SQLite, the write lock):
# reading files, hashing. Runs before the transaction; its result reaches the handler as `prepared`.
Prepare = Callable[[Event], Awaitable[Any]]


def decode(msg: Msg) -> Event:
    """Decode a CloudEvents binary-mode message; an unknown type keeps only the raw bytes."""
    headers = msg.headers or {}
    type_ = headers.get("ce-type", "")
    message: Message | None = None
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_)
    except KeyError:
        descriptor = None
    if descriptor is not None:
        message = message_factory.GetMessageClass(descriptor).FromString(msg.data)
    raw_time = headers.get("ce-time")
    return Event(
        id=headers.get("ce-id", ""),
        type=type_,
        source=headers.get("ce-source", ""),
        subject=msg.subject,
        time=dt.datetime.fromisoformat(raw_time.replace("Z", "+00:00")) if raw_time else None,
        message=message,
        data=msg.data,
    )


class Consumer:
    """One durable pull consumer feeding a handler, with inbox de-duplication."""

    def __init__(
        self,
        js: JetStreamContext,
        engine: AsyncEngine,
        inbox: sa.Table,
        *,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        prepare: Prepare | None = None,
        after_commit: Callable[[], None] = lambda: None,
        stream: str = "PAI",
        max_deliver: int = 5,
        backoff: Sequence[float] = (0.5, 2.0, 5.0, 15.0),
        ack_wait: float = 30.0,
        batch: int = 32,
    ) -> None:
        self._js = js
        self._engine = engine
        self._inbox = inbox
        self.durable = durable
        self._subjects = list(subjects)
        self._handler = handler
        self._prepare = prepare
        # e.g. the outbox relay's notify: what a handler published goes out now, not at the next poll
        self._after_commit = after_commit
        self._stream = stream
        self._max_deliver = max_deliver
        self._backoff = list(backoff)
        self._ack_wait = ack_wait
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.handled = 0  # events whose handler ran and committed
        self.acked = 0  # messages acked, including redeliveries found in the inbox

    async def start(self) -> None:
        """Subscribe (creating the durable consumer if needed) and consume in the background."""
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,  # our own dead-letter logic decides when to stop
            ack_wait=self._ack_wait,
            filter_subjects=self._subjects,
        )
        if not await self._exists():
            await self._js.add_consumer(self._stream, config)
        sub = await self._js.pull_subscribe_bind(durable=self.durable, stream=self._stream)
        self._task = asyncio.create_task(self._run(sub), name=f"consumer-{self.durable}")

    async def _exists(self) -> bool:
        from nats.js.errors import NotFoundError

        try:
            await self._js.consumer_info(self._stream, self.durable)
        except NotFoundError:
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching after the current message; un-acked messages are redelivered later.

        Asked, not cancelled: a cancel inside an aiosqlite call can hang its worker thread.
        """
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _run(self, sub: object) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        failing = Streak(log, f"consumer {self.durable}: fetching")
        while not self._stopping:
            try:
                msgs: list[Msg] = await sub.fetch(self._batch, timeout=0.5)  # type: ignore[attr-defined]
            except (NatsTimeout, TimeoutError):  # nothing to fetch: the normal state of an idle stack
                if self._connected():  # a timeout while cut off from NATS is no sign of health
                    failing.ended()
                continue
            except Exception as error:
                failing.failed(error)
                await asyncio.sleep(1.0)
                continue
            failing.ended()
            for msg in msgs:
                if self._stopping:
                    break  # not acked: redelivered after ack_wait
                try:
                    await self.process(msg)
                except Exception:  # e.g. the ack was lost with the connection: redelivered later
                    log.exception("consumer %s could not finish a message", self.durable)

    def _connected(self) -> bool:
        nc = getattr(self._js, "_nc", None)  # the JetStream context's connection (nats-py has no public way)
        return bool(getattr(nc, "is_connected", True))

    async def process(self, msg: Msg) -> None:
        """Handle one message: inbox check, handler and inbox insert in one transaction, then ack."""
        try:
            event = decode(msg)
        except Exception as error:
            await self._dead_letter(msg, f"undecodable event: {error}")
            return
        headers = msg.headers or {}
        token = otel_context.attach(telemetry.extract(headers))  # type: ignore[arg-type]
        try:
            with _tracer.start_as_current_span(f"consume {event.subject}", kind=trace.SpanKind.CONSUMER):
                try:
                    if self._prepare is not None and not await self._seen(event):
                        event = dataclasses.replace(event, prepared=await self._prepare(event))
                    handled = await self._handle_once(event)
                except Exception as error:
                    await self._failed(msg, event, error)
                    return
                await msg.ack()
                self.acked += 1
                if handled:
                    self.handled += 1
        finally:
            otel_context.detach(token)

    async def _in_inbox(self, conn: AsyncConnection, event: Event) -> bool:
        inbox = self._inbox
        seen = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(inbox)
            .where(inbox.c.consumer == self.durable, inbox.c.event_id == event.id)
        )
        return bool(seen)

    async def _seen(self, event: Event) -> bool:
        """Whether the inbox has the event already (a hint: the handler's transaction checks again)."""
        async with self._engine.connect() as conn:
            return await self._in_inbox(conn, event)

    async def _handle_once(self, event: Event) -> bool:
        async with self._engine.begin() as conn:
            if await self._in_inbox(conn, event):
                return False
            await self._handler(event, conn)
            await conn.execute(
                sa.insert(self._inbox).values(consumer=self.durable, event_id=event.id, handled_at=utcnow())
            )
        self._after_commit()
        return True

    async def _failed(self, msg: Msg, event: Event, error: Exception) -> None:
        attempt = msg.metadata.num_delivered
        if attempt >= self._max_deliver:
            log.error(
                "event %s (%s) failed %d times, dead-lettered: %s", event.id, event.type, attempt, error
            )
            await self._dead_letter(msg, f"{type(error).__name__}: {error}")
            return
        delay = self._backoff[min(attempt - 1, len(self._backoff) - 1)]
        log.warning(
            "event %s failed (attempt %d), retry in %.1fs: %s",
            event.id,
            attempt,
            delay,
            error,
        )
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        """Publish the message to `pai.deadletter.<consumer>` with the reason, and stop its redelivery."""
        headers = dict(msg.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers["pai-error"] = reason[:1000]
        headers["pai-original-subject"] = msg.subject
        headers["pai-consumer"] = self.durable
        await self._js.publish(f"{DEAD_LETTER_PREFIX}.{self.durable}", msg.data, headers=headers)
        await msg.term()
