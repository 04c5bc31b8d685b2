"""The composition root: the only place that builds dlc's parts and wires them together."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from pai.dlc.v1 import job_pb2_grpc, sweep_pb2_grpc
from pai_common import service
from pai_common.config import Settings
from pai_common.consumer import Consumer
from pai_common.grpc_client import channel
from pai_common.grpc_server import GrpcServer, Servicer
from pai_common.principal import Authorizer
from pai_common.relay import Relay
from pai_dlc.api.servicers import JobServicer, SweepServicer
from pai_dlc.app.controller import LINEAGE_SUBJECTS, SCHEDULER_SUBJECTS, Controller, Options
from pai_dlc.app.lineage_client import LineageClient
from pai_dlc.app.scheduler_client import SchedulerClient
from pai_dlc.app.sweeps import SweepController
from pai_dlc.db.rows import EVENTS, MIGRATIONS
from pai_dlc.engine.base import AttemptLaunch, BackendEngine, Engine, LocalEngine
from pai_dlc.model.spec import JobSpec

log = logging.getLogger(__name__)
SOURCE = "pai.dlc"
DOMAIN = "dlc.pai.dev"  # the ErrorInfo domain of dlc's errors (its errors.proto)


@dataclass
class DlcApp:
    """The running service, for `__main__` and the tests."""

    settings: Settings
    server: GrpcServer
    relay: Relay
    nats: NATS
    controller: Controller
    consumer: Consumer
    lineage_consumer: Consumer
    sweeps: SweepController

    @property
    def address(self) -> str:
        return self.server.address


def storage_root(settings: Settings) -> pathlib.Path:
    """Where checkpoints, outputs and replica logs live: `PAI_DLC_STORAGE_ROOT`, else `<home>/dlc/storage`."""
    root = pathlib.Path(str(settings.get("storage_root") or settings.data_dir / "storage")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def optional_engines(settings: Settings, controller: Controller) -> dict[int, Engine]:
    """RAY when `PAI_DLC_RAY_ADDRESS` is set; KUBERNETES when `PAI_DLC_KUBERNETES_NAMESPACE` is."""
    out: dict[int, Engine] = {}
    ray_address = str(settings.get("ray_address") or "")
    if ray_address:
        from pai_dlc.engine.rendezvous import rendezvous
        from pai_runtime.ray import RayBackend

        out[JobSpec.RAY] = BackendEngine(RayBackend(ray_address, namespace="pai-dlc", rendezvous=rendezvous))
    namespace = str(settings.get("kubernetes_namespace") or "")
    if namespace:
        from pai_dlc.engine.kubernetes import KubernetesEngine

        async def spec_of(attempt: AttemptLaunch) -> JobSpec:
            return (await controller.get(attempt.job)).job.spec

        out[JobSpec.KUBERNETES] = KubernetesEngine(
            specs=spec_of,
            namespace=namespace,
            default_image=str(settings.get("kubernetes_image") or ""),
            storage_pvc=str(settings.get("kubernetes_storage_pvc") or ""),
            storage_root=str(controller.options.storage_root),
            gpu_model_label=str(settings.get("kubernetes_gpu_model_label") or ""),
        )
    return out


@contextlib.asynccontextmanager
async def build(settings: Settings, *, authorizer: Authorizer | None = None) -> AsyncIterator[DlcApp]:
    """Start dlc: migrate, serve, consume the scheduler's decisions, drive the jobs; stop on exit.

    Replicas are not stopped with dlc: they run on, and a restarted dlc watches them again.
    """
    async with contextlib.AsyncExitStack() as stack:
        base = await service.backbone(stack, settings, MIGRATIONS, EVENTS.outbox)
        engine, nc, js, relay = base.engine, base.nats, base.js, base.relay

        credential = str(settings.get("api_key") or "")
        if not credential:
            log.warning("PAI_DLC_API_KEY is not set: the scheduler will refuse dlc's workloads")
        sched_channel = channel(settings.endpoint_of("scheduler"), credential)
        stack.push_async_callback(sched_channel.close)
        lineage_at = settings.endpoint_of("lineage")
        lineage_channel = channel(lineage_at, credential)
        stack.push_async_callback(lineage_channel.close)
        options = Options(
            storage_root=storage_root(settings),
            poll_interval=float(settings.get("poll_interval", 0.25)),
            kill_grace=float(settings.get("kill_grace", 10.0)),
            preemption_grace=float(settings.get("preemption_grace", 10.0)),
        )
        engines: dict[int, Engine] = {JobSpec.LOCAL: LocalEngine()}
        controller = Controller(
            engine,
            SchedulerClient(sched_channel),
            engines,
            options,
            relay.notify,
            datasets=LineageClient(lineage_channel, lineage_at),
        )
        engines.update(optional_engines(settings, controller))
        sweeps = SweepController(controller, relay.notify)
        consumer = Consumer(
            js,
            engine,
            EVENTS.inbox,
            durable=str(settings.get("consumer", "dlc")),
            subjects=SCHEDULER_SUBJECTS,
            handler=controller.on_scheduler_event,
        )
        lineage_consumer = Consumer(
            js,
            engine,
            EVENTS.inbox,
            durable=str(settings.get("lineage_consumer", "dlc-lineage")),
            subjects=LINEAGE_SUBJECTS,
            handler=controller.on_lineage_event,
            after_commit=relay.notify,  # the job.updated it writes goes out at once
        )

        if authorizer is None:
            authorizer = service.remote_authorizer(stack, settings)
        server = GrpcServer(
            settings.listen,
            [
                Servicer(
                    "pai.dlc.v1.JobService",
                    JobServicer(controller),
                    job_pb2_grpc.add_JobServiceServicer_to_server,
                ),
                Servicer(
                    "pai.dlc.v1.SweepService",
                    SweepServicer(sweeps),
                    sweep_pb2_grpc.add_SweepServiceServicer_to_server,
                ),
            ],
            domain=DOMAIN,
            authorizer=authorizer,
        )
        await relay.start()
        stack.push_async_callback(relay.stop)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        await lineage_consumer.start()
        stack.push_async_callback(lineage_consumer.stop)
        await controller.start()
        stack.push_async_callback(controller.stop)
        await sweeps.start()
        stack.push_async_callback(sweeps.stop)
        await server.start()
        stack.push_async_callback(server.stop)
        yield DlcApp(settings, server, relay, nc, controller, consumer, lineage_consumer, sweeps)
