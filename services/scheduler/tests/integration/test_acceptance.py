"""The scheduler issue's acceptance tests, through the real gRPC API (auth, store, outbox and NATS real)."""

from __future__ import annotations

import asyncio

import grpc
import nats
import pytest

from pai.scheduler.v1 import events_pb2, node_pb2, quota_pb2, workload_pb2
from pai_common.testing import NatsServer

from .conftest import Client, Stack, W


async def gpu_used(client: Client, gid: str = "gpu") -> int:
    nodes = await client.nodes.ListNodes(node_pb2.ListNodesRequest(parent=f"resourceGroups/{gid}"))
    return sum(g.allocated_gpu_milli for n in nodes.nodes for g in n.gpus)


async def test_gang_not_admitted_holds_nothing_and_half_gangs_never_deadlock(client: Client) -> None:
    await client.group()
    for i in range(4):
        await client.node(f"n{i}", gpus=1, cpu=8000)
    await client.quota("team", "team")
    await client.submit("team", "cpu-hog", gpus=0, cpu=8000)  # fills one node's CPU: room for 3 GPU pods
    await client.admitted("team", "cpu-hog")
    await client.submit("team", "gang", pods=4)
    gang = await client.pending("team", "gang", W.NO_PLACEMENT)
    assert "3 of 4 worker pods fit now" in gang.pending_reason
    assert not gang.placements and await gpu_used(client) == 0
    await client.workloads.FinishWorkload(
        workload_pb2.FinishWorkloadRequest(name="workspaces/team/workloads/cpu-hog", outcome=W.SUCCEEDED)
    )
    gang = await client.admitted("team", "gang")
    assert sorted(p.node for p in gang.placements) == [f"resourceGroups/gpu/nodes/n{i}" for i in range(4)]
    # two gangs that could each take half: one runs, the other holds nothing, then runs
    await client.workloads.FinishWorkload(
        workload_pb2.FinishWorkloadRequest(name="workspaces/team/workloads/gang", outcome=W.SUCCEEDED)
    )
    await client.submit("team", "a", pods=4)
    await client.submit("team", "b", pods=4)
    await client.admitted("team", "a")
    b = await client.pending("team", "b", W.NO_PLACEMENT)
    assert not b.placements and await gpu_used(client) == 4000
    await client.workloads.FinishWorkload(
        workload_pb2.FinishWorkloadRequest(name="workspaces/team/workloads/a", outcome=W.SUCCEEDED)
    )
    await client.admitted("team", "b")


async def test_borrowing_reclaim_and_spot_first_with_grace(client: Client, nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    preempted = await js.subscribe("pai.scheduler.workload.preempted", ordered_consumer=True)
    await client.group(default_preemption_grace_period={"seconds": 30})
    await client.node("n0", gpus=4)
    await client.node("n1", gpus=4)
    await client.quota("a", "a", min_gpu=4000, max_gpu=8000)
    await client.quota("b", "b", min_gpu=4000, max_gpu=8000)
    for i in range(6):
        await client.submit("a", f"a{i}")
    await client.submit("a", "spot", spot=True, grace=2)
    await client.submit("a", "a6")
    await client.submit("a", "over", spot=True)  # a is at its max of 8 (and spot: it preempts no one)
    for wid in [f"a{i}" for i in range(7)] + ["spot"]:
        await client.admitted("a", wid)
    over = await client.pending("a", "over", W.QUOTA_MAX_REACHED)
    assert over.pending_reason == "quota max reached for gpu in workspace a"
    usage = (
        await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name="resourceGroups/gpu/quotas/a"))
    ).usage
    assert usage.admitted.gpu_milli == 8000 and usage.borrowed.gpu_milli == 4000

    # b is under its min: it reclaims from a's borrowed part, spot first, never below a's min
    await client.submit("b", "claim", pods=2)
    claim = await client.pending("b", "claim", W.WAITING_FOR_PREEMPTION)
    assert claim.pending_reason == "waiting for preemption of 2 workloads"
    assert len(claim.preemption_victims) == 2
    assert "workspaces/a/workloads/spot" in claim.preemption_victims
    msg = await preempted.next_msg(timeout=5)
    first = events_pb2.WorkloadPreempted.FromString(msg.data).workload
    assert first.state == W.PREEMPTING and first.preemption.reason == workload_pb2.Preemption.QUOTA_RECLAIM
    spot = await client.get("a", "spot")
    assert spot.state == W.PREEMPTING
    grace = spot.preemption.deadline.ToDatetime() - spot.preemption.preempt_time.ToDatetime()
    assert grace.total_seconds() == 2
    other = next(v for v in claim.preemption_victims if not v.endswith("/spot"))
    victim = await client.workloads.GetWorkload(workload_pb2.GetWorkloadRequest(name=other))
    assert (
        victim.preemption.deadline.ToDatetime() - victim.preemption.preempt_time.ToDatetime()
    ).seconds == 30
    # the other victim's owner acts on the notice at once; the spot one is evicted at its deadline
    await client.workloads.RequeueWorkload(
        workload_pb2.RequeueWorkloadRequest(name=other, reason="checkpointed")
    )
    claim = await client.admitted("b", "claim")
    assert (await client.get("a", "spot")).state == W.PREEMPTED
    usage = (
        await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name="resourceGroups/gpu/quotas/a"))
    ).usage
    assert usage.admitted.gpu_milli == 6000
    # b asks for more than its min: it may not take a below its min
    for i in range(3):
        await client.submit("b", f"more{i}", grace=1)
    await asyncio.sleep(4)
    usage = (
        await client.quotas.GetQuota(quota_pb2.GetQuotaRequest(name="resourceGroups/gpu/quotas/a"))
    ).usage
    assert usage.admitted.gpu_milli >= 4000
    states = [(await client.get("a", f"a{i}")).state for i in range(7)]
    assert sum(s in (W.ADMITTED, W.PREEMPTING) for s in states) >= 4
    await nc.close()


