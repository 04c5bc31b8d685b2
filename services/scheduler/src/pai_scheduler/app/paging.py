"""Pages of in-memory lists: the token is the offset, bound to the query that made it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pai_common import pagination

T = TypeVar("T")


def page(items: Sequence[T], page_size: int, page_token: str, **query: object) -> tuple[list[T], str]:
    """One page of `items` and the token of the next ('' after the last)."""
    size = pagination.page_size(page_size)
    fp = pagination.fingerprint(**query)
    start = pagination.decode_token(page_token, fp, int) or 0
    out = list(items[start : start + size])
    token = pagination.PageToken(start + size, fp).encode() if start + size < len(items) else ""
    return out, token
