"""auth, the scheduler and dlc in-process: real NATS, real SQLite or PostgreSQL, real processes.

The scheduler gets one simulated node big enough for every test's gang, in group `cpu`, and a quota
for workspace `team`; dlc calls it with the bootstrap admin key (its platform identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pai.dlc.v1 import job_pb2, job_pb2_grpc, job_spec_pb2, log_pb2
from pai.scheduler.v1 import (
    node_pb2,
    node_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
    resource_group_pb2,
    resource_group_pb2_grpc,
    workload_pb2_grpc,
)
from pai_auth.bootstrap import build as build_auth
from pai_common.grpc_client import channel
from pai_common.testing import NatsServer, api_key
from pai_common.testing import service_settings as settings
from pai_dlc.bootstrap import DlcApp
from pai_dlc.bootstrap import build as build_dlc
from pai_scheduler.bootstrap import build as build_scheduler

GiB = 2**30
Job = job_pb2.Job
REPO = pathlib.Path(__file__).resolve().parents[4]
MNIST = REPO / "examples" / "train_mnist_ddp"


class Client:
    def __init__(self, address: str, key: str) -> None:
        self.channel = channel(address, key)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)

    async def submit(
        self, job_id: str, command: list[str], *, workers: int = 2, code: pathlib.Path | None = MNIST,
        ws: str = "team", **spec: Any,
    ) -> job_pb2.Job:  # fmt: skip
        js = job_spec_pb2.JobSpec(
            replica_specs=[
                job_spec_pb2.ReplicaSpec(
                    role=job_spec_pb2.ReplicaSpec.WORKER,
                    count=workers,
                    command=command,
                    resources=job_spec_pb2.Resources(cpu_milli=1000, memory_bytes=GiB),
                )
            ],
            **spec,
        )
        if code is not None:
            js.code.uri = code.as_uri()
        return await self.jobs.CreateJob(
            job_pb2.CreateJobRequest(parent=f"workspaces/{ws}", job_id=job_id, job=Job(spec=js))
        )

    async def get(self, name: str) -> job_pb2.Job:
        return await self.jobs.GetJob(job_pb2.GetJobRequest(name=name))

    async def wait(
        self, name: str, check: Callable[[job_pb2.Job], bool], timeout: float = 60.0, what: str = ""
    ) -> job_pb2.Job:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.get(name)
            if check(job):
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{name} never got {what or 'there'}: {job}")
            await asyncio.sleep(0.1)

    async def done(self, name: str, timeout: float = 90.0) -> job_pb2.Job:
        terminal = (Job.SUCCEEDED, Job.FAILED, Job.STOPPED)
        return await self.wait(name, lambda j: j.state in terminal, timeout, "to a terminal state")

    async def logs(
        self, name: str, replica: str | None = None, attempt: int | None = None
    ) -> list[log_pb2.LogEntry]:
        req = log_pb2.ReadJobLogsRequest(name=name, page_size=10000)
        if replica:
            req.replicas.append(replica)
        if attempt is not None:
            req.attempt = attempt
        return list((await self.jobs.ReadJobLogs(req)).entries)

    async def text(self, name: str, replica: str) -> str:
        return "\n".join(e.text for e in await self.logs(name, replica))


@dataclass
class Stack:
    home: pathlib.Path
    key: str
    scheduler_address: str
    start: Callable[[], Awaitable[DlcApp]]
    stop: Callable[[], Awaitable[None]]
    app: DlcApp | None = None
    client: Client | None = None
    scheduler_channel: Any = None
    lineage_address: str = ""

    @property
    def workloads(self) -> workload_pb2_grpc.WorkloadServiceStub:
        """The scheduler's workloads, as the admin sees them."""
        if self.scheduler_channel is None:
            self.scheduler_channel = channel(self.scheduler_address, self.key)
        return workload_pb2_grpc.WorkloadServiceStub(self.scheduler_channel)


