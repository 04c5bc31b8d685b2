"""The composition root: the only place that builds the scheduler's parts and wires them together."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pai_common import service
from pai_common.config import Settings
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.principal import Authorizer
from pai_scheduler.api.nodes import NodeServicer
from pai_scheduler.api.quotas import QuotaServicer
from pai_scheduler.api.resource_groups import ResourceGroupServicer
from pai_scheduler.api.stats import StatsServicer
from pai_scheduler.api.workloads import WorkloadServicer
from pai_scheduler.app.engine import Scheduler
from pai_scheduler.app.groups import ResourceGroups
from pai_scheduler.app.local import give_default_quota, register_local_machine
from pai_scheduler.app.nodes import Nodes
from pai_scheduler.app.quotas import Quotas
from pai_scheduler.app.stats import Stats
from pai_scheduler.app.workloads import Workloads
from pai_scheduler.db.rows import EVENTS
from pai_scheduler.db.store import UnitOfWorkFactory

DOMAIN = "scheduler.pai.dev"  # the ErrorInfo domain of the scheduler's errors (its errors.proto)
log = logging.getLogger(__name__)
MIGRATIONS = pathlib.Path(__file__).parent / "db" / "migrations"


@dataclass
class SchedulerApp(service.Running):
    """The running service, for `__main__` and the tests."""

    scheduler: Scheduler


@contextlib.asynccontextmanager
async def build(settings: Settings, *, authorizer: Authorizer | None = None) -> AsyncIterator[SchedulerApp]:
    """Start the scheduler: migrate, load the state, serve, decide; stop everything on exit."""
    async with contextlib.AsyncExitStack() as stack:
        base = await service.backbone(stack, settings, MIGRATIONS, EVENTS.outbox)
        engine, nc, relay = base.engine, base.nats, base.relay
        uow = UnitOfWorkFactory(engine, relay.notify)
        scheduler = Scheduler(uow)
        await scheduler.load()
        local = str(settings.get("local_node", "true")).lower() in ("1", "true", "yes")
        if local:
            group = str(settings.get("local_group", "local"))
            # `make up`: on the first start, the default workspace may use the whole machine
            await register_local_machine(scheduler, group, str(settings.get("default_quota_workspace") or ""))
            await give_default_quota(scheduler, group)

        workloads = Workloads(scheduler)  # it holds the creates waiting for their group commit
        if authorizer is None:
            authorizer = service.remote_authorizer(stack, settings)
        server = GrpcServer(
            settings.listen,
            [
                Servicer.of(ResourceGroupServicer(ResourceGroups(scheduler))),
                Servicer.of(NodeServicer(Nodes(scheduler))),
                Servicer.of(QuotaServicer(Quotas(scheduler))),
                Servicer.of(WorkloadServicer(workloads)),
                Servicer.of(StatsServicer(Stats(scheduler))),
            ],
            domain=DOMAIN,
            authorizer=authorizer,
        )
        await relay.start()
        stack.push_async_callback(relay.stop)
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)
        stack.push_async_callback(workloads.drain)  # creates already accepted are written, not dropped
        await server.start()
        stack.push_async_callback(server.stop)
        yield SchedulerApp(settings, server, relay, nc, scheduler)
