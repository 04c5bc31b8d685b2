"""lineage's rules without I/O: version ids, states, aliases, update masks, edges and walks."""

from __future__ import annotations

import pytest

from pai_common.errors import DomainError
from pai_lineage.domain import graph, versions
from pai_lineage.domain.graph import Edge


def reason(call: object, *args: object) -> str:
    with pytest.raises(DomainError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.reason


def test_version_ids_count_past_the_highest_number() -> None:
    assert versions.next_version_id([]) == "1"
    assert versions.next_version_id(["1", "2024-06", "9", "10", "v2-int8"]) == "11"
    assert versions.next_version_id(["june"]) == "1"


def test_states_move_only_between_active_and_archived() -> None:
    assert versions.transition("ACTIVE", "ARCHIVED", "x") == "ACTIVE"
    assert versions.transition("ARCHIVED", "ACTIVE", "x") == "ARCHIVED"
    assert reason(versions.transition, "ARCHIVED", "ARCHIVED", "x") == "ILLEGAL_STATE_TRANSITION"
    assert reason(versions.transition, "ACTIVE", "ACTIVE", "x") == "ILLEGAL_STATE_TRANSITION"


def test_aliases() -> None:
    versions.check_alias("production")
    assert reason(versions.check_alias, "latest") == "ALIAS_RESERVED"
    assert versions.aliases_of({"prod": "3", "canary": "4", "champion": "3"}, "3") == ["champion", "prod"]


def test_version_masks() -> None:
    known = ["name", "uri", "display_name", "description", "labels", "checksum"]
    assert versions.check_version_mask([], known, "v") == {"display_name", "description", "labels"}
    assert versions.check_version_mask(["labels"], known, "v") == {"labels"}
    assert reason(versions.check_version_mask, ["uri"], known, "v") == "VERSION_IMMUTABLE"
    assert reason(versions.check_version_mask, ["colour"], known, "v") == "INVALID_UPDATE_MASK"


def test_edge_ids_are_stable_and_distinct() -> None:
    a = graph.edge_id("s", "CONSUMED_BY", "t")
    assert a == graph.edge_id("s", "CONSUMED_BY", "t")
    assert a != graph.edge_id("t", "CONSUMED_BY", "s") != graph.edge_id("s", "PRODUCED", "t")
    assert len(a) <= 63 and a[0].isalpha() and a.isalnum()


W = "workspaces/w"


@pytest.mark.parametrize(
    ("source", "source_kind", "type_", "target", "target_kind", "expected"),
    [
        (f"{W}/datasets/d/versions/1", "DATASET_VERSION", "CONSUMED_BY", f"{W}/jobs/j", "JOB", None),
        (f"{W}/jobs/j", "JOB", "PRODUCED", f"{W}/models/m/versions/1", "MODEL_VERSION", None),
        (
            f"{W}/models/m/versions/1",
            "MODEL_VERSION",
            "DEPLOYED_AS",
            f"{W}/services/s/revisions/r1",
            "SERVICE_REVISION",
            None,
        ),
        ("s3://b/x", "EXTERNAL", "DERIVED_INTO", f"{W}/datasets/d/versions/1", "DATASET_VERSION", None),
        ("airflow://h/dag/t", "EXTERNAL", "PRODUCED", "s3://b/y", "EXTERNAL", None),
        (f"{W}/jobs/j", "JOB", "CONSUMED_BY", f"{W}/jobs/k", "JOB", "INVALID_EDGE"),
        (
            f"{W}/jobs/j",
            "JOB",
            "DEPLOYED_AS",
            f"{W}/services/s/revisions/r1",
            "SERVICE_REVISION",
            "INVALID_EDGE",
        ),
        ("s3://b/x", "EXTERNAL", "DERIVED_INTO", "s3://b/x", "EXTERNAL", "INVALID_EDGE"),
        (f"{W}/jobs/j", "DATASET_VERSION", "CONSUMED_BY", f"{W}/jobs/k", "JOB", "INVALID_EDGE"),
        ("workspaces/v/jobs/j", "JOB", "PRODUCED", "s3://b/y", "EXTERNAL", "WORKSPACE_MISMATCH"),
    ],
)
def test_edge_rules(
    source: str, source_kind: str, type_: str, target: str, target_kind: str, expected: str | None
) -> None:
    if expected is None:
        graph.check_edge(source, source_kind, type_, target, target_kind, W)
    else:
        assert reason(graph.check_edge, source, source_kind, type_, target, target_kind, W) == expected


def edges(*pairs: tuple[str, str]) -> list[Edge]:
    return [Edge(f"{s}>{t}", s, t, "X") for s, t in pairs]


def test_cycles_are_refused() -> None:
    g = edges(("a", "b"), ("b", "c"))
    graph.check_no_cycle(g, "a", "c")
    assert reason(graph.check_no_cycle, g, "c", "a") == "LINEAGE_CYCLE"
    assert reason(graph.check_no_cycle, g, "b", "b") == "LINEAGE_CYCLE"


def test_walks_go_one_way_or_both_and_stop_at_limits() -> None:
    #  d1 -> job -> m1 -> svc ;  d1 -> other-job  (the other consumer is not m1's lineage)
    g = edges(("d1", "job"), ("job", "m1"), ("m1", "svc"), ("d1", "other"))
    up = graph.walk("m1", g, graph.UPSTREAM, 5, 100)
    assert up.distances == {"m1": 0, "job": 1, "d1": 2} and not up.truncated
    assert {e.id for e in up.edges} == {"d1>job", "job>m1"}
    both = graph.walk("m1", g, graph.BOTH, 5, 100)
    assert both.distances == {"m1": 0, "job": 1, "svc": 1, "d1": 2}
    down = graph.walk("d1", g, graph.DOWNSTREAM, 5, 100)
    assert set(down.distances) == {"d1", "job", "other", "m1", "svc"}
    shallow = graph.walk("m1", g, graph.UPSTREAM, 1, 100)
    assert (shallow.distances, shallow.truncated) == ({"m1": 0, "job": 1}, True)
    exact = graph.walk("m1", g, graph.UPSTREAM, 2, 100)
    assert not exact.truncated
    few = graph.walk("d1", g, graph.DOWNSTREAM, 5, 2)
    assert len(few.distances) == 2 and few.truncated
    cyclic = graph.walk("a", edges(("a", "b"), ("b", "a")), graph.BOTH, 5, 10)
    assert cyclic.distances == {"a": 0, "b": 1}