async def _cluster(address: str, key: str, cpu: int) -> None:
    ch = channel(address, key)
    await resource_group_pb2_grpc.ResourceGroupServiceStub(ch).CreateResourceGroup(
        resource_group_pb2.CreateResourceGroupRequest(
            resource_group_id="cpu", resource_group=resource_group_pb2.ResourceGroup()
        )
    )
    await node_pb2_grpc.NodeServiceStub(ch).RegisterNode(
        node_pb2.RegisterNodeRequest(
            parent="resourceGroups/cpu",
            node_id="box",
            node=node_pb2.Node(source=node_pb2.Node.SIMULATED, cpu_milli=cpu, memory_bytes=64 * GiB),
        )
    )
    await quota_pb2_grpc.QuotaServiceStub(ch).CreateQuota(
        quota_pb2.CreateQuotaRequest(
            parent="resourceGroups/cpu", quota_id="team", quota=quota_pb2.Quota(workspace="workspaces/team")
        )
    )
    await ch.close()


@pytest.fixture
def cluster_cpu() -> int:
    """CPU of the one node (milli): room for one 2-worker job at 1 core each, unless a test says."""
    return 4000


@pytest.fixture
def dlc_settings() -> dict[str, str]:
    """More dlc settings, for a test that needs them (parametrize it)."""
    return {}


@pytest.fixture
def with_lineage() -> bool:
    """Whether the stack runs lineage too (dataset versions, output models); a test module says."""
    return False


def _closed_port() -> str:
    """An address nothing listens on: dlc without lineage must never reach a developer's own."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def stack(
    tmp_path: pathlib.Path,
    database: tuple[str, str],
    nats_server: NatsServer,
    cluster_cpu: int,
    dlc_settings: dict[str, str],
    with_lineage: bool,
) -> AsyncIterator[Stack]:
    key = api_key()
    home = tmp_path / "home"
    async with contextlib.AsyncExitStack() as exits:
        auth = await exits.enter_async_context(
            build_auth(settings("auth", home, database, nats_server.url, ""), bootstrap_key=key)
        )
        sched = await exits.enter_async_context(
            build_scheduler(
                settings("scheduler", home, database, nats_server.url, auth.address, local_node="false")
            )
        )
        await _cluster(sched.address, key, cluster_cpu)
        lineage_address = _closed_port()
        if with_lineage:
            from pai_lineage.bootstrap import build as build_lineage

            lineage = await exits.enter_async_context(
                build_lineage(settings("lineage", home, database, nats_server.url, auth.address))
            )
            lineage_address = lineage.address
        contexts: list[Any] = []

        async def start() -> DlcApp:
            ctx = build_dlc(
                settings(
                    "dlc", home, database, nats_server.url, auth.address, api_key=key,
                    scheduler_endpoint=sched.address, lineage_endpoint=lineage_address,
                    kill_grace="3", poll_interval="0.1",
                    storage_root=str(tmp_path / "storage"), **dlc_settings,
                )
            )  # fmt: skip
            app = await ctx.__aenter__()
            contexts.append(ctx)
            s.app, s.client = app, Client(app.address, key)
            return app

        async def stop() -> None:
            ctx = contexts.pop()
            if s.client is not None:
                await s.client.channel.close()
            await ctx.__aexit__(None, None, None)
            s.app, s.client = None, None

        s = Stack(home, key, sched.address, start, stop, lineage_address=lineage_address)
        await start()
        try:
            yield s
        finally:
            while contexts:
                await stop()
            if s.scheduler_channel is not None:
                await s.scheduler_channel.close()
            _kill_leftovers(tmp_path / "storage")
    url, schema = database
    if schema:
        import asyncpg

        conn = await asyncpg.connect(url)
        for service in ("auth", "scheduler", "dlc", "lineage"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{service}" CASCADE')
        await conn.close()


def _kill_leftovers(storage: pathlib.Path) -> None:
    """A failing test must not leave training processes behind for the next one."""
    import os
    import signal

    for pid_dir in pathlib.Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            env = (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if str(storage).encode() in env:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


@pytest.fixture
def client(stack: Stack) -> Client:
    assert stack.client is not None
    return stack.client


PY = sys.executable
