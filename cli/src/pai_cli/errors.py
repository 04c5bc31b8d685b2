"""What the CLI tells a person when something goes wrong: one clear message, never a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Usage errors exit with 2, as argparse does; everything else that fails exits with 1.
EXIT_FAILURE = 1
EXIT_USAGE = 2

_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "the API key is missing, unknown, revoked or expired: run `pai login`",
    grpc.StatusCode.PERMISSION_DENIED: "ask a workspace admin (or a platform admin) for a role that allows it",
}


class CliError(Exception):
    """An expected failure; `str(error)` is the whole message, lines after the first indented."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CliError):
    """The command line is wrong in a way argparse cannot see (e.g. two exclusive sources)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class ApiError(CliError):
    """A failed RPC, with the details of its `google.rpc.Status`."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        endpoint: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
        request_id: str = "",
    ) -> None:
        self.code = code
        self.message = message
        self.endpoint = endpoint
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.request_id = request_id
        super().__init__(self.render())

    @property
    def unreachable(self) -> bool:
        """The server was not there to answer (no status detail came back from a pai service)."""
        return self.code == grpc.StatusCode.UNAVAILABLE and not self.reason

    def render(self) -> str:
        """`<CODE>: <message>` and one indented line per detail."""
        if self.unreachable:
            return f"cannot reach pai at {self.endpoint}: is `make up` running?\n  ({self.message})"
        if self.code == grpc.StatusCode.DEADLINE_EXCEEDED and not self.reason:
            return f"pai at {self.endpoint} did not answer in time: is it overloaded or stuck?"
        lines = [f"{self.code.name}: {self.message}"]
        if self.reason:
            extra = "".join(f" {k}={v}" for k, v in sorted(self.metadata.items()))
            lines.append(f"  reason: {self.reason}" + (f" ({self.domain})" if self.domain else "") + extra)
        lines.extend(f"  - {name}: {description}" for name, description in self.violations)
        if self.request_id:
            lines.append(f"  request id: {self.request_id}")
        if hint := _HINTS.get(self.code):
            lines.append(f"  hint: {hint}")
        return "\n".join(lines)


def from_rpc_error(error: grpc.RpcError, endpoint: str) -> ApiError:
    """Read code, message and the ErrorInfo / BadRequest / RequestInfo details of a failed call."""
    code: grpc.StatusCode = (
        error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    )
    message: str = (error.details() if callable(getattr(error, "details", None)) else "") or ""
    reason = domain = request_id = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # trailing status disagrees with the call's: trust the call
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info_request = error_details_pb2.RequestInfo()
            detail.Unpack(info_request)
            request_id = info_request.request_id
    return ApiError(
        code=code,
        message=message,
        endpoint=endpoint,
        reason=reason,
        domain=domain,
        metadata=metadata,
        violations=tuple(violations),
        request_id=request_id,
    )
