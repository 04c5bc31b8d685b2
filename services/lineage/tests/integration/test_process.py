"""`python -m pai_lineage` starts, migrates its store, serves all three services and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pai.lineage.v1 import dataset_pb2
from pai_auth.bootstrap import build as build_auth
from pai_common.grpc_client import channel
from pai_common.testing import LineageProcess, NatsServer, api_key
from pai_common.testing import service_settings as settings

from .conftest import Client


async def test_the_service_runs_as_a_process(tmp_path: pathlib.Path, nats_server: NatsServer) -> None:
    key = api_key()
    home = tmp_path / "home"
    database = (f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", "")
    async with contextlib.AsyncExitStack() as exits:
        auth = await exits.enter_async_context(
            build_auth(settings("auth", home, database, nats_server.url, ""), bootstrap_key=key)
        )
        process = LineageProcess(home, nats_server.url, auth.address)
        await asyncio.to_thread(process.start)
        exits.callback(process.stop)
        health = channel(process.address)
        exits.push_async_callback(health.close)
        stub = health_pb2_grpc.HealthStub(health)
        for service in ("pai.lineage.v1.DatasetService", "pai.lineage.v1.ModelRegistryService",
                        "pai.lineage.v1.LineageService"):  # fmt: skip
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        client = Client(process.address, key)
        exits.push_async_callback(client.channel.close)
        ds = await client.datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(
                parent="workspaces/team", dataset_id="qa", dataset=dataset_pb2.Dataset()
            )
        )
        assert ds.name == "workspaces/team/datasets/qa"
        assert (home / "lineage" / "lineage.db").exists()
        proc = process.proc
        assert proc is not None
        await asyncio.to_thread(process.stop)
        assert proc.returncode == 0
        try:
            await client.datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=ds.name), timeout=1)
            raise AssertionError("still serving after SIGTERM")
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
