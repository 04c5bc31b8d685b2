"""The composition root: the only place that builds dlc's parts and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pai_common import service
from pai_common.config import Settings
from pai_common.consumer import Consumer
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.principal import Authorizer
from pai_dlc.adapters.lineage import GrpcDatasets
from pai_dlc.adapters.scheduler import GrpcScheduler
from pai_dlc.api.jobs import JobServicer
from pai_dlc.api.sweeps import SweepServicer
from pai_dlc.app.common import Locks, Options
from pai_dlc.app.events import OutputModels, SchedulerFacts
from pai_dlc.app.gangs import Finisher, Gangs
from pai_dlc.app.jobs import JobUseCases
from pai_dlc.app.ports import Runner
from pai_dlc.app.reconciler import Reconciler
from pai_dlc.app.steps import Steps
from pai_dlc.app.sweep_steps import SweepRunner
from pai_dlc.app.sweeps import SweepUseCases
from pai_dlc.consumers.handlers import LINEAGE_SUBJECTS, SCHEDULER_SUBJECTS, LineageHandler, SchedulerHandler
from pai_dlc.db.rows import EVENTS, MIGRATIONS
from pai_dlc.db.uow import Joined, UnitOfWorkFactory
from pai_dlc.domain.spec import Engine
from pai_dlc.engine import engines
from pai_runtime.local import LocalBackend

log = logging.getLogger(__name__)
DOMAIN = "dlc.pai.dev"  # the ErrorInfo domain of dlc's errors (its errors.proto)


@dataclass
class DlcApp(service.Running):
    """The running service, for `__main__` and the tests."""

    uows: UnitOfWorkFactory
    jobs: JobUseCases
    sweeps: SweepUseCases
    reconciler: Reconciler
    consumer: Consumer
    lineage_consumer: Consumer


def storage_root(settings: Settings) -> pathlib.Path:
    """Where checkpoints, outputs and replica logs live: `PAI_DLC_STORAGE_ROOT`, else `<home>/dlc/storage`."""
    root = pathlib.Path(str(settings.get("storage_root") or settings.data_dir / "storage")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def options_of(settings: Settings) -> Options:
    return Options(
        storage_root=storage_root(settings),
        poll_interval=float(settings.get("poll_interval", 0.25)),
        kill_grace=float(settings.get("kill_grace", 10.0)),
        preemption_grace=float(settings.get("preemption_grace", 10.0)),
    )


def runners(settings: Settings, options: Options) -> dict[Engine, Runner]:
    """LOCAL always; RAY when `PAI_DLC_RAY_ADDRESS` is set; KUBERNETES when `PAI_DLC_KUBERNETES_NAMESPACE` is."""
    out = {Engine.LOCAL: Runner(LocalBackend())}
    ray_address = str(settings.get("ray_address") or "")
    if ray_address:
        out[Engine.RAY] = engines.ray(ray_address)
    namespace = str(settings.get("kubernetes_namespace") or "")
    if namespace:
        out[Engine.KUBERNETES] = engines.kubernetes(
            namespace=namespace,
            default_image=str(settings.get("kubernetes_image") or ""),
            storage_pvc=str(settings.get("kubernetes_storage_pvc") or ""),
            storage_root=str(options.storage_root),
            gpu_model_label=str(settings.get("kubernetes_gpu_model_label") or ""),
        )
    return out


@dataclass
class _Core:
    jobs: JobUseCases
    sweeps: SweepUseCases
    reconciler: Reconciler
    runner: SweepRunner
    facts: SchedulerFacts


def _core(settings: Settings, uows: UnitOfWorkFactory, stack: contextlib.AsyncExitStack) -> _Core:
    """The use cases, the reconciler and the sweep runner, on dlc's clients of the scheduler and lineage."""
    credential = str(settings.get("api_key") or "")
    if not credential:
        log.warning("PAI_DLC_API_KEY is not set: the scheduler will refuse dlc's workloads")
    options = options_of(settings)
    scheduler_channel = channel(settings.endpoint_of("scheduler"), credential)
    stack.push_async_callback(scheduler_channel.close)
    lineage_at = settings.endpoint_of("lineage")
    lineage_channel = channel(lineage_at, credential)
    stack.push_async_callback(lineage_channel.close)
    scheduler = GrpcScheduler(scheduler_channel, options.preemption_grace)
    gangs, finisher, locks = Gangs(runners(settings, options), options), Finisher(scheduler, uows), Locks()
    steps = Steps(uows, scheduler, gangs, finisher, options)
    reconciler = Reconciler(uows, steps, finisher, locks, options)
    jobs = JobUseCases(
        uows, gangs, finisher, options, locks, reconciler.kick, GrpcDatasets(lineage_channel, lineage_at)
    )
    wakeup = asyncio.Event()
    sweeps = SweepUseCases(uows, jobs, Locks(), wakeup.set)
    runner = SweepRunner(sweeps, jobs, max(0.5, options.poll_interval * 2), wakeup)
    return _Core(jobs, sweeps, reconciler, runner, SchedulerFacts(reconciler.kick))


@contextlib.asynccontextmanager
async def build(settings: Settings, *, authorizer: Authorizer | None = None) -> AsyncIterator[DlcApp]:
    """Start dlc: migrate, serve, consume the scheduler's decisions, drive the jobs; stop on exit.

    Replicas are not stopped with dlc: they run on, and a restarted dlc watches them again.
    """
    async with contextlib.AsyncExitStack() as stack:
        base = await service.backbone(stack, settings, MIGRATIONS, EVENTS.outbox)
        uows = UnitOfWorkFactory(base.engine, on_commit=base.relay.notify)
        core = _core(settings, uows, stack)
        consumer = Consumer(
            base.js, base.engine, EVENTS.inbox, durable=str(settings.get("consumer", "dlc")),
            subjects=SCHEDULER_SUBJECTS, handler=SchedulerHandler(core.facts, Joined),
        )  # fmt: skip
        lineage_consumer = Consumer(
            base.js, base.engine, EVENTS.inbox, durable=str(settings.get("lineage_consumer", "dlc-lineage")),
            subjects=LINEAGE_SUBJECTS, handler=LineageHandler(OutputModels(), Joined),
            after_commit=base.relay.notify,  # the job.updated it writes goes out at once
        )  # fmt: skip
        server = GrpcServer(
            settings.listen,
            [
                Servicer.of(JobServicer(core.jobs)),
                Servicer.of(SweepServicer(core.sweeps)),
            ],
            domain=DOMAIN,
            authorizer=authorizer or service.remote_authorizer(stack, settings),
        )
        for part in (base.relay, consumer, lineage_consumer, core.reconciler, core.runner, server):
            await part.start()
            stack.push_async_callback(part.stop)
        yield DlcApp(
            settings,
            server,
            base.relay,
            base.nats,
            uows,
            core.jobs,
            core.sweeps,
            core.reconciler,
            consumer,
            lineage_consumer,
        )
