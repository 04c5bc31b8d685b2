"""Resource names (AIP-122): parse and format `collection/{id}/...` names against patterns."""

from __future__ import annotations

import re
from functools import cache

from pai_common.errors import bad_request

ID_PATTERN = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
_ID = re.compile(f"^{ID_PATTERN}$")


def is_valid_id(value: str) -> bool:
    """Whether `value` is an RFC-1034 label, the form of every user-chosen id."""
    return bool(_ID.match(value))


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(f"^{regex}$")


def parse(pattern: str, name: str, *, field: str = "name") -> dict[str, str]:
    """The variables of `name` under `pattern` (`workspaces/{workspace}`), or INVALID_ARGUMENT."""
    match = _compile(pattern).match(name)
    if match is None:
        message = f"{name!r} is not a resource name of the form {pattern}"
        raise bad_request(field, message)
    return match.groupdict()


def matches(pattern: str, name: str) -> bool:
    """Whether `name` has the form of `pattern`."""
    return _compile(pattern).match(name) is not None


def workspace_of(name: str) -> str | None:
    """The `workspaces/{w}` prefix of a resource name, if it has one."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[0] == "workspaces" and parts[1]:
        return f"workspaces/{parts[1]}"
    return None
