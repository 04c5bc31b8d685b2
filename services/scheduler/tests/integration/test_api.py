"""The scheduler's API beyond the acceptance list: who may do what, draining, events, imports, paging."""

from __future__ import annotations

import asyncio

import grpc
import nats
import pytest

from pai.auth.v1 import identity_pb2, identity_pb2_grpc, workspace_pb2, workspace_pb2_grpc
from pai.scheduler.v1 import events_pb2, node_pb2, quota_pb2, resource_group_pb2, stats_pb2, workload_pb2
from pai_common.grpc_client import channel
from pai_common.testing import NatsServer, error_info

from .conftest import Client, GiB, Stack, W


def openb_csv(nodes: int) -> str:
    """A node list in the openb format (sn,cpu_milli,memory_mib,gpu,model), like the traces'."""
    rows = ["sn,cpu_milli,memory_mib,gpu,model"]
    for i in range(nodes):
        gpus, model = [(8, "V100M32"), (2, "T4"), (0, "")][i % 3]
        rows.append(f"openb-node-{i:04d},{96000 if gpus else 64000},{786432},{gpus},{model}")
    return "\n".join(rows) + "\n"


async def user_key(stack: Stack, user: str, workspace: str, role: str) -> str:
    ch = channel(stack.auth_address, stack.key)
    identity = identity_pb2_grpc.IdentityServiceStub(ch)
    workspaces = workspace_pb2_grpc.WorkspaceServiceStub(ch)
    try:
        await workspaces.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(workspace_id=workspace, workspace=workspace_pb2.Workspace())
        )
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    await identity.CreateUser(identity_pb2.CreateUserRequest(user_id=user, user=identity_pb2.User()))
    await workspaces.CreateMember(
        workspace_pb2.CreateMemberRequest(
            parent=f"workspaces/{workspace}",
            member=workspace_pb2.Member(user=f"users/{user}", role=identity_pb2.Role.Value(role)),
        )
    )
    key = await identity.CreateApiKey(identity_pb2.CreateApiKeyRequest(parent=f"users/{user}"))
    await ch.close()
    return key.secret


