"""Unit tests of a group's state across changes: rebuilds, node changes, passes over the queues."""

from __future__ import annotations

from pai_scheduler.domain.scheduling import NodeInfo
from pai_scheduler.domain.workload import State

from .builders import NOW, GiB, gpu_nodes, quota, sched, submit, two_teams, wl


def test_state_rebuilds_from_workloads() -> None:
    g = two_teams()
    ws = [wl(f"a{i}", "a", milli=300) for i in range(5)]
    submit(g, *ws)
    fresh = two_teams()
    for w in ws:
        fresh.add(w)
    assert fresh.placer.gpu_used_milli == g.placer.gpu_used_milli == 1500
    assert fresh.quotas.usage == g.quotas.usage


def test_rebuilding_for_new_nodes_keeps_usage_exact() -> None:
    g = two_teams()
    ws = [wl(f"a{i}", "a") for i in range(3)]
    submit(g, *ws)
    before = {k: dict(v) for k, v in g.quotas.usage.items()}
    g.nodes["extra"] = NodeInfo("extra", 32_000, 128 * GiB, ["A100"] * 4)
    g.rebuild()
    assert g.quotas.usage == before
    assert g.placer.gpu_used_milli == 3000


def test_cordoned_nodes_count_only_for_what_they_still_hold() -> None:
    nodes = gpu_nodes(2, gpus=4)
    g = sched(nodes, quota("team", "team"))
    running = wl("running", gpus=3)
    submit(g, running)
    node = running.placements[0].node
    g.nodes[node].cordoned = True
    g.rebuild()
    assert g.quotas.capacity["gpu"] == 4000 + 3000
    fits = wl("fits", gpus=4)
    submit(g, fits)
    assert fits.state == State.ADMITTED and fits.placements[0].node != node
    g.finish(running, "SUCCEEDED", "", NOW)
    assert g.quotas.capacity["gpu"] == 4000


def test_reasons_given_before_an_admission_are_refreshed() -> None:
    g = sched(gpu_nodes(1, gpus=8), quota("team", "team", max={"gpu": 8000}))
    submit(g, wl("six", gpus=6))
    big = wl("big", gpus=4)  # tried first: not enough free GPUs
    small = wl("small", gpus=2)  # admitted after it, which makes big's reason stale
    changes = submit(g, big, small)
    assert small.state == State.ADMITTED and changes.more
    g.cycle(NOW)
    assert big.pending_code == "QUOTA_MAX_REACHED"


def test_a_settled_cluster_makes_no_decisions_and_new_work_is_looked_at_alone() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("a", "a"), quota("b", "b"), lookahead=4)
    waiting = [wl(f"a{i}", "a", gpus=2) for i in range(6)] + [wl(f"b{i}", "b", gpus=2) for i in range(6)]
    changes = submit(g, *waiting)
    for _ in range(10):
        if not changes.more:
            break
        changes = g.cycle(NOW)
    assert not changes.more
    assert g.cycle(NOW).decisions == 0  # nothing changed: nothing to decide
    submit(g, wl("late", "b", gpus=2))
    assert g.cycle(NOW).decisions == 0  # that cycle (in submit) already looked at b's queue only
    g.add(wl("later", "a", gpus=2))
    assert g.cycle(NOW).decisions == 4  # a's queue, up to the look-ahead; b's is not looked at


def test_removing_a_pending_workload_lets_the_ones_behind_it_be_tried() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"), lookahead=2)
    blockers = [wl(f"b{i}", gpus=2) for i in range(2)]  # never fit
    last = wl("last")
    submit(g, *blockers, last)
    assert last.pending_code == "QUEUED_BEHIND"
    g.finish(blockers[0], "CANCELLED", "", NOW)
    for _ in range(3):
        g.cycle(NOW)
    assert last.state == State.ADMITTED
