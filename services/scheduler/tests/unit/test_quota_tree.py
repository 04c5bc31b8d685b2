"""Unit tests of the quota tree: its invariants, lending limits and fair share between siblings."""

from __future__ import annotations

import pytest

from pai_common.errors import FailedPrecondition
from pai_scheduler.domain.quota import QuotaSpec, QuotaTree
from pai_scheduler.domain.workload import State

from .builders import RG, gpu_nodes, quota, sched, submit, wl


def test_tree_rejects_children_min_above_parent_min_and_min_above_max() -> None:
    tree = QuotaTree({"gpu": 8000})
    parent = quota("org", min={"gpu": 4000})
    tree.put(parent)
    tree.put(quota("a", "a", parent="org", min={"gpu": 3000}))
    with pytest.raises(FailedPrecondition) as err:
        tree.validate(quota("b", "b", parent="org", min={"gpu": 2000}))
    assert err.value.reason == "QUOTA_MIN_EXCEEDS_PARENT"
    assert err.value.metadata == {"quota": f"{RG}/quotas/b"}
    with pytest.raises(FailedPrecondition) as err:
        tree.validate(quota("c", "c", min={"gpu": 5000}, max={"gpu": 1000}))
    assert err.value.reason == "QUOTA_MIN_EXCEEDS_MAX"
    with pytest.raises(FailedPrecondition) as err:
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


def test_fair_share_alternates_between_siblings() -> None:
    g = sched(gpu_nodes(1, gpus=4), quota("a", "a"), quota("b", "b"))
    a = [wl(f"a{i}", "a") for i in range(4)]
    b = [wl(f"b{i}", "b") for i in range(4)]
    submit(g, *a, *b)
    assert sum(w.state == State.ADMITTED for w in a) == 2
    assert sum(w.state == State.ADMITTED for w in b) == 2
