"""Unit tests of usage arithmetic: borrowed and lent amounts, a quota's subtree, nodes and groups."""

from __future__ import annotations

from pai_scheduler.domain.quota import QuotaSpec, QuotaTree
from pai_scheduler.domain.records import Gpu, NodeRecord
from pai_scheduler.domain.usage import (
    borrowed,
    group_usage,
    lent,
    node_usage,
    placed_pods,
    quota_usage,
    tallies,
)
from pai_scheduler.domain.workload import State

from .builders import NOW, RG, GiB, gpu_nodes, quota, sched, submit, wl


def tree(**usage: dict[str, int]) -> QuotaTree:
    t = QuotaTree({"gpu": 8000})
    t.put(QuotaSpec(f"{RG}/quotas/a", min={"gpu": 4000}, lending_limit={"gpu": 1000}))
    t.put(QuotaSpec(f"{RG}/quotas/b", min={"gpu": 2000}))
    t.put(QuotaSpec(f"{RG}/quotas/c"))
    for q, amounts in usage.items():
        t.charge(f"{RG}/quotas/{q}", amounts)
    return t


def test_borrowed_is_what_a_quota_holds_above_its_min() -> None:
    spec = QuotaSpec("q", min={"gpu": 2000, "cpu": 8000})
    assert borrowed(spec, {"gpu": 3500, "cpu": 1000, "memory": 5}) == {"gpu": 1500, "memory": 5}


def test_lent_is_the_idle_min_that_siblings_hold_above_theirs_within_the_lending_limit() -> None:
    t = tree(a={"gpu": 1000}, b={"gpu": 5000})
    # a idles 3 of its 4 guaranteed cards, lends at most 1; b holds 3 above its min
    assert lent(t, t.specs[f"{RG}/quotas/a"]) == {"gpu": 1000}
    # b's own min is all used: nothing to lend
    assert lent(t, t.specs[f"{RG}/quotas/b"]) == {"gpu": 0}
    idle = tree(b={"gpu": 2000})  # nobody borrows: nothing is lent, however idle a is
    assert lent(idle, idle.specs[f"{RG}/quotas/a"]) == {"gpu": 0}


def test_quota_usage_sums_its_subtree_and_counts_by_state() -> None:
    g = sched(
        gpu_nodes(1, gpus=4),
        quota("org", min={"gpu": 2000}),
        quota("team", "team", parent="org", min={"gpu": 2000}),
    )
    running, waiting = wl("running", gpus=3), wl("waiting", gpus=2)
    submit(g, running, waiting)
    assert running.state == State.ADMITTED and waiting.state == State.PENDING
    tally = tallies(g.workloads.values())
    org = quota_usage(g.quotas, g.quotas.specs[f"{RG}/quotas/org"], tally, NOW)
    assert org.admitted["gpu"] == 3000
    assert org.borrowed == {"gpu": 1000, "gpu/A100": 3000, "cpu": 1000, "memory": GiB}  # no min: all borrowed
    assert org.pending == {"cpu": 1000, "memory": GiB, "gpu": 2000}
    assert (org.admitted_count, org.pending_count, org.preempting_count) == (1, 1, 0)
    assert org.available["gpu"] == 1000 and org.compute_time == NOW
    assert org.dominant_share == org.weighted_share == 0.75


def test_node_and_group_usage_count_what_is_placed() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("team", "team", min={"gpu": 1000}))
    whole, share = wl("whole", gpus=1), wl("share", milli=250, cpu=500)
    submit(g, whole, share)
    record = NodeRecord("rg", "n0", "", "SIMULATED", 32_000, 128 * GiB, [Gpu(0, "A100"), Gpu(1, "A100")])
    usage = node_usage(record, placed_pods(g.workloads.values(), RG))
    assert usage.pods == 2 and sorted(usage.gpu_allocated) == [250, 1000] and sorted(usage.gpu_pods) == [1, 1]
    assert usage.allocated == {"cpu": 1500, "memory": 2 * GiB, "gpu": 1250, "gpu/A100": 1250}
    assert placed_pods(g.workloads.values(), "resourceGroups/other") == {}
    waiting = wl("waiting", gpus=2)
    g.add(waiting)
    cordoned = NodeRecord("rg", "n1", "", "SIMULATED", 1000, GiB, cordoned=True)
    group = group_usage(g.quotas, [record, cordoned], g.workloads.values())
    assert (group.nodes, group.schedulable, group.pending, group.admitted) == (2, 1, 1, 2)
    assert group.guaranteed == {"gpu": 1000} and group.allocated["gpu"] == 1250
    assert group.capacity["gpu"] == 2000
