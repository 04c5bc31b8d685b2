"""Unit tests of preemption: borrowing and reclaim, spot first, priorities, grace, no loops."""

from __future__ import annotations

import datetime as dt

from pai_scheduler.domain.workload import State

from .builders import NOW, RG, gpu_nodes, quota, sched, submit, two_teams, wl


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


def test_spot_never_preempts_on_demand_work() -> None:
    g = sched(gpu_nodes(1, gpus=1), quota("team", "team"))
    on_demand = wl("on-demand", priority=0)
    submit(g, on_demand)
    spot = wl("spot", priority=5, spot=True)
    changes = submit(g, spot)
    assert not changes.preempting and on_demand.state == State.ADMITTED


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
