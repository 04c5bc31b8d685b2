"""Domain errors: raised by domain rules and use cases, turned into `google.rpc.Status` at the edge.

Plain Python (no gRPC, no protobuf), so that a service's `domain/` can raise them. Each error
carries a canonical `Code` (the `google.rpc.Code` numbers; the one server interceptor maps it to the
gRPC status, ext_authz to HTTP), a machine-readable `reason` (the service's ErrorReason enum value
name) and metadata for the `ErrorInfo` detail; validation errors also carry field violations for
the `BadRequest` detail. Servicers never call `context.abort` themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Code(enum.IntEnum):
    """The canonical error codes (`google.rpc.Code`), by the same names and numbers as gRPC's."""

    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field: its path and what is wrong with it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every expected error; `code` is the status it maps to at the edge."""

    code: Code = Code.UNKNOWN

    def __init__(
        self,
        reason: str,
        message: str = "",
        *,
        violations: Sequence[FieldViolation] = (),
        **metadata: str,
    ) -> None:
        self.reason = reason
        self.message = message or reason.replace("_", " ").lower()
        self.violations = tuple(violations)
        self.metadata = {k: str(v) for k, v in metadata.items()}
        super().__init__(self.message)


class InvalidArgument(DomainError):
    """The request is malformed; nothing was changed."""

    code = Code.INVALID_ARGUMENT


class NotFound(DomainError):
    """The named resource does not exist (and the caller may know that)."""

    code = Code.NOT_FOUND


class AlreadyExists(DomainError):
    """A resource with that name exists."""

    code = Code.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The resource is in a state that forbids the operation."""

    code = Code.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrency conflict (etag mismatch); re-read and retry."""

    code = Code.ABORTED


class Unauthenticated(DomainError):
    """No valid credential was presented."""

    code = Code.UNAUTHENTICATED


class PermissionDenied(DomainError):
    """The caller may not do this; never says whether the resource exists."""

    code = Code.PERMISSION_DENIED


class ResourceExhausted(DomainError):
    """A limit was reached."""

    code = Code.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    """A dependency is down; the call may be retried."""

    code = Code.UNAVAILABLE


class Internal(DomainError):
    """Something that should not happen did; the message carries no internals, only a request id."""

    code = Code.INTERNAL


def bad_request(
    field: str, message: str, reason: str = "INVALID_ARGUMENT", *, description: str = "", **metadata: str
) -> InvalidArgument:
    """INVALID_ARGUMENT about one request field: `message` is the error's, and the violation's too
    unless a shorter `description` says what is wrong with the field."""
    violation = FieldViolation(field, description or message)
    return InvalidArgument(reason, message, violations=[violation], **metadata)