async def test_spot_is_preempted_before_non_spot(client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=2)
    await client.quota("team", "team")
    await client.submit("team", "low", priority=-5)
    await client.submit("team", "spot", priority=100, spot=True)
    await client.admitted("team", "low")
    await client.admitted("team", "spot")
    await client.submit("team", "urgent", priority=10)
    urgent = await client.pending("team", "urgent", W.WAITING_FOR_PREEMPTION)
    assert list(urgent.preemption_victims) == ["workspaces/team/workloads/spot"]
    assert urgent.pending_reason == "waiting for preemption of 1 spot workload"
    assert (await client.get("team", "low")).state == W.ADMITTED


async def test_small_workload_admitted_past_a_large_one_with_its_reason(client: Client) -> None:
    await client.group()
    await client.node("n0", gpus=2)
    await client.node("n1", gpus=2)
    await client.quota("team", "team")
    await client.submit("team", "large", gpus=4, priority=10)
    await client.submit("team", "small")
    await client.admitted("team", "small")
    large = await client.pending("team", "large", W.NO_MATCHING_NODE)
    assert large.pending_reason == "no schedulable node can ever host a pod of worker"
    await client.submit("team", "wide", pods=2, gpus=2, priority=5)
    wide = await client.pending("team", "wide", W.NO_PLACEMENT)
    assert wide.pending_reason.startswith("not enough free gpu") or "free GPU cards" in wide.pending_reason
    explained = await client.workloads.ExplainWorkload(
        workload_pb2.ExplainWorkloadRequest(name="workspaces/team/workloads/large")
    )
    assert explained.pod_set_fits[0].feasible_node_count == 0
    rejected = {r.filter: r.node_count for r in explained.pod_set_fits[0].rejections}
    assert rejected == {workload_pb2.FilterRejection.GPU_COUNT: 2}
    queue = await client.workloads.ListWorkloads(
        workload_pb2.ListWorkloadsRequest(
            parent="workspaces/team", filter="state = PENDING", order_by="queue"
        )
    )
    assert [w.name.rsplit("/", 1)[1] for w in queue.workloads] == ["large", "wide"]
    assert [w.queue_position for w in queue.workloads] == [1, 2]


