"""Unit tests of the small domain rules: names, request checks, state transitions, stats."""

from __future__ import annotations

import datetime as dt

import pytest

from pai_common.errors import FailedPrecondition, InvalidArgument
from pai_scheduler.domain import names
from pai_scheduler.domain.records import Gpu, check_gpu_indices
from pai_scheduler.domain.stats import DecisionStats, oldest_enqueue, quantile
from pai_scheduler.domain.workload import State, check_pod_sets

from .builders import NOW, wl


def test_names_split_into_their_ids() -> None:
    assert names.group_id("resourceGroups/gpu") == names.group_id("gpu") == "gpu"
    assert names.node_parts("resourceGroups/gpu/nodes/n0") == ("gpu", "n0")
    assert names.workload_parts("workspaces/team/workloads/w") == ("team", "w")
    with pytest.raises(InvalidArgument) as err:
        names.node_parts("resourceGroups/gpu/quotas/q")
    assert err.value.violations[0].field == "name"
    assert err.value.violations[0].description == "must be resourceGroups/{group}/nodes/{node}"
    with pytest.raises(InvalidArgument):
        names.workload_parts("workspaces/team")


def test_pod_sets_have_unique_names_and_ask_for_cards_or_a_share() -> None:
    check_pod_sets([("a", 2, 0), ("b", 1, 500)])
    with pytest.raises(InvalidArgument) as err:
        check_pod_sets([("a", 0, 0), ("a", 0, 0)])
    assert (err.value.reason, err.value.violations[0].field) == ("INVALID_POD_SET", "workload.pod_sets")
    with pytest.raises(InvalidArgument) as err:
        check_pod_sets([("a", 0, 0), ("b", 2, 500)])
    assert err.value.violations[0].field == "workload.pod_sets[1]"


def test_gpu_indices_are_0_to_n_minus_1_each_once() -> None:
    check_gpu_indices([Gpu(1, "A100"), Gpu(0, "A100")])
    for bad in ([Gpu(1, "A100")], [Gpu(0, "A100"), Gpu(0, "A100")]):
        with pytest.raises(InvalidArgument) as err:
            check_gpu_indices(bad)
        assert (err.value.reason, err.value.violations[0].field) == ("INVALID_NODE_GPUS", "node.gpus")


def test_an_illegal_transition_is_a_failed_precondition_naming_the_state() -> None:
    w = wl("w")
    assert w.transition(State.ADMITTED) == State.PENDING
    w.transition(State.FINISHED)
    with pytest.raises(FailedPrecondition) as err:
        w.transition(State.PENDING)
    assert err.value.reason == "ILLEGAL_STATE_TRANSITION"
    assert err.value.metadata == {"workload": w.name, "state": "FINISHED"}


def test_quantiles_and_the_decision_summary() -> None:
    assert quantile([], 0.5) == 0.0 and quantile([3.0], 0.99) == 3.0
    assert quantile([float(i) for i in range(1, 102)], 0.5) == 51.0
    stats = DecisionStats(admitted_total=3, attempts_total=4, last_cycle=NOW)
    stats.latencies.extend([0.1, 0.3])
    stats.admit_times.extend([10.0, 100.0, 150.0])
    summary = stats.summary(monotonic_now=155.0)
    assert summary.admissions_per_second == 2 / 60  # the one at 10 s is over a minute old
    assert summary.decision_latency_p50 == pytest.approx(0.2) and summary.admission_wait_p50 == 0.0
    assert (summary.admitted_total, summary.attempts_total, summary.last_cycle) == (3, 4, NOW)


def test_the_oldest_enqueue_time() -> None:
    a, b, never = wl("a"), wl("b"), wl("never")
    a.enqueue_time, b.enqueue_time = NOW, NOW - dt.timedelta(seconds=5)
    assert oldest_enqueue([a, b, never]) == NOW - dt.timedelta(seconds=5)
    assert oldest_enqueue([never]) is None
