"""Crash tests for the outbox, the relay and the consumer, with real processes, NATS and databases."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import uuid

import nats
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2

from pai_common import db, events
from pai_common.consumer import Consumer, Event
from pai_common.testing import NatsServer

CHILD = pathlib.Path(__file__).with_name("event_child.py")


def run_child(*args: str, event_id: str = "", expect: int = 0) -> None:
    env = dict(os.environ, EVENT_ID=event_id)
    proc = subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True, timeout=60)
    assert proc.returncode == expect, proc.stderr.decode()[-2000:]


async def messages(nats_url: str, subject: str) -> list[nats.aio.msg.Msg]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(events.STREAM)
        out: list[nats.aio.msg.Msg] = []
        if info.state.messages == 0:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                raw = await js.get_msg(events.STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if raw.subject == subject:
                out.append(raw)
        return out
    finally:
        await nc.close()


@pytest.mark.parametrize("crash", ["", "after-publish"])
async def test_event_committed_before_a_crash_reaches_jetstream_exactly_once(
    tmp_path: pathlib.Path, nats_server: NatsServer, crash: str
) -> None:
    event_id = uuid.uuid4().hex
    url = f"sqlite+aiosqlite:///{tmp_path / 'producer.db'}"
    run_child("produce", url, nats_server.url, event_id=event_id)  # commit, then die
    assert await messages(nats_server.url, "pai.test.thing.created") == []
    if crash:
        run_child("relay", url, nats_server.url, crash, expect=3)  # publish, then die before marking
        assert len(await messages(nats_server.url, "pai.test.thing.created")) == 1
    run_child("relay", url, nats_server.url)  # the restart
    run_child("relay", url, nats_server.url)  # and another, for good measure
    got = await messages(nats_server.url, "pai.test.thing.created")
    assert len(got) == 1
    assert got[0].headers is not None and got[0].headers["ce-id"] == event_id
    assert struct_pb2.Struct.FromString(got[0].data).fields["n"].number_value == 1


@pytest.mark.parametrize("crash,expect", [("before-ack", 5), ("in-handler", 4)])
async def test_consumer_that_dies_handles_the_event_once(
    tmp_path: pathlib.Path, nats_server: NatsServer, crash: str, expect: int
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'consumer.db'}"
    event_id = uuid.uuid4().hex
    run_child(
        "produce", f"sqlite+aiosqlite:///{tmp_path / 'producer.db'}", nats_server.url, event_id=event_id
    )
    run_child("relay", f"sqlite+aiosqlite:///{tmp_path / 'producer.db'}", nats_server.url)
    run_child("consume", url, nats_server.url, crash, expect=expect)
    run_child("consume", url, nats_server.url)  # the restart: redelivered after ack_wait
    engine = db.create_engine(url)
    async with engine.connect() as conn:
        effects = (await conn.execute(sa.text("SELECT event_id FROM effects"))).all()
        inbox = (await conn.execute(sa.text("SELECT event_id FROM inbox"))).all()
    await engine.dispose()
    assert [e[0] for e in effects] == [event_id]
    assert [i[0] for i in inbox] == [event_id]


async def test_relay_and_consumer_in_process_on_every_database(
    database: tuple[str, str], nats_server: NatsServer
) -> None:
    url, schema = database
    meta = db.metadata()
    tables = events.event_tables(meta)
    engine = db.create_engine(url, schema)
    await db.ensure_schema(engine, schema)
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    from pai_common.relay import Relay

    relay = Relay(engine, tables.outbox, js, poll_interval=0.1)
    seen: list[str] = []
    got_all = asyncio.Event()

    async def handler(event: Event, conn: sa.ext.asyncio.AsyncConnection) -> None:
        assert event.message is not None and event.type == "google.protobuf.Struct"
        seen.append(event.id)
        if len(seen) == 3:
            got_all.set()

    consumer = Consumer(js, engine, tables.inbox, durable="inproc", subjects=["pai.test.>"], handler=handler)
    await relay.start()
    await consumer.start()
    ids = []
    async with engine.begin() as conn:
        outbox = events.Outbox(conn, tables.outbox)
        for i in range(3):
            e = events.OutboxEvent(
                "pai.test.thing.created",
                struct_pb2.Struct(fields={"i": struct_pb2.Value(number_value=i)}),
                "//t",
            )
            ids.append(e.event_id)
            await outbox.add(e)
    async with engine.begin() as conn:  # a rolled-back transaction publishes nothing
        await events.Outbox(conn, tables.outbox).add(
            events.OutboxEvent("pai.test.thing.created", struct_pb2.Struct(), "//t", event_id="rolled-back")
        )
        await conn.rollback()
    relay.notify()
    await asyncio.wait_for(got_all.wait(), 15)
    await asyncio.sleep(0.3)
    await consumer.stop()
    await relay.stop()
    await nc.close()
    await engine.dispose()
    assert seen == ids  # commit order, each once, nothing rolled back


async def test_failing_handler_is_retried_then_dead_lettered(
    tmp_path: pathlib.Path, nats_server: NatsServer
) -> None:
    meta = db.metadata()
    tables = events.event_tables(meta)
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'dl.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    attempts = 0

    async def handler(event: Event, conn: sa.ext.asyncio.AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("cannot handle this")

    dead = await js.subscribe("pai.deadletter.>", ordered_consumer=True)
    consumer = Consumer(
        js,
        engine,
        tables.inbox,
        durable="fails",
        subjects=["pai.test.>"],
        handler=handler,
        max_deliver=3,
        backoff=(0.1,),
    )
    await consumer.start()
    await js.publish(
        "pai.test.bad.thing", b"", headers={"ce-id": "bad-1", "ce-type": "x.Unknown", "Nats-Msg-Id": "bad-1"}
    )
    msg = await dead.next_msg(timeout=15)
    await consumer.stop()
    await nc.close()
    await engine.dispose()
    assert attempts == 3
    assert msg.subject == "pai.deadletter.fails" and msg.headers is not None
    assert msg.headers["pai-original-subject"] == "pai.test.bad.thing"
    assert "cannot handle this" in msg.headers["pai-error"] and msg.headers["ce-id"] == "bad-1"


async def test_undecodable_event_is_dead_lettered_not_fatal(
    tmp_path: pathlib.Path, nats_server: NatsServer
) -> None:
    meta = db.metadata()
    tables = events.event_tables(meta)
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    handled: list[str] = []

    async def handler(event: Event, conn: sa.ext.asyncio.AsyncConnection) -> None:
        handled.append(event.id)

    dead = await js.subscribe("pai.deadletter.>", ordered_consumer=True)
    consumer = Consumer(js, engine, tables.inbox, durable="robust", subjects=["pai.test.>"], handler=handler)
    await consumer.start()
    await js.publish("pai.test.a.b", b"", headers={"ce-id": "bad-time", "ce-time": "not a time"})
    await js.publish("pai.test.a.b", b"", headers={"ce-id": "fine", "ce-type": "x.Unknown"})
    msg = await dead.next_msg(timeout=10)
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    await nc.close()
    await engine.dispose()
    assert msg.headers is not None and msg.headers["ce-id"] == "bad-time"
    assert "undecodable" in msg.headers["pai-error"]
    assert handled == ["fine"]  # the consumer lived on past the bad message


async def test_prepare_runs_before_the_transaction_and_after_commit_after_it_once_per_event(
    tmp_path: pathlib.Path, nats_server: NatsServer
) -> None:
    meta = db.metadata()
    tables = events.event_tables(meta)
    other = sa.Table("other", meta, sa.Column("id", sa.Integer, primary_key=True))
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'prep.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await events.ensure_stream(js)
    prepared: list[str] = []
    handled: list[tuple[str, object]] = []

    async def prepare(event: Event) -> str:
        prepared.append(event.id)
        # SQLite has one writer: this write would wait for the handler's transaction if prepare ran in it
        async with engine.begin() as conn:
            await conn.execute(sa.insert(other).values(id=len(prepared)))
        return f"facts of {event.id}"

    async def handler(event: Event, conn: sa.ext.asyncio.AsyncConnection) -> None:
        handled.append((event.id, event.prepared))

    commits: list[int] = []
    consumer = Consumer(
        js, engine, tables.inbox, durable="prep", subjects=["pai.test.>"], handler=handler, prepare=prepare,
        after_commit=lambda: commits.append(len(handled)),
    )  # fmt: skip
    await consumer.start()
    await js.publish("pai.test.some.thing", b"", headers={"ce-id": "ev-1", "Nats-Msg-Id": "ev-1"})
    # the same event again (another message, same id): the inbox has it, so neither step runs again
    await js.publish("pai.test.some.thing", b"", headers={"ce-id": "ev-1", "Nats-Msg-Id": "ev-1-again"})
    for _ in range(100):
        if consumer.acked == 2:
            break
        await asyncio.sleep(0.05)
    await consumer.stop()
    await nc.close()
    await engine.dispose()
    assert handled == [("ev-1", "facts of ev-1")]
    assert prepared == ["ev-1"]
    assert consumer.acked == 2
    assert commits == [1]  # after the handler's commit, once: not for the event the inbox knew
