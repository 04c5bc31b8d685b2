"""What every service does around its own parts: settings, logs, traces and exit codes for its
`__main__`; its database, NATS and outbox relay, and auth as its authorizer, for its bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats
import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from pai_common import config, db, events, telemetry
from pai_common.config import Settings
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, stop_event
from pai_common.principal import Authorizer
from pai_common.relay import Relay
from pai_common.remote_auth import RemoteAuthorizer


def configure(service: str) -> Settings:
    """The service's settings, with logging and tracing set up from them."""
    settings = config.load(service)
    telemetry.setup_logging(service, settings.log_level, settings.log_format)
    telemetry.setup_tracing(service, settings.otel_exporter, settings.otel_endpoint)
    return settings


def main(service: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `run()` until it returns; Ctrl-C ends quietly, a failure is logged and exits 1."""
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logging.getLogger(f"pai_{service}").exception("%s failed to start", service)
        print(f"pai {service}: failed: {exc}", file=sys.stderr)
        sys.exit(1)


def serve(
    service: str,
    build: Callable[[Settings], contextlib.AbstractAsyncContextManager[Any]],
    started: Callable[[Any], None] = lambda app: None,
) -> None:
    """`python -m pai_<service>`: build the service from its settings, serve until SIGTERM or Ctrl-C
    (`started` sees the running app first, for what a service prints once)."""

    async def run() -> None:
        async with build(configure(service)) as app:
            started(app)
            print(f"pai {service}: serving on {app.address}", flush=True)
            await stop_event().wait()
            logging.getLogger(f"pai_{service}").info("shutting down")

    main(service, run)


@dataclass
class Running:
    """What every running service has (each extends it with its own parts), for `__main__` and tests."""

    settings: Settings
    server: GrpcServer
    relay: Relay
    nats: NATS

    @property
    def address(self) -> str:
        return self.server.address


@dataclass
class Backbone:
    """What every service stands on: its migrated database, NATS with the `PAI` stream, and the relay
    that moves its outbox there (not started: the service starts it once its own parts are ready)."""

    engine: AsyncEngine
    nats: NATS
    js: JetStreamContext
    relay: Relay


async def backbone(
    stack: contextlib.AsyncExitStack, settings: Settings, migrations: pathlib.Path, outbox: sa.Table
) -> Backbone:
    """Open the service's database (schema created, migrations applied, version table
    `alembic_version_<service>`) and NATS; `stack` closes both."""
    engine = db.create_engine(settings.database_url, settings.database_schema)
    stack.push_async_callback(engine.dispose)
    await db.ensure_schema(engine, settings.database_schema)
    await db.migrate(engine, migrations, f"alembic_version_{settings.service}")
    nc = await nats.connect(settings.nats_url, name=f"pai-{settings.service}", max_reconnect_attempts=-1)
    stack.push_async_callback(nc.close)
    js = nc.jetstream()
    await events.ensure_stream(js)
    return Backbone(engine, nc, js, Relay(engine, outbox, js))


def remote_authorizer(stack: contextlib.AsyncExitStack, settings: Settings) -> Authorizer:
    """Authorization by asking auth (at `settings.auth_endpoint`) about every call; `stack` closes it."""
    auth_channel = channel(settings.auth_endpoint)
    stack.push_async_callback(auth_channel.close)
    return RemoteAuthorizer(auth_channel)
