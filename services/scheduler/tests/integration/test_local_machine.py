"""The scheduler on one machine (`make up`): this machine as the `local` group, and on the first start
a quota that lets the default workspace use all of it, so a first job needs no quota step."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from pai.scheduler.v1 import quota_pb2, resource_group_pb2
from pai_auth.bootstrap import build as build_auth
from pai_common.testing import NatsServer, api_key, service_settings
from pai_scheduler.bootstrap import build as build_scheduler

from .conftest import Client, code_of

QUOTA = "resourceGroups/local/quotas/default"


async def drop_schemas(database: tuple[str, str]) -> None:
    """The services' own schemas (the database fixture drops only its own)."""
    if database[1]:
        import asyncpg

        conn = await asyncpg.connect(database[0])
        for service in ("auth", "scheduler"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{database[1]}_{service}" CASCADE')
        await conn.close()


async def test_the_first_start_lets_the_default_workspace_use_the_whole_machine(
    tmp_path: pathlib.Path, database: tuple[str, str], nats_server: NatsServer
) -> None:
    key = api_key()
    home = tmp_path / "home"
    common = (home, database, nats_server.url)
    async with build_auth(service_settings("auth", *common, ""), bootstrap_key=key) as auth:
        scheduler_settings = service_settings(
            "scheduler", *common, auth.address, local_node="true", default_quota_workspace="default"
        )
        async with build_scheduler(scheduler_settings) as app:
            client = Client(app.address, key)
            group = await client.groups.GetResourceGroup(
                resource_group_pb2.GetResourceGroupRequest(name="resourceGroups/local")
            )
            quota = await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name=QUOTA))
            assert quota.workspace == "workspaces/default"
            assert not quota.HasField("min") or not any(quota.min.ListFields())  # nothing guaranteed
            assert quota.max.cpu_milli == group.capacity.cpu_milli > 0
            assert quota.max.memory_bytes == group.capacity.memory_bytes > 0
            # an admin's choice stands: the quota removed stays removed after a restart
            await client.quotas.DeleteQuota(quota_pb2.DeleteQuotaRequest(name=QUOTA))
            await client.channel.close()
        async with build_scheduler(scheduler_settings) as app:
            client = Client(app.address, key)
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name=QUOTA))
            assert code_of(gone.value) == grpc.StatusCode.NOT_FOUND
            await client.channel.close()
    await drop_schemas(database)


async def test_without_the_setting_no_quota_is_made(
    tmp_path: pathlib.Path, database: tuple[str, str], nats_server: NatsServer
) -> None:
    key = api_key()
    common = (tmp_path / "home", database, nats_server.url)
    async with build_auth(service_settings("auth", *common, ""), bootstrap_key=key) as auth:
        plain = service_settings("scheduler", *common, auth.address, local_node="true")
        async with build_scheduler(plain) as app:
            client = Client(app.address, key)
            listed = await client.quotas.ListQuotas(
                quota_pb2.ListQuotasRequest(parent="resourceGroups/local")
            )
            assert list(listed.quotas) == []
            await client.channel.close()
    await drop_schemas(database)


async def test_a_stop_between_making_the_group_and_its_quota_loses_nothing(
    tmp_path: pathlib.Path,
    database: tuple[str, str],
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pai_scheduler.bootstrap

    key = api_key()
    common = (tmp_path / "home", database, nats_server.url)
    async with build_auth(service_settings("auth", *common, ""), bootstrap_key=key) as auth:
        scheduler_settings = service_settings(
            "scheduler", *common, auth.address, local_node="true", default_quota_workspace="default"
        )

        async def stopped_first(*args: object) -> None:  # the first start stops before the quota
            monkeypatch.undo()

        monkeypatch.setattr(pai_scheduler.bootstrap, "give_default_quota", stopped_first)
        async with build_scheduler(scheduler_settings) as app:
            assert QUOTA not in app.scheduler.quotas
        async with build_scheduler(scheduler_settings) as app:
            client = Client(app.address, key)
            quota = await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name=QUOTA))
            assert quota.workspace == "workspaces/default"
            group = await client.groups.GetResourceGroup(
                resource_group_pb2.GetResourceGroupRequest(name="resourceGroups/local")
            )
            assert dict(group.labels) == {}  # done: nothing is added again once an admin removes it
            await client.channel.close()
    await drop_schemas(database)
