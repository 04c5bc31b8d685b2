"""Domain errors: raised by use cases, turned into `google.rpc.Status` by one interceptor.

Each error carries a machine-readable `reason` (the service's ErrorReason enum value name)
and metadata for the `ErrorInfo` detail; validation errors also carry field violations for
the `BadRequest` detail. Servicers never call `context.abort` themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field: its path and what is wrong with it."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every expected error; `code` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

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

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    """The named resource does not exist (and the caller may know that)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    """A resource with that name exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The resource is in a state that forbids the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrency conflict (etag mismatch); re-read and retry."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(DomainError):
    """No valid credential was presented."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    """The caller may not do this; never says whether the resource exists."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(DomainError):
    """A limit was reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    """A dependency is down; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE
