"""Helpers shared by auth's use cases."""

from __future__ import annotations

import uuid

from pai_auth import mapping
from pai_common import etags
from pai_common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    bad_request,
)


def new_uid() -> str:
    """A fresh server-assigned unique id."""
    return str(uuid.uuid4())


def check_etag(given: str, current: object) -> None:
    """An empty etag skips the check; a stale one is ABORTED."""
    etags.check_etag(given, mapping.etag(current), resource=str(getattr(current, "name", "")))


def not_found(reason: str, name: str) -> NotFound:
    return NotFound(reason, f"{name} not found", resource=name)


def invalid(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    """auth's bad requests name the field in their message (`ttl_seconds: must be positive`)."""
    return bad_request(field, f"{field}: {message}", reason, description=message)


def denied(message: str) -> PermissionDenied:
    return PermissionDenied("PERMISSION_DENIED", message)
