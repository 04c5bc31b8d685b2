"""Helpers shared by auth's use cases."""

from __future__ import annotations

import uuid

from pai_auth import mapping
from pai_common.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


def new_uid() -> str:
    """A fresh server-assigned unique id."""
    return str(uuid.uuid4())


def check_etag(given: str, current: object) -> None:
    """An empty etag skips the check; a stale one is ABORTED."""
    now = mapping.etag_of(current)
    if given and given != now:
        raise Aborted(
            "ETAG_MISMATCH", "the resource changed since it was read; re-read and retry", current=now
        )


def not_found(reason: str, name: str) -> NotFound:
    return NotFound(reason, f"{name} not found", resource=name)


def invalid(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(reason, f"{field}: {message}", violations=[FieldViolation(field, message)])


def denied(message: str) -> PermissionDenied:
    return PermissionDenied("PERMISSION_DENIED", message)