async def test_fractional_gpus_share_and_never_overcommit_and_model_quota(client: Client) -> None:
    await client.group()
    await client.node("a100", gpus=2, model="A100")
    await client.node("t4", gpus=2, model="T4")
    await client.quota("team", "team", models={"A100": 1000})
    for i in range(10):
        await client.submit("team", f"tenth{i}", milli=100, models=("T4",), cpu=100)
    placed = [await client.admitted("team", f"tenth{i}") for i in range(10)]
    cards = {(p.placements[0].node, tuple(p.placements[0].gpu_indices)) for p in placed}
    assert len(cards) == 1 and next(iter(cards))[0] == "resourceGroups/gpu/nodes/t4"  # one card, shared
    for i in range(10):
        await client.workloads.FinishWorkload(
            workload_pb2.FinishWorkloadRequest(
                name=f"workspaces/team/workloads/tenth{i}", outcome=W.SUCCEEDED
            )
        )
    await client.submit("team", "seven", milli=700, models=("T4",))
    await client.submit("team", "half", milli=500, models=("T4",))
    seven, half = await client.admitted("team", "seven"), await client.admitted("team", "half")
    assert seven.placements[0].gpu_indices != half.placements[0].gpu_indices
    await client.submit("team", "eight", milli=800, models=("T4",))  # 0.3 and 0.5 free: 0.8, on no card
    eight = await client.pending("team", "eight", W.NO_PLACEMENT)
    assert eight.pending_reason == "no T4 card with 0.8 GPU free"
    # per-model quota: one A100 card at most
    await client.submit("team", "a1", models=("A100",))
    await client.admitted("team", "a1")
    await client.submit("team", "a2", models=("A100",))
    a2 = await client.pending("team", "a2", W.QUOTA_MAX_REACHED)
    assert a2.pending_reason == "quota max reached for gpu/A100 in workspace team"
    nodes = await client.nodes.ListNodes(node_pb2.ListNodesRequest(parent="resourceGroups/gpu"))
    a100 = next(n for n in nodes.nodes if n.name.endswith("/a100"))
    assert sum(g.allocated_gpu_milli for g in a100.gpus) == 1000


async def test_restart_mid_stream_loses_and_duplicates_nothing(stack: Stack, nats_server: NatsServer) -> None:
    client = stack.client
    assert client is not None
    await client.group()
    for i in range(8):
        await client.node(f"n{i}", gpus=8)
    await client.quota("team", "team")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for i in range(40):
        await client.submit("team", f"w{i}", pods=1 + i % 4, gpus=1 + i % 2)
    await asyncio.sleep(0.2)  # some admitted, maybe not all
    await stack.stop()
    await stack.start()
    client = stack.client
    assert client is not None
    for i in range(40, 60):
        await client.submit("team", f"w{i}", pods=1, gpus=1)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        listed = await client.workloads.ListWorkloads(
            workload_pb2.ListWorkloadsRequest(parent="workspaces/team", page_size=1000)
        )
        ws = {w.name: w for w in listed.workloads}
        admitted = {n for n, w in ws.items() if w.state == W.ADMITTED}
        pending = {n for n, w in ws.items() if w.state == W.PENDING}
        stable = all(w.pending_reason_code != W.NOT_EVALUATED for w in ws.values() if w.state == W.PENDING)
        if len(ws) == 60 and stable and asyncio.get_running_loop().time() > deadline - 17:
            break
        assert asyncio.get_running_loop().time() < deadline, "scheduler did not settle"
        await asyncio.sleep(0.1)
    # every admission was published exactly once, and the placements add up on the nodes
    sub = await js.subscribe("pai.scheduler.workload.admitted", ordered_consumer=True)
    seen: dict[str, int] = {}
    while True:
        try:
            msg = await sub.next_msg(timeout=1)
        except nats.errors.TimeoutError:
            break
        name = events_pb2.WorkloadAdmitted.FromString(msg.data).workload.name
        seen[name] = seen.get(name, 0) + 1
    assert set(seen) == admitted and all(n == 1 for n in seen.values())
    placed = sum(len(ws[n].placements) * max(1000, ws[n].pod_sets[0].gpu_count * 1000) for n in admitted)
    assert await gpu_used(client) == placed
    assert len(admitted) + len(pending) == 60
    await nc.close()


async def test_bad_input_gets_clear_errors(client: Client) -> None:
    await client.group()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit("team", "x")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no quota" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.workloads.CreateWorkload(
            workload_pb2.CreateWorkloadRequest(parent="workspaces/team", workload_id="x", workload=W())
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get("team", "missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.quota("bad", "bad", min_gpu=2000, max_gpu=1000)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.nodes.ImportNodes(
            node_pb2.ImportNodesRequest(parent="resourceGroups/gpu", csv_content="sn,cpu_milli\nx,abc\n")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line" in (err.value.details() or "")
