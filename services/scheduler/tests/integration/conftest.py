"""A real scheduler in-process behind a real auth: real NATS, real SQLite or PostgreSQL, real gRPC."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
    stats_pb2_grpc,
    types_pb2,
    workload_pb2,
    workload_pb2_grpc,
)
from pai_auth.bootstrap import build as build_auth
from pai_common.config import Settings
from pai_common.grpc_client import channel
from pai_common.testing import NatsServer, api_key, service_settings
from pai_scheduler.bootstrap import SchedulerApp
from pai_scheduler.bootstrap import build as build_scheduler

GiB = 2**30
W = workload_pb2.Workload


def settings(
    service: str, home: pathlib.Path, database: tuple[str, str], nats_url: str, auth: str
) -> Settings:
    return service_settings(service, home, database, nats_url, auth, local_node="false")


class Client:
    def __init__(self, address: str, credential: str) -> None:
        self.channel = channel(address, credential)
        self.groups = resource_group_pb2_grpc.ResourceGroupServiceStub(self.channel)
        self.nodes = node_pb2_grpc.NodeServiceStub(self.channel)
        self.quotas = quota_pb2_grpc.QuotaServiceStub(self.channel)
        self.workloads = workload_pb2_grpc.WorkloadServiceStub(self.channel)
        self.stats = stats_pb2_grpc.SchedulerStatsServiceStub(self.channel)

    async def group(self, gid: str = "gpu", **policy: object) -> None:
        await self.groups.CreateResourceGroup(
            resource_group_pb2.CreateResourceGroupRequest(
                resource_group_id=gid,
                resource_group=resource_group_pb2.ResourceGroup(
                    scheduling_policy=resource_group_pb2.SchedulingPolicy(**policy)  # type: ignore[arg-type]
                ),
            )
        )

    async def node(
        self, name: str, gpus: int, model: str = "A100", cpu: int = 32_000, gid: str = "gpu"
    ) -> None:
        await self.nodes.RegisterNode(
            node_pb2.RegisterNodeRequest(
                parent=f"resourceGroups/{gid}",
                node_id=name,
                node=node_pb2.Node(
                    source=node_pb2.Node.SIMULATED,
                    cpu_milli=cpu,
                    memory_bytes=256 * GiB,
                    gpus=[node_pb2.Gpu(index=i, model=model) for i in range(gpus)],
                ),
            )
        )

    async def quota(
        self, qid: str, workspace: str, gid: str = "gpu", min_gpu: int | None = None, max_gpu: int | None = None,
        models: dict[str, int] | None = None,
    ) -> quota_pb2.Quota:  # fmt: skip
        lo, hi = types_pb2.ResourceLimits(), types_pb2.ResourceLimits()
        if min_gpu is not None:
            lo.gpu_milli = min_gpu
        if max_gpu is not None:
            hi.gpu_milli = max_gpu
        for m, v in (models or {}).items():
            hi.gpu_models.append(types_pb2.GpuModelAmount(model=m, gpu_milli=v))
        return await self.quotas.CreateQuota(
            quota_pb2.CreateQuotaRequest(
                parent=f"resourceGroups/{gid}",
                quota_id=qid,
                quota=quota_pb2.Quota(workspace=f"workspaces/{workspace}", min=lo, max=hi),
            )
        )

    async def submit(
        self, ws: str, wid: str, *, pods: int = 1, gpus: int = 1, milli: int = 0, priority: int = 0,
        spot: bool = False, grace: int = 0, models: tuple[str, ...] = (), cpu: int = 1000,
    ) -> workload_pb2.Workload:  # fmt: skip
        w = W(
            priority=priority,
            preemptible=spot,
            pod_sets=[
                workload_pb2.PodSet(
                    name="worker",
                    count=pods,
                    cpu_milli=cpu,
                    memory_bytes=GiB,
                    gpu_count=0 if milli else gpus,
                    gpu_milli=milli,
                    allowed_gpu_models=models,
                )
            ],
        )
        if grace:
            w.preemption_grace_period.seconds = grace
        return await self.workloads.CreateWorkload(
            workload_pb2.CreateWorkloadRequest(parent=f"workspaces/{ws}", workload_id=wid, workload=w)
        )

    async def get(self, ws: str, wid: str) -> workload_pb2.Workload:
        return await self.workloads.GetWorkload(
            workload_pb2.GetWorkloadRequest(name=f"workspaces/{ws}/workloads/{wid}")
        )

    async def wait(
        self, ws: str, wid: str, check: Callable[[workload_pb2.Workload], bool], timeout: float = 10.0
    ) -> workload_pb2.Workload:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            w = await self.get(ws, wid)
            if check(w):
                return w
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"workload {wid} did not get there: {w}")
            await asyncio.sleep(0.05)

    async def admitted(self, ws: str, wid: str) -> workload_pb2.Workload:
        return await self.wait(ws, wid, lambda w: w.state == W.ADMITTED)

    async def pending(self, ws: str, wid: str, code: int) -> workload_pb2.Workload:
        return await self.wait(ws, wid, lambda w: w.state == W.PENDING and w.pending_reason_code == code)


@dataclass
class Stack:
    home: pathlib.Path
    database: tuple[str, str]
    nats_url: str
    auth_address: str
    key: str
    start: Callable[[], Awaitable[SchedulerApp]]
    stop: Callable[[], Awaitable[None]]
    app: SchedulerApp | None = None
    client: Client | None = None


@pytest.fixture
async def stack(
    tmp_path: pathlib.Path, database: tuple[str, str], nats_server: NatsServer
) -> AsyncIterator[Stack]:
    """auth and the scheduler; `stack.stop()` / `stack.start()` restart the scheduler on the same store."""
    key = api_key()
    home = tmp_path / "home"
    async with build_auth(settings("auth", home, database, nats_server.url, ""), bootstrap_key=key) as auth:
        contexts: list[object] = []

        async def start() -> SchedulerApp:
            ctx = build_scheduler(settings("scheduler", home, database, nats_server.url, auth.address))
            app = await ctx.__aenter__()
            contexts.append(ctx)
            s.app = app
            s.client = Client(app.address, key)
            return app

        async def stop() -> None:
            ctx = contexts.pop()
            if s.client is not None:
                await s.client.channel.close()
            watchdog = asyncio.create_task(_dump_tasks_after(30.0, "scheduler shutdown"))
            try:
                await ctx.__aexit__(None, None, None)  # type: ignore[attr-defined]
            finally:
                watchdog.cancel()
            s.app, s.client = None, None

        s = Stack(home, database, nats_server.url, auth.address, key, start, stop)
        await start()
        yield s
        while contexts:
            await stop()
    url, schema = database
    if schema:  # the database fixture drops only its own schema; these are the services' own
        import asyncpg

        conn = await asyncpg.connect(url)
        for service in ("auth", "scheduler"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{service}" CASCADE')
        await conn.close()


async def _dump_tasks_after(seconds: float, what: str) -> None:
    """Print every task's stack if `what` takes longer than `seconds` (a hang's diagnosis)."""
    import sys

    await asyncio.sleep(seconds)
    print(f"--- {what} takes more than {seconds} s; tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@pytest.fixture
def client(stack: Stack) -> Client:
    assert stack.client is not None
    return stack.client


def code_of(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()  # type: ignore[no-any-return]
