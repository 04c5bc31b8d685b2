"""Unit tests of list filters and workload orders: parsing, matching nodes, quotas and workloads."""

from __future__ import annotations

import datetime as dt

import pytest

from pai_common.errors import InvalidArgument
from pai_scheduler.domain import filters
from pai_scheduler.domain.quota import QuotaSpec
from pai_scheduler.domain.records import Gpu, NodeRecord, QuotaRecord
from pai_scheduler.domain.workload import State

from .builders import RG, wl


def test_a_blank_filter_has_no_terms_and_or_groups_collect_values() -> None:
    assert filters.parse("  ", filters.NODE_FIELDS) == []
    terms = filters.parse(
        'state = READY AND (gpu_model = A100 OR gpu_model = "H100") AND labels.zone=b', filters.NODE_FIELDS
    )
    assert terms == [("state", {"READY"}), ("gpu_model", {"A100", "H100"}), ("labels.zone", {"b"})]
    assert filters.values_of(terms, "gpu_model") == {"A100", "H100"}
    assert filters.values_of(terms, "source") is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("state READY", "cannot parse 'state READY'"),
        ("colour = red", "unknown field 'colour'"),
        ("state = READY OR source = LOCAL", "an OR group must compare one field"),
    ],
)
def test_a_bad_filter_is_invalid_filter_on_the_filter_field(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        filters.parse(expression, filters.NODE_FIELDS)
    assert err.value.reason == "INVALID_FILTER" and message in err.value.message
    assert [v.field for v in err.value.violations] == ["filter"]


def test_nodes_match_on_state_cordon_models_and_labels() -> None:
    ready = NodeRecord("rg", "a", "", "SIMULATED", 1000, 0, [Gpu(0, "A100")], {"zone": "b"})
    cordoned = NodeRecord("rg", "b", "", "LOCAL", 1000, 0, [Gpu(0, "T4")], cordoned=True)

    def matching(expression: str) -> list[str]:
        terms = filters.parse(expression, filters.NODE_FIELDS)
        return [n.id for n in (ready, cordoned) if filters.node_matches(n, terms)]

    assert matching("schedulable = true") == ["a"]
    assert matching("cordoned = true AND state = READY") == ["b"]
    assert matching("gpu_model = T4 OR gpu_model = H100") == ["b"]
    assert matching("source = SIMULATED") == ["a"]
    assert matching("labels.zone = b") == ["a"]
    assert matching('labels.zone = ""') == []  # a node without the label never matches


def test_quotas_match_on_workspace_parent_and_state() -> None:
    held = QuotaRecord(QuotaSpec(f"{RG}/quotas/a", workspace="workspaces/a", held=True), "")
    child = QuotaRecord(QuotaSpec(f"{RG}/quotas/b", parent=f"{RG}/quotas/a"), "")

    def matching(expression: str) -> list[str]:
        terms = filters.parse(expression, filters.QUOTA_FIELDS)
        return [q.name.rsplit("/", 1)[1] for q in (held, child) if filters.quota_matches(q, terms)]

    assert matching("state = HELD") == ["a"]
    assert matching("state = ACTIVE") == ["b"]
    assert matching(f"parent = {RG}/quotas/a") == ["b"]
    assert matching("workspace = workspaces/a") == ["a"]


def test_workloads_match_and_only_pending_ones_have_a_reason_code() -> None:
    pending = wl("p", spot=True)
    admitted = wl("a")
    admitted.state = State.ADMITTED
    admitted.labels = {"team": "x"}

    def matching(expression: str) -> list[str]:
        terms = filters.parse(expression, filters.WORKLOAD_FIELDS)
        return [w.name.rsplit("/", 1)[1] for w in (pending, admitted) if filters.workload_matches(w, terms)]

    assert matching("state = PENDING") == ["p"]
    assert matching("preemptible = true") == ["p"]
    assert matching("pending_reason_code = NOT_EVALUATED") == ["p"]
    assert matching('labels.team = ""') == ["p"]  # a missing label is the empty string
    assert matching("labels.team = x AND state = ADMITTED") == ["a"]


def test_workload_orders() -> None:
    assert filters.workload_order("") == "create_time desc"
    with pytest.raises(InvalidArgument) as err:
        filters.workload_order("priority")
    assert err.value.reason == "INVALID_ORDER_BY"
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    old, new, low = wl("old"), wl("new"), wl("low", priority=-1)
    old.create_time, new.create_time, low.create_time = t0, t0 + dt.timedelta(hours=1), t0
    new.priority = 5
    items = [old, low, new]
    filters.sort_workloads(items, "create_time desc")
    assert [w.name.rsplit("/", 1)[1] for w in items] == ["new", "old", "low"]  # ties by name, reversed
    filters.sort_workloads(items, "queue")
    assert [w.name.rsplit("/", 1)[1] for w in items] == ["new", "old", "low"]  # priority, then seq
    new.state = State.ADMITTED
    filters.sort_workloads(items, "queue")
    assert [w.name.rsplit("/", 1)[1] for w in items] == ["old", "low", "new"]  # pending ones first
