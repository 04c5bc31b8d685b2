"""Events: CloudEvents (binary mode) on NATS JetStream, written through a transactional outbox.

A producer adds an `OutboxEvent` in the same transaction as its state change; the `Relay`
publishes committed events with `Nats-Msg-Id` = event id, so JetStream drops a re-publish
after a crash. Consumers (see `consumer.py`) keep an inbox of handled ids in their own
transaction. Nothing is lost and nothing is handled twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from pai_common import telemetry
from pai_common.clock import utcnow
from pai_common.db import UtcDateTime

STREAM = "PAI"
STREAM_SUBJECTS = ["pai.>"]
DEAD_LETTER_PREFIX = "pai.deadletter"
DUPLICATE_WINDOW_SECONDS = 600.0
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"


@dataclass(frozen=True)
class EventTables:
    """The outbox and inbox tables of one service's store."""

    outbox: sa.Table
    inbox: sa.Table


def event_tables(metadata: sa.MetaData) -> EventTables:
    """Declare the outbox and inbox on a service's metadata (its migrations create them)."""
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=True, index=True),
    )
    inbox = sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", UtcDateTime(), nullable=False),
    )
    return EventTables(outbox=outbox, inbox=inbox)


@dataclass(frozen=True)
class OutboxEvent:
    """One event waiting in the outbox: a protobuf fact bound for `subject`."""

    subject: str
    message: Message
    source: str
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: dt.datetime = field(default_factory=utcnow)

    @property
    def type(self) -> str:
        """The CloudEvents type: the protobuf message's full name."""
        return self.message.DESCRIPTOR.full_name

    def row(self) -> dict[str, object]:
        """The outbox row, with the current trace context captured for the relay."""
        headers: dict[str, str] = {}
        telemetry.inject(headers)
        return {
            "event_id": self.event_id,
            "subject": self.subject,
            "type": self.type,
            "source": self.source,
            "time": self.time,
            "payload": self.message.SerializeToString(),
            "headers": headers,
        }


def cloudevent_headers(
    event_id: str, source: str, type_: str, time: dt.datetime, extra: dict[str, str]
) -> dict[str, str]:
    """CloudEvents binary-mode headers, plus JetStream de-duplication and trace context."""
    return {
        "ce-specversion": SPEC_VERSION,
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": type_,
        "ce-time": time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
        "Nats-Msg-Id": event_id,
        **extra,
    }


class Outbox:
    """Adds events to the outbox inside the caller's transaction."""

    def __init__(
        self,
        connection: AsyncConnection | AsyncSession,
        table: sa.Table,
    ) -> None:
        self._conn = connection
        self._table = table
        self.added = 0

    async def add(self, event: OutboxEvent) -> None:
        """Write `event`; it is published only if the transaction commits."""
        await self._conn.execute(sa.insert(self._table).values(**event.row()))
        self.added += 1

    async def add_rows(self, rows: list[dict[str, object]]) -> None:
        """Write prepared `OutboxEvent.row()`s in one statement (rows taken in each request's own
        context keep its trace; used when one transaction commits many requests' changes)."""
        if rows:
            await self._conn.execute(sa.insert(self._table), rows)
            self.added += len(rows)


async def ensure_stream(js: object) -> None:
    """Create or update the `PAI` stream: file storage, every `pai.>` subject, a long de-dup window."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.client import JetStreamContext
    from nats.js.errors import NotFoundError

    assert isinstance(js, JetStreamContext)
    config = StreamConfig(
        name=STREAM,
        subjects=STREAM_SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)
