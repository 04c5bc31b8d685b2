"""Unit tests of gang admission: whole gangs, no head-of-line blocking, pending reasons, GPU shares
and models."""

from __future__ import annotations

from pai_scheduler.domain.workload import PodSet, State, Workload

from .builders import NOW, RG, gpu_nodes, gpu_used, quota, sched, submit, wl


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
