"""A real process that writes, relays or consumes events, and can die at a chosen point.

Used by test_events.py: `python event_child.py ROLE DB_URL NATS_URL [CRASH_POINT]`.
ROLE is `produce`, `relay` or `consume`; CRASH_POINT makes the process `os._exit` exactly
there (`after-publish` for the relay, `before-ack` or `in-handler` for the consumer).
"""

from __future__ import annotations

import asyncio
import os
import sys

import nats
import sqlalchemy as sa
from google.protobuf import struct_pb2

from pai_common import db, events
from pai_common.consumer import Consumer, Event
from pai_common.relay import Relay

META = db.metadata()
TABLES = events.event_tables(META)
EFFECTS = sa.Table(
    "effects", META, sa.Column("event_id", sa.String(64), primary_key=False), sa.Column("note", sa.String(64))
)


async def main(role: str, url: str, nats_url: str, crash: str) -> None:
    engine = db.create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(META.create_all)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await events.ensure_stream(js)

    if role == "produce":
        async with engine.begin() as conn:
            outbox = events.Outbox(conn, TABLES.outbox)
            await outbox.add(
                events.OutboxEvent(
                    subject="pai.test.thing.created",
                    message=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=1)}),
                    source="//test",
                    event_id=os.environ["EVENT_ID"],
                )
            )
        os._exit(0)  # committed, never published: the crash between commit and publish

    if role == "relay":
        if crash == "after-publish":
            real = js.publish

            async def publish_then_die(*args: object, **kwargs: object) -> object:
                await real(*args, **kwargs)  # type: ignore[arg-type]
                os._exit(3)  # JetStream has it; the outbox row is not marked published

            js.publish = publish_then_die  # type: ignore[method-assign]
        relay = Relay(engine, TABLES.outbox, js)
        while await relay.publish_pending():
            pass
        await nc.close()
        await engine.dispose()
        return

    if role == "consume":
        done = asyncio.Event()

        async def handler(event: Event, conn: sa.ext.asyncio.AsyncConnection) -> None:
            await conn.execute(sa.insert(EFFECTS).values(event_id=event.id, note=event.type))
            if crash == "in-handler":
                os._exit(4)  # dies before commit: nothing of this attempt is kept
            done.set()

        consumer = Consumer(
            js,
            engine,
            TABLES.inbox,
            durable="test-consumer",
            subjects=["pai.test.>"],
            handler=handler,
            ack_wait=2.0,
        )
        if crash == "before-ack":
            real_process = consumer.process

            async def process_then_die(msg: object) -> None:
                msg.ack = _die  # type: ignore[attr-defined]
                await real_process(msg)  # type: ignore[arg-type]

            consumer.process = process_then_die  # type: ignore[method-assign]
        await consumer.start()
        for _ in range(300):  # a redelivery found in the inbox is acked without the handler
            if consumer.acked or done.is_set():
                break
            await asyncio.sleep(0.05)
        await consumer.stop()
        await nc.close()
        await engine.dispose()


async def _die() -> None:
    os._exit(5)  # committed, not acked


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else ""))
