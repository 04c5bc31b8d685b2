"""The composition root: the only place that builds lineage's parts and wires them together."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from pai_common import service
from pai_common.config import Settings
from pai_common.consumer import Consumer
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.principal import Authorizer
from pai_lineage.api.servicers import DatasetServicer, LineageServicer, ModelRegistryServicer
from pai_lineage.app.artifacts import Files
from pai_lineage.app.datasets import Datasets
from pai_lineage.app.handlers import SUBJECTS, JobEvents
from pai_lineage.app.lineage import Lineage
from pai_lineage.app.models import Models
from pai_lineage.db.rows import EVENTS, MIGRATIONS
from pai_lineage.db.uow import UnitOfWorkFactory

DOMAIN = "lineage.pai.dev"


@dataclass
class LineageApp(service.Running):
    """The running service, for `__main__` and the tests."""

    engine: AsyncEngine
    consumer: Consumer


def files(settings: Settings) -> Files:
    """`PAI_LINEAGE_FILE_ROOTS` (paths joined by `:`): the only directories whose files lineage reads."""
    roots = [r for r in str(settings.get("file_roots") or "").split(os.pathsep) if r.strip()]
    return Files(tuple(pathlib.Path(r).expanduser().resolve() for r in roots))


@contextlib.asynccontextmanager
async def build(settings: Settings, *, authorizer: Authorizer | None = None) -> AsyncIterator[LineageApp]:
    """Start lineage: migrate, serve, follow dlc's job events; stop everything on exit."""
    async with contextlib.AsyncExitStack() as stack:
        base = await service.backbone(stack, settings, MIGRATIONS, EVENTS.outbox)
        uow = UnitOfWorkFactory(base.engine, base.relay.notify)
        datasets = Datasets(uow, files(settings))
        models = Models(uow, datasets)
        lineage = Lineage(uow, datasets)
        job_events = JobEvents(datasets, models)
        consumer = Consumer(
            base.js,
            base.engine,
            EVENTS.inbox,
            durable=str(settings.get("consumer", "lineage")),
            subjects=SUBJECTS,
            handler=job_events.handle,
            prepare=job_events.prepare,
            after_commit=base.relay.notify,
        )
        if authorizer is None:
            authorizer = service.remote_authorizer(stack, settings)
        server = GrpcServer(
            settings.listen,
            [
                Servicer.of(DatasetServicer(datasets)),
                Servicer.of(ModelRegistryServicer(models)),
                Servicer.of(LineageServicer(lineage)),
            ],
            domain=DOMAIN,
            authorizer=authorizer,
        )
        await base.relay.start()
        stack.push_async_callback(base.relay.stop)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        await server.start()
        stack.push_async_callback(server.stop)
        yield LineageApp(settings, server, base.relay, base.nats, base.engine, consumer)