async def test_who_may_do_what(stack: Stack, client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=2)
    await client.quota("team", "team")
    await client.quota("other", "other")
    assert stack.app is not None
    dev = Client(stack.app.address, await user_key(stack, "dev", "team", "DEVELOPER"))
    viewer = Client(stack.app.address, await user_key(stack, "viewer", "team", "VIEWER"))
    await user_key(stack, "stranger", "other", "DEVELOPER")
    try:
        await dev.submit("team", "mine")
        assert (await viewer.get("team", "mine")).name == "workspaces/team/workloads/mine"
        for call in (
            viewer.submit("team", "nope"),
            dev.submit("other", "theirs"),
            dev.quota("grab", "team"),
            dev.nodes.CordonNode(node_pb2.CordonNodeRequest(name="resourceGroups/gpu/nodes/n0")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # reading the cluster is open to every signed-in user; a foreign workspace's queue is not
        nodes = await dev.nodes.ListNodes(node_pb2.ListNodesRequest(parent="resourceGroups/gpu"))
        assert len(nodes.nodes) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await dev.workloads.ListWorkloads(workload_pb2.ListWorkloadsRequest(parent="workspaces/other"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await dev.workloads.ListWorkloads(workload_pb2.ListWorkloadsRequest(parent="workspaces/-"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # naming another workspace's quota answers as naming none: no probing which quotas exist
        answers = []
        for i, quota in enumerate(("resourceGroups/gpu/quotas/other", "resourceGroups/gpu/quotas/no-such")):
            pods = [workload_pb2.PodSet(name="w", count=1, cpu_milli=100, memory_bytes=GiB)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await dev.workloads.CreateWorkload(
                    workload_pb2.CreateWorkloadRequest(
                        parent="workspaces/team",
                        workload_id=f"probe-{i}",
                        workload=W(quota=quota, pod_sets=pods),
                    )
                )
            answers.append((err.value.code(), error_info(err.value).reason))
        assert answers[0] == answers[1] == (grpc.StatusCode.FAILED_PRECONDITION, "QUOTA_WORKSPACE_MISMATCH")
    finally:
        await dev.channel.close()
        await viewer.channel.close()


async def test_drain_gives_notices_and_new_work_avoids_the_node(
    client: Client, nats_server: NatsServer
) -> None:
    nc = await nats.connect(nats_server.url)
    sub = await nc.jetstream().subscribe("pai.scheduler.workload.preempted", ordered_consumer=True)
    await client.group(default_preemption_grace_period={"seconds": 60})
    await client.node("n0", gpus=2)
    await client.quota("team", "team")
    await client.submit("team", "running", gpus=2)
    await client.admitted("team", "running")
    await client.node("n1", gpus=2)
    node = await client.nodes.CordonNode(
        node_pb2.CordonNodeRequest(name="resourceGroups/gpu/nodes/n0", reason="maintenance", drain=True)
    )
    assert node.cordoned and not node.schedulable
    running = await client.get("team", "running")
    assert running.state == W.PREEMPTING
    assert running.preemption.reason == workload_pb2.Preemption.NODE_DRAINED
    event = events_pb2.WorkloadPreempted.FromString((await sub.next_msg(timeout=5)).data)
    assert event.workload.name == running.name
    await client.submit("team", "new")
    new = await client.admitted("team", "new")
    assert new.placements[0].node == "resourceGroups/gpu/nodes/n1"
    await nc.close()


async def test_events_for_groups_nodes_and_quotas(client: Client, nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await client.group()
    await client.node("n0", gpus=1)
    await client.quota("team", "team")
    subjects = {}
    for subject, cls in (
        ("pai.scheduler.resource_group.created", events_pb2.ResourceGroupCreated),
        ("pai.scheduler.node.registered", events_pb2.NodeRegistered),
        ("pai.scheduler.quota.created", events_pb2.QuotaCreated),
    ):
        sub = await js.subscribe(subject, ordered_consumer=True)
        subjects[subject] = cls.FromString((await sub.next_msg(timeout=5)).data)
    assert subjects["pai.scheduler.node.registered"].node.name == "resourceGroups/gpu/nodes/n0"  # type: ignore[attr-defined]
    assert subjects["pai.scheduler.quota.created"].quota.workspace == "workspaces/team"  # type: ignore[attr-defined]
    await nc.close()


async def test_import_openb_nodes_and_page_through_them(client: Client) -> None:
    await client.group()
    csv = openb_csv(900)
    checked = await client.nodes.ImportNodes(
        node_pb2.ImportNodesRequest(parent="resourceGroups/gpu", csv_content=csv, validate_only=True)
    )
    imported = await client.nodes.ImportNodes(
        node_pb2.ImportNodesRequest(parent="resourceGroups/gpu", csv_content=csv, replicas=2)
    )
    assert checked.created_count == 900 and checked.capacity.gpu_milli == 300 * 10 * 1000
    assert imported.created_count == 2 * checked.created_count
    assert imported.capacity.gpu_milli == 2 * checked.capacity.gpu_milli
    seen, token = 0, ""
    while True:
        page = await client.nodes.ListNodes(
            node_pb2.ListNodesRequest(parent="resourceGroups/gpu", page_size=1000, page_token=token)
        )
        seen += len(page.nodes)
        token = page.next_page_token
        if not token:
            break
    assert seen == imported.created_count
    group = await client.groups.GetResourceGroup(
        resource_group_pb2.GetResourceGroupRequest(name="resourceGroups/gpu")
    )
    assert group.capacity.gpu_milli == imported.capacity.gpu_milli


async def test_stats_and_quota_usage(client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=4)
    await client.quota("team", "team", min_gpu=2000)
    await client.submit("team", "a", gpus=3)
    await client.admitted("team", "a")
    await client.submit("team", "b", gpus=2)
    await client.pending("team", "b", W.NO_PLACEMENT)
    q = await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name="resourceGroups/gpu/quotas/team"))
    assert q.usage.admitted.gpu_milli == 3000 and q.usage.borrowed.gpu_milli == 1000
    assert q.usage.pending.gpu_milli == 2000 and q.usage.pending_workload_count == 1
    assert q.usage.available.gpu_milli == 1000
    stats = await client.stats.GetSchedulerStats(stats_pb2.GetSchedulerStatsRequest(include_quotas=True))
    (rg,) = stats.resource_groups
    assert rg.pending_workload_count == 1 and rg.admitted_workload_count == 1
    assert rg.decisions.admitted_total >= 1 and rg.decisions.attempts_total >= 2
    assert rg.quotas[0].usage.admitted.gpu_milli == 3000


async def test_update_priority_moves_the_queue_and_requeue_and_delete(client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=1)
    await client.quota("team", "team")
    await client.submit("team", "holder")
    await client.admitted("team", "holder")
    await client.submit("team", "first")
    await client.submit("team", "second")
    second = await client.wait("team", "second", lambda w: w.queue_position == 2)
    second.priority = 5
    updated = await client.workloads.UpdateWorkload(
        workload_pb2.UpdateWorkloadRequest(workload=second, update_mask={"paths": ["priority"]})
    )
    assert updated.queue_position == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:  # stale etag
        await client.workloads.UpdateWorkload(
            workload_pb2.UpdateWorkloadRequest(workload=second, update_mask={"paths": ["priority"]})
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.workloads.RequeueWorkload(
            workload_pb2.RequeueWorkloadRequest(name="workspaces/team/workloads/first")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await client.workloads.DeleteWorkload(
        workload_pb2.DeleteWorkloadRequest(name="workspaces/team/workloads/holder")
    )
    await client.admitted("team", "second")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get("team", "holder")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(err.value)
    assert (info.domain, info.reason) == ("scheduler.pai.dev", "WORKLOAD_NOT_FOUND")


async def test_concurrent_creates_commit_together_and_stay_exact(client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=8)
    await client.quota("team", "team")

    def create(wid: str, rid: str = "") -> workload_pb2.CreateWorkloadRequest:
        w = W(pod_sets=[workload_pb2.PodSet(name="p", count=1, cpu_milli=100, gpu_count=1)])
        return workload_pb2.CreateWorkloadRequest(
            parent="workspaces/team", workload_id=wid, workload=w, request_id=rid
        )

    calls = [client.workloads.CreateWorkload(create(f"w{i}")) for i in range(40)]
    calls += [
        client.workloads.CreateWorkload(create("twice")),  # the same name twice: one wins
        client.workloads.CreateWorkload(create("twice")),
        client.workloads.CreateWorkload(create("retried", "req-1")),  # a retry: the same workload
        client.workloads.CreateWorkload(create("retried", "req-1")),
        client.workloads.CreateWorkload(create("clash-a", "req-2")),  # one request id, two names
        client.workloads.CreateWorkload(create("clash-b", "req-2")),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    made = [r for r in results[:40] if isinstance(r, workload_pb2.Workload)]
    assert len(made) == 40 and len({w.uid for w in made}) == 40
    twice = results[40:42]
    assert sum(isinstance(r, workload_pb2.Workload) for r in twice) == 1
    refused = next(r for r in twice if isinstance(r, grpc.aio.AioRpcError))
    assert refused.code() == grpc.StatusCode.ALREADY_EXISTS
    first, second = results[42:44]
    assert isinstance(first, workload_pb2.Workload) and isinstance(second, workload_pb2.Workload)
    assert first.uid == second.uid
    clash = results[44:46]
    assert sum(isinstance(r, workload_pb2.Workload) for r in clash) == 1  # the others are unaffected
    assert (
        next(r for r in clash if isinstance(r, grpc.aio.AioRpcError)).code()
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the request id names another workload
        await client.workloads.CreateWorkload(create("other", "req-1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await client.workloads.ListWorkloads(
        workload_pb2.ListWorkloadsRequest(parent="workspaces/team", page_size=100)
    )
    assert len(listed.workloads) == 43
    assert len({w.name for w in listed.workloads}) == 43
