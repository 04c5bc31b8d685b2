"""Unit tests of the decision function: gangs, quotas, borrowing, reclaim, preemption, reasons."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from pai_scheduler.domain.quota import QuotaError, QuotaSpec, QuotaTree
from pai_scheduler.domain.scheduling import Changes, GroupScheduler, NodeInfo, Policy
from pai_scheduler.domain.workload import PodSet, State, Workload

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
GiB = 2**30
RG = "resourceGroups/rg"
_seq = itertools.count(1)


def gpu_nodes(n: int, gpus: int = 4, model: str = "A100", prefix: str = "n") -> list[NodeInfo]:
    return [NodeInfo(f"{prefix}{i}", 32_000, 128 * GiB, [model] * gpus) for i in range(n)]


def quota(qid: str, ws: str = "", parent: str = "", **limits: dict[str, int]) -> QuotaSpec:
    return QuotaSpec(
        f"{RG}/quotas/{qid}",
        parent=f"{RG}/quotas/{parent}" if parent else "",
        workspace=f"workspaces/{ws}" if ws else "",
        min=limits.get("min", {}),
        max=limits.get("max", {}),
    )


def wl(
    wid: str,
    q: str = "team",
    *,
    pods: int = 1,
    gpus: int = 1,
    milli: int = 0,
    cpu: int = 1000,
    priority: int = 0,
    spot: bool = False,
    models: tuple[str, ...] = (),
    grace: float = 0.0,
) -> Workload:
    ps = PodSet("worker", pods, cpu, GiB, 0 if milli else gpus, milli, models)
    ws = q
    return Workload(
        f"workspaces/{ws}/workloads/{wid}",
        wid,
        f"{RG}/quotas/{q}",
        RG,
        (ps,),
        priority=priority,
        preemptible=spot,
        grace_seconds=grace,
        seq=next(_seq),
    )


def sched(nodes: list[NodeInfo], *quotas: QuotaSpec, **policy: object) -> GroupScheduler:
    g = GroupScheduler(RG, nodes, Policy(**policy))  # type: ignore[arg-type]
    for spec in quotas:
        g.quotas.validate(spec)
        g.quotas.put(spec)
    return g


def submit(g: GroupScheduler, *ws: Workload) -> Changes:
    for w in ws:
        g.add(w)
    return g.cycle(NOW)


def gpu_used(g: GroupScheduler) -> int:
    return g.placer.gpu_used_milli


# ---- gangs ---------------------------------------------------------------------------------------


def test_gang_is_admitted_whole_or_holds_nothing() -> None:
    g = sched(gpu_nodes(4, gpus=1), quota("team", "team"))
    other = wl("other", gpus=0, cpu=32_000)  # takes all CPU of one node: room for 3 pods
    submit(g, other)
    big = wl("big", pods=4)
    changes = submit(g, big)
    assert big.state == State.PENDING and not changes.admitted
    assert gpu_used(g) == 0 and "gpu" not in g.quotas.usage[big.quota]
    assert big.pending_code == "NO_PLACEMENT"
    assert "3 of 4 worker pods fit now" in big.pending_reason
    fits = wl("fits", pods=3)
    submit(g, fits)
    assert fits.state == State.ADMITTED and len({p.node for p in fits.placements}) == 3
    huge = wl("huge", pods=5)
    submit(g, huge)
    assert huge.pending_code == "EXCEEDS_LIMITS"
    assert huge.pending_reason == "request of 5 gpu exceeds the resource group's capacity"
    double = wl("double", gpus=2)  # two cards on one node: no node has two
    submit(g, double)
    assert double.pending_code == "NO_MATCHING_NODE"


def test_two_half_gangs_never_deadlock() -> None:
    g = sched(gpu_nodes(2, gpus=2), quota("team", "team"))
    a, b = wl("a", pods=4), wl("b", pods=4)  # each could take half of the cards, neither fits with the other
    submit(g, a, b)
    assert a.state == State.ADMITTED and b.state == State.PENDING
    assert gpu_used(g) == 4000  # a holds all four, b holds nothing
    g.finish(a, "SUCCEEDED", "", NOW)
    g.cycle(NOW)
    assert b.state == State.ADMITTED


# ---- head-of-line blocking and reasons -----------------------------------------------------------


def test_small_workload_admitted_past_one_that_cannot_fit() -> None:
    g = sched(gpu_nodes(2, gpus=2), quota("team", "team"))
    large = wl("large", gpus=4, priority=10)  # 4 cards on one node: impossible on 2-card nodes
    small = wl("small", gpus=1)
    submit(g, large, small)
    assert small.state == State.ADMITTED
    assert large.state == State.PENDING and large.pending_code == "NO_MATCHING_NODE"
    wide = wl("wide", gpus=2, priority=5)  # 3 cards free, but not 2 on one node
    tiny = wl("tiny", gpus=1)
    node = small.placements[0].node
    g.placer.set_schedulable(node, False)  # tiny goes to the other node, as an occupant would
    submit(g, tiny)
    g.placer.set_schedulable(node, True)
    submit(g, wide)
    assert tiny.state == State.ADMITTED and wide.state == State.PENDING
    assert wide.pending_code == "NO_PLACEMENT"
    assert wide.pending_reason == "no node with 2 free GPU cards"


def test_lookahead_bounds_the_tries_and_unevaluated_workloads_say_what_they_wait_behind() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"), lookahead=2)
    blockers = [wl(f"b{i}", gpus=2) for i in range(3)]  # two cards on a one-card node: never
    last = wl("last")
    changes = submit(g, *blockers, last)
    assert changes.decisions == 2
    assert last.state == State.PENDING and last.pending_code == "QUEUED_BEHIND"
    assert last.pending_metadata == {"ahead_count": "3"}
    assert g.queue_position(last) == 4


def test_quota_max_reason_names_the_resource_and_workspace() -> None:
    g = sched(gpu_nodes(2), quota("team", "team", max={"gpu": 2000}))
    first, second = wl("first", gpus=2), wl("second", gpus=1)
    submit(g, first, second)
    assert first.state == State.ADMITTED
    assert second.pending_code == "QUOTA_MAX_REACHED"
    assert second.pending_reason == "quota max reached for gpu in workspace team"
    too_big = wl("too-big", gpus=3)
    submit(g, too_big)
    assert too_big.pending_code == "EXCEEDS_LIMITS"


# ---- fractional GPUs and models ------------------------------------------------------------------


def test_ten_tenth_gpu_pods_share_one_card() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("team", "team"))
    ws = [wl(f"s{i}", milli=100, cpu=100) for i in range(10)]
    submit(g, *ws)
    assert all(w.state == State.ADMITTED for w in ws)
    cards = {(p.node, p.gpu_indices) for w in ws for p in w.placements}
    assert len(cards) == 1 and all(p.gpu_milli == 100 for w in ws for p in w.placements)


def test_share_pod_never_lands_on_a_card_without_room() -> None:
    g = sched(gpu_nodes(1, gpus=3), quota("team", "team"))
    half = wl("half", milli=500)
    submit(g, half)
    seven = wl("seven", milli=700)
    submit(g, seven)
    card = seven.placements[0].gpu_indices
    eight = wl("eight", milli=800)
    submit(g, eight)
    assert eight.state == State.ADMITTED and eight.placements[0].gpu_indices != card
    assert len({w.placements[0].gpu_indices for w in (half, seven, eight)}) == 3
    another = wl("another", milli=800)  # 0.5, 0.3 and 0.2 free: 1.0 in all, no card with 0.8
    submit(g, another)
    assert another.state == State.PENDING and another.pending_reason == "no GPU card with 0.8 GPU free"


def test_per_model_quota_is_enforced_and_steers_placement() -> None:
    nodes = gpu_nodes(1, gpus=2, model="A100", prefix="a") + gpu_nodes(1, gpus=2, model="T4", prefix="t")
    g = sched(nodes, quota("team", "team", max={"gpu/A100": 1000}))
    first, second, third = wl("first"), wl("second"), wl("third", models=("A100",))
    submit(g, first, second, third)
    models = sorted(p.gpu_model for w in (first, second) for p in w.placements)
    assert models == ["A100", "T4"]  # the second one is steered off A100 by the per-model cap
    assert g.quotas.usage[first.quota]["gpu/A100"] == 1000
    assert third.state == State.PENDING
    assert third.pending_reason == "quota max reached for gpu/A100 in workspace team"


def test_allowed_models_and_node_selector_filter_nodes() -> None:
    nodes = gpu_nodes(1, model="V100", prefix="v") + gpu_nodes(1, model="A100", prefix="a")
    nodes[0].labels["zone"] = "b"
    g = sched(nodes, quota("team", "team"))
    w = wl("w", models=("A100",))
    submit(g, w)
    assert w.placements[0].node == "a0"
    sel = wl("sel")
    sel = Workload(
        sel.name, "u", sel.quota, RG, (PodSet("p", 1, 100, 0, 1, 0, (), (("zone", "b"),)),), seq=99
    )
    submit(g, sel)
    assert sel.placements[0].node == "v0"
    nowhere = Workload(
        "workspaces/team/workloads/nowhere",
        "u2",
        sel.quota,
        RG,
        (PodSet("p", 1, 100, 0, 1, 0, (), (("zone", "z"),)),),
        seq=100,
    )
    submit(g, nowhere)
    assert nowhere.pending_code == "NO_MATCHING_NODE"


# ---- quotas: borrowing and reclaim ---------------------------------------------------------------


def two_teams(**policy: object) -> GroupScheduler:
    # 8 A100 cards; each team is guaranteed 4 and may use up to 8
    return sched(
        gpu_nodes(2, gpus=4),
        quota("a", "a", min={"gpu": 4000}, max={"gpu": 8000}),
        quota("b", "b", min={"gpu": 4000}, max={"gpu": 8000}),
        **policy,
    )


def test_borrowing_up_to_max() -> None:
    g = two_teams()
    ws = [wl(f"a{i}", "a") for i in range(9)]
    submit(g, *ws)
    assert sum(w.state == State.ADMITTED for w in ws) == 8
    assert ws[8].pending_code == "QUOTA_MAX_REACHED"


def test_reclaim_preempts_borrowers_never_below_min_spot_first_with_grace() -> None:
    g = two_teams(default_grace=60.0)
    steady = [wl(f"a{i}", "a") for i in range(4)]  # a's guarantee
    borrowed = [wl(f"x{i}", "a") for i in range(3)] + [wl("spot", "a", spot=True, grace=5.0)]
    submit(g, *steady, *borrowed)
    assert all(w.state == State.ADMITTED for w in steady + borrowed)
    claim = wl("claim", "b", gpus=1, pods=2)
    changes = submit(g, claim)
    victims = list(changes.preempting)
    assert victims[0].name.endswith("/spot")  # spot first
    assert len(victims) == 2 and all(v.quota.endswith("/a") for v in victims)
    assert all(v not in steady for v in victims)
    spot = next(v for v in victims if v.preemptible)
    assert spot.state == State.PREEMPTING and spot.preemption is not None
    assert spot.preemption.deadline == NOW + dt.timedelta(seconds=5)
    other = next(v for v in victims if not v.preemptible)
    assert other.preemption is not None and other.preemption.deadline == NOW + dt.timedelta(seconds=60)
    assert claim.pending_code == "WAITING_FOR_PREEMPTION"
    assert claim.pending_reason == "waiting for preemption of 2 workloads"
    # resources stay held until the deadline
    assert g.cycle(NOW + dt.timedelta(seconds=1)).admitted == []
    later = g.cycle(NOW + dt.timedelta(seconds=61))
    assert claim.state == State.ADMITTED and {v.name for v in later.preempted} == {v.name for v in victims}
    assert g.quotas.usage[f"{RG}/quotas/a"]["gpu"] == 6000  # a is still above its min
    # b wants more: a is at 6 > its min 4, so two more may go, but never a third
    more = [wl(f"m{i}", "b") for i in range(3)]
    submit(g, *more)
    for minutes in range(2, 8):  # one preemption per queue head per cycle, then the grace period
        g.cycle(NOW + dt.timedelta(minutes=minutes))
    assert g.quotas.usage[f"{RG}/quotas/a"]["gpu"] == 4000
    assert sum(w.state == State.ADMITTED for w in more) == 2
    assert all(w.state == State.ADMITTED for w in steady)


def test_spot_is_preempted_before_non_spot_of_lower_priority() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("team", "team"))
    low = wl("low", priority=-5)
    spot = wl("spot", priority=100, spot=True)
    submit(g, low, spot)
    urgent = wl("urgent", priority=10)
    changes = submit(g, urgent)
    assert [v.name for v in changes.preempting] == [spot.name]
    assert low.state == State.ADMITTED


def test_no_preemption_of_equal_priority_non_spot_and_no_loops() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"))
    first, second = wl("first"), wl("second")
    submit(g, first, second)
    assert first.state == State.ADMITTED and second.pending_code == "NO_PLACEMENT"
    high = wl("high", priority=5)
    submit(g, high)
    g.requeue(first, NOW)  # the owner acts on the notice at once
    g.cycle(NOW)
    assert high.state == State.ADMITTED
    # first (lower priority) can never preempt high back
    for _ in range(3):
        assert not g.cycle(NOW + dt.timedelta(hours=1)).preempting
    assert high.state == State.ADMITTED


def test_no_preemption_when_disabled() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"), preemption=False)
    submit(g, wl("spot", spot=True))
    changes = submit(g, wl("urgent", priority=10))
    assert not changes.preempting


# ---- fair share ----------------------------------------------------------------------------------


def test_fair_share_alternates_between_siblings() -> None:
    g = sched(gpu_nodes(1, gpus=4), quota("a", "a"), quota("b", "b"))
    a = [wl(f"a{i}", "a") for i in range(4)]
    b = [wl(f"b{i}", "b") for i in range(4)]
    submit(g, *a, *b)
    assert sum(w.state == State.ADMITTED for w in a) == 2
    assert sum(w.state == State.ADMITTED for w in b) == 2


# ---- quota tree invariants -----------------------------------------------------------------------


def test_tree_rejects_children_min_above_parent_min_and_min_above_max() -> None:
    tree = QuotaTree({"gpu": 8000})
    parent = quota("org", min={"gpu": 4000})
    tree.put(parent)
    tree.put(quota("a", "a", parent="org", min={"gpu": 3000}))
    with pytest.raises(QuotaError) as err:
        tree.validate(quota("b", "b", parent="org", min={"gpu": 2000}))
    assert err.value.reason == "QUOTA_MIN_EXCEEDS_PARENT"
    with pytest.raises(QuotaError) as err:
        tree.validate(quota("c", "c", min={"gpu": 5000}, max={"gpu": 1000}))
    assert err.value.reason == "QUOTA_MIN_EXCEEDS_MAX"
    with pytest.raises(QuotaError) as err:
        tree.validate(quota("d", "a"))
    assert err.value.reason == "WORKSPACE_QUOTA_ALREADY_EXISTS"


def test_lending_limit_keeps_part_of_an_idle_guarantee() -> None:
    g = sched(
        gpu_nodes(2, gpus=4),
        QuotaSpec(f"{RG}/quotas/a", workspace="workspaces/a", min={"gpu": 4000}, lending_limit={"gpu": 1000}),
        quota("b", "b"),
    )
    ws = [wl(f"b{i}", "b") for i in range(8)]
    submit(g, *ws)
    # a lends only 1 of its 4 idle guaranteed cards: b gets its 4 + 1
    assert sum(w.state == State.ADMITTED for w in ws) == 5
    assert ws[-1].pending_code == "QUOTA_BORROWING_EXHAUSTED"


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


def test_spot_never_preempts_on_demand_work() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"))
    on_demand = wl("on-demand", priority=0)
    submit(g, on_demand)
    spot = wl("spot", priority=5, spot=True)
    changes = submit(g, spot)
    assert not changes.preempting and on_demand.state == State.ADMITTED


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


def test_reclaim_never_takes_a_nested_quota_below_its_min() -> None:
    g = sched(
        gpu_nodes(4, gpus=4),
        quota("org-a", min={"gpu": 8000}),
        quota("b", "b", min={"gpu": 8000}),
        quota("a1", "a1", parent="org-a", min={"gpu": 4000}),
        quota("a2", "a2", parent="org-a", min={"gpu": 4000}),
    )
    a1 = [wl(f"a1x{i}", "a1", gpus=4) for i in range(1)]
    a2 = [wl(f"a2x{i}", "a2", gpus=4) for i in range(2)]
    submit(g, *a1, *a2)
    assert all(w.state == State.ADMITTED for w in a1 + a2)  # org-a holds 12 of 16, a2 borrows 4
    claim = wl("claim", "b", gpus=4, pods=2)
    changes = submit(g, claim)
    assert [v.quota.rsplit("/", 1)[1] for v in changes.preempting] == ["a2"]
    assert a1[0].state == State.ADMITTED


def test_per_model_guarantee_is_reclaimed() -> None:
    nodes = gpu_nodes(1, gpus=4, model="A100", prefix="a") + gpu_nodes(1, gpus=4, model="T4", prefix="t")
    g = sched(nodes, quota("x", "x"), quota("y", "y", min={"gpu/A100": 4000}))
    hog = wl("hog", "x", gpus=4, models=("A100",))
    submit(g, hog)
    assert hog.state == State.ADMITTED
    mine = wl("mine", "y", gpus=4, models=("A100",))
    changes = submit(g, mine)
    assert [v.name for v in changes.preempting] == [hog.name]


def test_preemptor_stops_waiting_when_its_victims_are_gone_even_if_readmitted() -> None:
    g = sched(gpu_nodes(1, gpus=2), quota("team", "team"), default_grace=60.0)
    low = [wl("low0", priority=0), wl("low1", priority=0)]
    submit(g, *low)
    high = wl("high", gpus=2, priority=9)
    changes = submit(g, high)
    assert {v.name for v in changes.preempting} == {w.name for w in low}
    g.requeue(low[0], NOW)  # acted on the notice; it may not take the card back while high waits
    g.cycle(NOW)
    assert low[0].state == State.PENDING and high.state == State.PENDING
    g.cycle(NOW + dt.timedelta(seconds=61))
    assert high.state == State.ADMITTED


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


def test_raising_a_guarantee_lets_a_settled_queue_reclaim() -> None:
    g = sched(gpu_nodes(1, gpus=4), quota("a", "a"), quota("b", "b"))
    hogs = [wl(f"a{i}", "a") for i in range(4)]
    submit(g, *hogs)  # a borrows the whole node
    claim = wl("claim", "b")
    submit(g, claim)
    assert claim.pending_code == "NO_PLACEMENT" and not g.cycle(NOW).preempting
    spec = g.quotas.specs[f"{RG}/quotas/b"]
    spec.min = {"gpu": 2000}
    g.touch()
    assert [v.quota for v in g.cycle(NOW).preempting] == [f"{RG}/quotas/a"]
