"""auth and lineage in-process on a real nats-server and a real SQLite file or PostgreSQL schema.

One stack per test module and database (tests keep apart by using workspaces of their own), so the
suite stays quick on a small machine. dlc's events are published the way dlc publishes them: written
to an outbox by `pai_common.events.Outbox` and moved to JetStream by `pai_common.relay.Relay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from pai.lineage.v1 import dataset_pb2_grpc, lineage_pb2_grpc, model_pb2_grpc
from pai_auth.bootstrap import build as build_auth
from pai_common import db
from pai_common.clock import utcnow
from pai_common.consumer import Event, decode
from pai_common.events import Outbox, OutboxEvent, cloudevent_headers, event_tables
from pai_common.grpc_client import channel
from pai_common.relay import Relay
from pai_common.testing import NatsServer, api_key, error_info, postgres_url
from pai_common.testing import service_settings as settings
from pai_lineage.bootstrap import LineageApp
from pai_lineage.bootstrap import build as build_lineage

_counter = itertools.count()


class Client:
    """The three lineage services over one authenticated channel."""

    def __init__(self, address: str, key: str) -> None:
        self.channel = channel(address, key)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        self.models = model_pb2_grpc.ModelRegistryServiceStub(self.channel)
        self.lineage = lineage_pb2_grpc.LineageServiceStub(self.channel)


class DlcOutbox:
    """Publishes facts as dlc does: an outbox row in its own transaction, relayed to JetStream."""

    def __init__(self, path: pathlib.Path, js: Any) -> None:
        metadata = db.metadata()
        self.tables = event_tables(metadata)
        self.metadata = metadata
        self.engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
        self.relay = Relay(self.engine, self.tables.outbox, js)
        self.js = js

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

    async def publish(self, subject: str, message: Message, event_id: str | None = None) -> str:
        event = OutboxEvent(subject, message, "pai.dlc", **({"event_id": event_id} if event_id else {}))
        async with self.engine.begin() as conn:
            await Outbox(conn, self.tables.outbox).add(event)
        await self.relay.publish_pending()
        return event.event_id

    async def redeliver(self, subject: str, message: Message, event_id: str) -> None:
        """The same event again past JetStream's de-duplication (as a redelivery after a lost ack
        looks to the consumer): the chassis' CloudEvents headers without `Nats-Msg-Id`."""
        headers = cloudevent_headers(event_id, "pai.dlc", message.DESCRIPTOR.full_name, utcnow(), {})
        del headers["Nats-Msg-Id"]
        await self.js.publish(subject, message.SerializeToString(), headers=headers)

    async def republish(self, event_id: str) -> None:
        """What the relay does after a crash between publishing and marking the event published."""
        outbox = self.tables.outbox
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(outbox).where(outbox.c.event_id == event_id).values(published_at=None)
            )
        assert await self.relay.publish_pending() == 1


@dataclass
class Watch:
    """Every `pai.lineage.>` event published while a test runs."""

    events: list[Event] = field(default_factory=list)

    async def wait_for(
        self, check: Callable[[Event], bool], timeout: float = 10.0, what: str = "an event"
    ) -> Event:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for e in self.events:
                if check(e):
                    return e
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never saw {what}; saw {[e.subject for e in self.events]}")
            await asyncio.sleep(0.05)


@dataclass
class Stack:
    app: LineageApp
    client: Client
    key: str
    nats: NATS
    dlc: DlcOutbox
    home: pathlib.Path
    database: tuple[str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("lineage")
    schema = ""
    if request.param == "sqlite":
        database = (f"sqlite+aiosqlite:///{tmp / 'unused.db'}", "")
    else:
        url = postgres_url()
        if url is None:
            pytest.skip("PAI_TEST_POSTGRES_URL is not set")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        database = (url, schema)
    server = NatsServer(tmp / "nats")
    server.start()
    key = api_key()
    home = tmp / "home"
    try:
        async with contextlib.AsyncExitStack() as exits:
            auth = await exits.enter_async_context(
                build_auth(settings("auth", home, database, server.url, ""), bootstrap_key=key)
            )
            app = await exits.enter_async_context(
                build_lineage(settings("lineage", home, database, server.url, auth.address))
            )
            client = Client(app.address, key)
            exits.push_async_callback(client.channel.close)
            dlc = DlcOutbox(tmp / "dlc-outbox.db", app.nats.jetstream())
            await dlc.start()
            exits.push_async_callback(dlc.engine.dispose)
            yield Stack(app, client, key, app.nats, dlc, home, database)
    finally:
        server.stop()
        if schema:
            import asyncpg

            conn = await asyncpg.connect(database[0])
            for service in ("auth", "lineage"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{service}" CASCADE')
            await conn.close()


@pytest.fixture
def client(stack: Stack) -> Client:
    return stack.client


@pytest.fixture
def ws() -> str:
    """A workspace of the test's own, `workspaces/t<n>`, so tests sharing a stack never meet."""
    return f"workspaces/t{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest_asyncio.fixture(loop_scope="module")
async def watch(stack: Stack) -> AsyncIterator[Watch]:
    w = Watch()

    async def collect(msg: Msg) -> None:
        w.events.append(decode(msg))

    sub = await stack.nats.subscribe("pai.lineage.>", cb=collect)
    await stack.nats.flush()
    try:
        yield w
    finally:
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def fails(code: grpc.StatusCode, reason: str) -> AsyncIterator[None]:
    """The block must fail with this status code and ErrorInfo reason (domain lineage.pai.dev)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        yield
    error = caught.value
    info = error_info(error)
    assert (error.code(), info.reason) == (code, reason), error.details()
    assert info.domain == "lineage.pai.dev"


async def rows(stack: Stack, query: str) -> list[Any]:
    """Read lineage's own store directly (for what the API does not show, e.g. the inbox)."""
    url, schema = stack.database
    if url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{stack.home / 'lineage'}.db"
    engine = db.create_engine(url, f"{schema}_lineage" if schema else "")
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(sa.text(query)))
    finally:
        await engine.dispose()
