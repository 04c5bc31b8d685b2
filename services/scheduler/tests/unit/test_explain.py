"""Unit tests of explanations: what holds a pending workload back, worked out without changing anything."""

from __future__ import annotations

from pai_scheduler.domain.explain import explain_fit, explain_pending, first_rejection
from pai_scheduler.domain.resources import Node
from pai_scheduler.domain.workload import PodSet

from .builders import RG, GiB, gpu_nodes, quota, sched, submit, wl


def test_a_blocked_gang_gets_its_checks_fits_and_victims_and_nothing_changes() -> None:
    nodes = gpu_nodes(2, gpus=2)
    nodes[1].cordoned = True
    g = sched(nodes, quota("team", "team"))
    low = wl("low", gpus=2)
    submit(g, low)
    big = wl("big", gpus=1, pods=2, priority=5)
    g.add(big)
    used_before = g.placer.gpu_used_milli
    detail = explain_pending(g, big)
    assert detail.queue_position == 1 and detail.ahead_count == 0
    assert detail.code == "NOT_EVALUATED"
    # with one node cordoned, the two cards left are held: the quota has nothing idle to borrow
    # and the group no free card; CPU and memory fit
    gpu = {(c.quota, c.code) for c in detail.quota_checks if c.resource == "gpu"}
    assert gpu == {(f"{RG}/quotas/team", "QUOTA_BORROWING_EXHAUSTED"), ("", "NO_CAPACITY")}
    assert all(c.fits for c in detail.quota_checks if c.resource != "gpu")
    (fit,) = detail.pod_set_fits
    assert (fit.nodes, fit.feasible, fit.placeable) == (2, 0, 0)
    assert fit.rejections["UNSCHEDULABLE"][0] == 1 and fit.rejections["GPU_COUNT"][0] == 1
    assert detail.victims == [low.name]
    assert g.placer.gpu_used_milli == used_before and big.placements == ()


def test_the_first_rejection_names_the_filter_and_the_node() -> None:
    info = gpu_nodes(1, gpus=1, model="T4")[0]
    node = Node(info.id, info.cpu_milli, info.memory_bytes // 2**20, list(info.gpu_models))
    assert first_rejection(info, node, PodSet("p", 1, 100, GiB, 1, 0, ("A100",))) == (
        "GPU_MODEL",
        "node n0: T4",
    )
    assert first_rejection(info, node, PodSet("p", 1, 64_000))[0] == "CPU"
    assert (
        first_rejection(info, node, PodSet("p", 1, 100, 0, 1, 0, (), (("zone", "a"),)))[0] == "NODE_SELECTOR"
    )
    assert first_rejection(info, node, PodSet("p", 1, 100, GiB, 1)) == (None, "")


def test_fit_counts_the_pods_that_would_place() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("team", "team"))
    w = wl("w", gpus=1, pods=3)
    (fit,) = explain_fit(g, w)
    assert (fit.count, fit.placeable, fit.feasible) == (3, 2, 1)
    assert g.placer.gpu_used_milli == 0
