"""List filters (an AIP-160 subset) and key-based pages over an ordered list of resources."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pai_common import pagination
from pai_common.errors import bad_request

T = TypeVar("T")
Term = tuple[str, str, str]  # field, operator, value
_TERM = re.compile(
    r'^\s*([a-z_]+(?:\.[A-Za-z0-9_./-]+)?)\s*(<=|>=|!=|=|<|>)\s*("([^"]*)"|[A-Za-z0-9_.:+/-]+)\s*$'
)


TIME_FIELDS = ("create_time",)  # the only timestamps the List filters name
NUMERIC_PREFIXES = ("metrics.",)  # compared as numbers; everything else as text


def _outside_quotes(word: str) -> re.Pattern[str]:
    """` WORD ` with an even number of quotes after it, i.e. not inside a quoted value."""
    return re.compile(rf'\s+{word}\s+(?=(?:[^"]*"[^"]*")*[^"]*$)')


_AND, _OR = _outside_quotes("AND"), _outside_quotes("OR")


def _time(text: str) -> dt.datetime:
    """An RFC 3339 time; one without an offset is taken as UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def parse(expression: str, fields: Sequence[str], maps: Sequence[str] = ()) -> list[list[Term]]:
    """`a = x AND (b = y OR b = z) AND create_time > "2026-01-01T00:00:00Z"`: AND of OR groups, each OR
    group comparing one field; `maps` are prefixes like `labels` allowing `labels.<key>`."""
    if not expression.strip():
        return []
    groups: list[list[Term]] = []
    for part in _AND.split(expression.strip()):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1]
        group: list[Term] = []
        for alt in _OR.split(part):
            m = _TERM.match(alt)
            if m is None:
                raise bad_request(
                    "filter",
                    f"cannot parse {alt.strip()!r}; use field <op> value joined by AND/OR",
                    "INVALID_FILTER",
                )
            key, op = m.group(1), m.group(2)
            value = m.group(4) if m.group(4) is not None else m.group(3)
            if key not in fields and key.split(".", 1)[0] not in maps:
                known = ", ".join([*fields, *(f"{p}.<key>" for p in maps)])
                raise bad_request("filter", f"unknown field {key!r}; known: {known}", "INVALID_FILTER")
            if group and group[0][0] != key:
                raise bad_request("filter", "an OR group must compare one field", "INVALID_FILTER")
            if key in TIME_FIELDS:
                try:
                    _time(value)
                except ValueError as exc:
                    raise bad_request(
                        "filter", f"{key} needs an RFC 3339 time, not {value!r}", "INVALID_FILTER"
                    ) from exc
            group.append((key, op, value))
        groups.append(group)
    return groups


def _compare(have: str | None, op: str, want: str, key: str) -> bool:
    if have is None:
        return op == "!="
    left: object = have
    right: object = want
    if key in TIME_FIELDS:
        left, right = _time(have), _time(want)
    elif key.startswith(NUMERIC_PREFIXES):
        with contextlib.suppress(ValueError):
            left, right = float(have), float(want)
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    try:
        ordered: dict[str, bool] = {
            "<": left < right,  # type: ignore[operator]
            "<=": left <= right,  # type: ignore[operator]
            ">": left > right,  # type: ignore[operator]
            ">=": left >= right,  # type: ignore[operator]
        }
    except TypeError:
        return False
    return ordered[op]


def matches(values: Mapping[str, str], groups: list[list[Term]]) -> bool:
    return all(any(_compare(values.get(k), op, v, k) for k, op, v in group) for group in groups)


def page(
    items: list[T],
    key: Callable[[T], list[str]],
    *,
    page_size: int,
    page_token: str,
    descending: bool = False,
    **query: object,
) -> tuple[list[T], str]:
    """The page after the token's key in `items` (ordered by `key`, ascending or descending), and the
    next token. The key, not an offset, marks the place, so changes between pages shift nothing.
    `query` (the method, parent and filter) is bound into the token: it is refused by any other."""
    size = pagination.page_size(page_size)
    fingerprint = pagination.fingerprint(**query)
    # the place is found with Python's comparison, so the order must be Python's too (a database
    # collation may order `a-c` and `ab` differently)
    items = sorted(items, key=key, reverse=descending)
    after = pagination.decode_token(page_token, fingerprint, list)
    start = 0
    if after is not None:
        if not all(isinstance(a, str) for a in after):
            raise bad_request("page_token", "page_token is malformed", "INVALID_PAGE_TOKEN")
        start = sum(1 for i in items if (key(i) >= after if descending else key(i) <= after))
    chosen = items[start : start + size]
    token = ""
    if start + size < len(items) and chosen:
        token = pagination.PageToken(key(chosen[-1]), fingerprint).encode()
    return chosen, token


def time_key(value: dt.datetime) -> str:
    """A timestamp as a string that sorts like the time."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ListRequest(Protocol):
    parent: str
    filter: str
    page_size: int
    page_token: str


def select(
    items: Sequence[Any],
    values: Callable[[Any], Mapping[str, str]],
    request: ListRequest,
    *,
    method: str,
    fields: Sequence[str],
    maps: Sequence[str] = (),
    newest_first: bool = False,
) -> tuple[list[Any], str]:
    """One List call over `items` (messages with `name` and `create_time`): the filter over `fields`,
    `create_time` and `values(item)` (plus `labels.<key>` when `labels` is in `maps`), then the page,
    by id or newest first."""
    terms = parse(request.filter, (*fields, "create_time"), maps)

    def all_values(item: Any) -> dict[str, str]:
        out = {"create_time": _stamp_key(item.create_time), **values(item)}
        if "labels" in maps:
            out.update({f"labels.{k}": v for k, v in item.labels.items()})
        return out

    def by_id(item: Any) -> list[str]:
        return [str(item.name).rsplit("/", 1)[1]]

    def newest(item: Any) -> list[str]:
        return [_stamp_key(item.create_time), *by_id(item)]

    kept = [i for i in items if matches(all_values(i), terms)]
    return page(
        kept, newest if newest_first else by_id, page_size=request.page_size, page_token=request.page_token,
        descending=newest_first, method=method, parent=request.parent, filter=request.filter,
    )  # fmt: skip


def _stamp_key(t: Any) -> str:
    return time_key(t.ToDatetime(dt.UTC))
