"""Page sizes and opaque page tokens shared by every List method."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pai_common.errors import InvalidArgument, bad_request

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default, too large is coerced to the maximum, negative is an error."""
    if requested < 0:
        raise bad_request(
            "page_size", "page_size must not be negative", description="must be greater than or equal to 0"
        )
    if requested == 0:
        return default
    return min(requested, maximum)


@dataclass(frozen=True)
class PageToken:
    """Where the next page starts (the last key returned) for one query (its fingerprint)."""

    after: Any
    query: str

    def encode(self) -> str:
        """An opaque, URL-safe string."""
        raw = json.dumps({"a": self.after, "q": self.query}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fingerprint(**query: Any) -> str:
    """A short digest of the query parameters a token is bound to."""
    raw = json.dumps(query, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def decode_token(token: str, query: str, key_type: type = str) -> Any:
    """The key to continue after, or None for the first page; a foreign or broken token is an error.

    Tokens are not secret (a client could forge one), so the key's type is checked too.
    """
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, bound = data["a"], data["q"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad_token("page_token is malformed") from exc
    if bound != query:
        raise _bad_token("page_token belongs to a different query")
    if not isinstance(after, key_type) or isinstance(after, bool):
        raise _bad_token("page_token is malformed")
    return after


def _bad_token(message: str) -> InvalidArgument:
    return bad_request("page_token", message, "INVALID_PAGE_TOKEN")


def page(items: Sequence[T], size: int, token: str, **query: object) -> tuple[list[T], str]:
    """One page of an in-memory list (`size` as the request gave it) and the next page's token ('' after
    the last): the token is the offset, bound to the query that made it."""
    size = page_size(size)
    fp = fingerprint(**query)
    start = decode_token(token, fp, int) or 0
    out = list(items[start : start + size])
    return out, PageToken(start + size, fp).encode() if start + size < len(items) else ""
