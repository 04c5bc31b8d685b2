"""How a rule says no, in plain Python: the app layer turns a `Refusal` into the API's error."""

from __future__ import annotations

from collections.abc import Mapping

INVALID = "INVALID_ARGUMENT"
PRECONDITION = "FAILED_PRECONDITION"


class Refusal(Exception):
    """A request a rule refuses: `status` (INVALID or PRECONDITION), the ErrorInfo `reason`, a sentence,
    the request field at fault (if one is), and metadata naming what is concerned."""

    def __init__(
        self,
        status: str,
        reason: str,
        message: str,
        field: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.field = status, reason, message, field
        self.metadata = dict(metadata or {})
