"""List filters and pages: the parts that need no server."""

from __future__ import annotations

import pytest

from pai_common.errors import InvalidArgument
from pai_lineage.api import listing

FIELDS = ("display_name", "create_time", "state")
MAPS = ("labels", "metrics")


def match(expression: str, **values: str) -> bool:
    return listing.matches(values, listing.parse(expression, FIELDS, MAPS))


def test_quoted_values_may_hold_and_and_or() -> None:
    assert match('display_name = "Q AND A"', display_name="Q AND A")
    assert match('display_name = "x OR y" OR display_name = "z"', display_name="z")
    assert not match('display_name = "Q AND A" AND state = ACTIVE', display_name="Q AND A", state="ARCHIVED")


def test_only_create_time_is_a_time_and_only_metrics_are_numbers() -> None:
    # a label or metric whose key ends in _time is an ordinary label or metric
    assert match('labels.end_time = "soon"', **{"labels.end_time": "soon"})
    assert match("metrics.train_time > 5", **{"metrics.train_time": "7.5"})
    assert not match('labels.v = "01"', **{"labels.v": "1"})  # text, not numbers
    assert match("metrics.acc >= 0.9", **{"metrics.acc": "0.91"})
    # a time without an offset is UTC, not a comparison that silently fails
    assert match('create_time > "2026-01-01T00:00:00"', create_time="2026-06-01T00:00:00+00:00")
    assert not match('create_time > "2026-01-01"', create_time="2025-12-31T23:00:00+00:00")
    with pytest.raises(InvalidArgument) as err:
        listing.parse('create_time > "yesterday"', FIELDS, MAPS)
    assert err.value.reason == "INVALID_FILTER"


def test_pages_follow_pythons_order_and_tokens_belong_to_one_method() -> None:
    items = ["ab", "a-c", "b"]  # as a PostgreSQL collation that ignores hyphens returns them

    def walk(method: str) -> list[str]:
        seen, token = [], ""
        while True:
            chosen, token = listing.page(
                items, lambda i: [i], page_size=1, page_token=token, method=method, parent="p"
            )
            seen += chosen
            if not token:
                return seen

    assert walk("ListDatasets") == ["a-c", "ab", "b"]
    _, token = listing.page(
        items, lambda i: [i], page_size=1, page_token="", method="ListDatasets", parent="p"
    )
    with pytest.raises(InvalidArgument) as err:
        listing.page(items, lambda i: [i], page_size=1, page_token=token, method="ListModels", parent="p")
    assert err.value.reason == "INVALID_PAGE_TOKEN"
